package group

import (
	"bytes"
	"crypto/rand"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
)

func newLink(t testing.TB, id [16]byte) (LinkSecret, *curve.PublicKey) {
	t.Helper()
	l, pub, err := NewLink(id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return l, &pub
}

func roles(s *State) map[string]Role {
	out := map[string]Role{}
	for u, m := range s.Members {
		out[u] = m.Role
	}
	return out
}

// The whole life of a group, each step checked against what it must do,
// and every step's outcome against the rules (checkTransition).
func TestLifecycle(t *testing.T) {
	w := newWorld(t, "alice", Settings{}, member("bob", RoleMember), member("carol", RoleMember), member("dave", RoleMember))
	if w.st.Seq != 0 || w.st.Name != "Test group" || len(w.st.Members) != 4 || w.st.Owner() != "alice" {
		t.Fatalf("created %+v", w.st)
	}

	c := w.do("alice", Add{User: "erin", Key: keyFor("erin").Public})
	if c.Author != "alice" || c.Seq != 1 || w.st.Members["erin"] != member("erin", RoleMember) {
		t.Fatalf("add: %+v, %+v", c, w.st.Members["erin"])
	}
	w.do("alice", SetRole{User: "bob", Role: RoleAdmin})
	info := SetInfo{Name: "Trip ✈", Description: "Plans\nand tickets", Avatar: []byte{1, 2, 3}}
	w.do("bob", info)
	if w.st.Name != info.Name || w.st.Description != info.Description || !bytes.Equal(w.st.Avatar, info.Avatar) {
		t.Fatalf("info: %q %q %x", w.st.Name, w.st.Description, w.st.Avatar)
	}
	settings := Settings{AdminsOnlySend: true, DisappearAfter: 8 * time.Hour}
	w.do("alice", SetSettings{Settings: settings})
	if w.st.Settings != settings || w.st.CanSend("carol") || !w.st.CanSend("bob") || !w.st.CanSend("alice") || w.st.CanSend("zed") {
		t.Fatalf("settings %+v; CanSend wrong", w.st.Settings)
	}

	// An open link: anyone holding it joins at once.
	open, openPub := newLink(t, w.st.ID)
	w.do("bob", SetLink{Key: openPub})
	if c := w.join("frank", open); c.Action != (Join{Key: keyFor("frank").Public}) || w.st.Members["frank"] != member("frank", RoleMember) {
		t.Fatalf("open join: %+v, %+v", c, w.st.Members["frank"])
	}

	// A new link that needs approval: joins wait for an admin.
	closed, closedPub := newLink(t, w.st.ID)
	w.do("bob", SetLink{Key: closedPub, Approval: true})
	w.join("gina", closed)
	w.join("hank", closed)
	if _, ok := w.st.Members["gina"]; ok || w.st.Requests["gina"] != member("gina", RoleMember) || len(w.st.Requests) != 2 {
		t.Fatalf("requests: %v", w.st.Requests)
	}
	w.do("bob", Approve{User: "gina"})
	w.do("alice", Deny{User: "hank"})
	if w.st.Members["gina"] != member("gina", RoleMember) || len(w.st.Requests) != 0 {
		t.Fatalf("after approve and deny: members %v, requests %v", roles(w.st), w.st.Requests)
	}

	w.do("bob", Remove{User: "dave"})
	w.do("carol", Leave{})
	// Ownership moves: bob becomes the owner and alice an admin, who may
	// then leave.
	w.do("alice", SetRole{User: "bob", Role: RoleOwner})
	if w.st.Owner() != "bob" || w.st.Role("alice") != RoleAdmin {
		t.Fatalf("after transfer: %v", roles(w.st))
	}
	w.do("alice", Leave{})

	want := map[string]Role{"bob": RoleOwner, "erin": RoleMember, "frank": RoleMember, "gina": RoleMember}
	if got := roles(w.st); !maps.Equal(got, want) {
		t.Fatalf("members %v, want %v", got, want)
	}
	if *w.st.LinkKey != *closedPub || !w.st.LinkApproval || w.st.Seq != uint64(len(w.log)-1) {
		t.Fatalf("final state %+v", w.st)
	}
	// Every member's client reaches the same state from the log.
	alice := keyFor("alice").Public
	got, err := Replay(w.log, &alice)
	if err != nil || !reflect.DeepEqual(got, w.st) {
		t.Fatalf("Replay = %+v, %v; want %+v", got, err, w.st)
	}
}

// admins is a group with an owner, two admins, two members, info only
// admins edit, and one pending request.
func admins(t testing.TB) (*world, LinkSecret) {
	w := newWorld(t, "alice", Settings{AdminsOnlyEditInfo: true},
		member("bob", RoleAdmin), member("bea", RoleAdmin), member("carol", RoleMember), member("dan", RoleMember))
	link, pub := newLink(t, w.st.ID)
	w.do("bob", SetLink{Key: pub, Approval: true})
	w.join("pat", link)
	return w, link
}

// Every change the rules forbid is refused with ErrForbidden, whoever
// signs it properly, and the state stays as it was.
func TestForbiddenActionsAreRefusedAndChangeNothing(t *testing.T) {
	newKey := keyFor("new phone").Public
	cases := []struct {
		name, author string
		action       Action
	}{
		{"a member adds", "carol", Add{User: "erin", Key: keyFor("erin").Public}},
		{"a member removes a member", "carol", Remove{User: "dan"}},
		{"a member promotes", "carol", SetRole{User: "dan", Role: RoleAdmin}},
		{"a member promotes themself", "carol", SetRole{User: "carol", Role: RoleAdmin}},
		{"an admin removes an admin", "bob", Remove{User: "bea"}},
		{"an admin demotes an admin", "bob", SetRole{User: "bea", Role: RoleMember}},
		{"an admin demotes themself", "bob", SetRole{User: "bob", Role: RoleMember}},
		{"an admin hands over ownership", "bob", SetRole{User: "carol", Role: RoleOwner}},
		{"an admin takes ownership", "bob", SetRole{User: "bob", Role: RoleOwner}},
		{"an admin removes the owner", "bob", Remove{User: "alice"}},
		{"a member removes the owner", "carol", Remove{User: "alice"}},
		{"an admin demotes the owner", "bob", SetRole{User: "alice", Role: RoleAdmin}},
		{"the owner demotes themself", "alice", SetRole{User: "alice", Role: RoleAdmin}},
		{"the owner removes themself", "alice", Remove{User: "alice"}},
		{"an admin removes themself", "bob", Remove{User: "bob"}},
		{"the owner leaves with members left", "alice", Leave{}},
		{"a member edits admins-only info", "carol", SetInfo{Name: "mine"}},
		{"a member changes settings", "carol", SetSettings{Settings: Settings{}}},
		{"a member turns the link off", "carol", SetLink{}},
		{"a member approves", "carol", Approve{User: "pat"}},
		{"a member denies", "carol", Deny{User: "pat"}},
		{"an admin re-keys an admin", "bob", Add{User: "bea", Key: newKey}},
		{"an admin re-keys the owner", "bob", Add{User: "alice", Key: newKey}},
		{"a member re-keys a member", "carol", Add{User: "dan", Key: newKey}},
		{"a stranger acts", "mallory", SetInfo{Name: "pwned"}},
		{"a pending requester acts", "pat", Leave{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := admins(t)
			err := w.refuse(tc.author, tc.action, ErrForbidden)
			if err == nil {
				return
			}
			if msg := err.Error(); !strings.HasPrefix(msg, ErrForbidden.Error()+": ") && !strings.HasPrefix(msg, ErrNotMember.Error()+": ") {
				t.Errorf("error %q does not say why it was refused", msg)
			}
			if r, ok := tc.action.(Remove); ok && r.User == tc.author && !strings.Contains(err.Error(), "leave the group instead") {
				t.Errorf("error %q does not say to leave instead", err)
			}
		})
	}

	t.Run("a removed member acts", func(t *testing.T) {
		w, _ := admins(t)
		w.do("bob", Remove{User: "carol"})
		err := w.refuse("carol", Leave{}, ErrNotMember)
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "carol is not a member") {
			t.Errorf("removed member: %v", err)
		}
	})
	t.Run("a removed admin acts", func(t *testing.T) {
		w, _ := admins(t)
		w.do("alice", Remove{User: "bob"})
		w.refuse("bob", Add{User: "erin", Key: keyFor("erin").Public}, ErrNotMember)
	})
}

// What the rules allow, right at the edges of the table.
func TestAllowedAtTheEdges(t *testing.T) {
	w, _ := admins(t)
	w.do("bob", SetRole{User: "carol", Role: RoleAdmin})    // an admin promotes
	w.do("alice", SetRole{User: "carol", Role: RoleMember}) // the owner demotes
	w.do("alice", Remove{User: "bea"})                      // the owner removes an admin
	w.do("bob", Leave{})                                    // an admin leaves
	w.do("alice", SetRole{User: "dan", Role: RoleOwner})    // a member becomes the owner
	if r := roles(w.st); !maps.Equal(r, map[string]Role{"alice": RoleAdmin, "carol": RoleMember, "dan": RoleOwner}) {
		t.Fatalf("roles %v", r)
	}
	w.do("carol", Leave{})
	w.do("alice", Leave{})
	w.do("dan", Leave{}) // the owner, last
	if len(w.st.Members) != 0 || w.st.Owner() != "" {
		t.Fatalf("the group has not ended: %v", roles(w.st))
	}
}

// Any member edits the info unless it is admins-only.
func TestAnyMemberEditsInfoUnlessAdminsOnly(t *testing.T) {
	w := newWorld(t, "alice", Settings{}, member("carol", RoleMember))
	w.do("carol", SetInfo{Name: "carol's"})
	w.do("alice", SetSettings{Settings: Settings{AdminsOnlyEditInfo: true}})
	w.refuse("carol", SetInfo{Name: "carol's again"}, ErrForbidden)
}

// A change that would change nothing is refused with ErrNoChange, which
// tells a proposer who lost a race that there is nothing left to do.
func TestNoOpChangesAreRefused(t *testing.T) {
	cases := []struct {
		name, author string
		action       Action
	}{
		{"adding a member with their key", "bob", Add{User: "carol", Key: keyFor("carol").Public}},
		{"the same role", "alice", SetRole{User: "bob", Role: RoleAdmin}},
		{"the same info", "bob", SetInfo{Name: "Test group"}},
		{"the same settings", "bob", SetSettings{Settings: Settings{AdminsOnlyEditInfo: true}}},
		{"approving no request", "bob", Approve{User: "carol"}},
		{"denying no request", "bob", Deny{User: "erin"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := admins(t)
			w.refuse(tc.author, tc.action, ErrNoChange)
		})
	}
	t.Run("the same link", func(t *testing.T) {
		w, _ := admins(t)
		key := *w.st.LinkKey
		w.refuse("bob", SetLink{Key: &key, Approval: true}, ErrNoChange)
	})
	t.Run("joining twice while pending", func(t *testing.T) {
		w, link := admins(t)
		b, err := w.st.Join("pat", keyFor("pat"), link, t0, rand.Reader)
		if !errors.Is(err, ErrNoChange) || b != nil {
			t.Fatalf("Join = %v", err)
		}
	})
	t.Run("joining as a member", func(t *testing.T) {
		w, link := admins(t)
		if _, err := w.st.Join("carol", keyFor("carol"), link, t0, rand.Reader); !errors.Is(err, ErrNoChange) {
			t.Fatalf("Join = %v", err)
		}
	})
	t.Run("removing a non-member", func(t *testing.T) {
		w, _ := admins(t)
		w.refuse("bob", Remove{User: "pat"}, ErrNotMember)
		w.refuse("bob", SetRole{User: "erin", Role: RoleAdmin}, ErrNotMember)
	})
}

// Someone holding the link cannot take over a member's name: a Join as a
// member with another key is refused.
func TestJoinCannotReplaceAMembersKey(t *testing.T) {
	w, link := admins(t)
	mallory := keyFor("mallory")
	b, err := w.st.Join("carol", mallory, link, t0, rand.Reader)
	if !errors.Is(err, ErrForbidden) || b != nil {
		t.Fatalf("Join as carol = %v", err)
	}
	c := &Change{GroupID: w.st.ID, Seq: w.st.Seq + 1, Prev: w.st.Head, Author: "carol", Time: t0, Action: Join{Key: mallory.Public}}
	raw, err := sign(c, mallory.Private, &link.Key, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w.refuseBytes(raw, ErrForbidden)
}

// A member's key changes only by the member (signing with the old key) or
// an admin who outranks them; afterwards only the new key signs for them.
func TestKeyUpdate(t *testing.T) {
	w, _ := admins(t)
	newCarol := keyFor("carol on a new phone")
	w.do("bob", Add{User: "carol", Key: newCarol.Public})
	if w.st.Members["carol"] != (Member{User: "carol", Key: newCarol.Public, Role: RoleMember}) {
		t.Fatalf("carol = %+v", w.st.Members["carol"])
	}
	w.refuseBytes(w.signed("carol", keyFor("carol"), Leave{}), ErrBadSignature)
	// carol re-keys herself, signing with the key she has now.
	newest := keyFor("carol on her newest phone")
	w.mustApply(w.signed("carol", newCarol, Add{User: "carol", Key: newest.Public}))
	w.refuseBytes(w.signed("carol", newCarol, Leave{}), ErrBadSignature)
	// The owner re-keys an admin, and the owner re-keys themself.
	w.do("alice", Add{User: "bea", Key: keyFor("bea 2").Public})
	w.mustApply(w.signed("alice", keyFor("alice"), Add{User: "alice", Key: keyFor("alice 2").Public}))
	w.mustApply(w.signed("alice", keyFor("alice 2"), SetInfo{Name: "still the owner"}))
	if w.st.Owner() != "alice" || w.st.Members["bea"].Key != keyFor("bea 2").Public {
		t.Fatalf("after re-keying: %+v", w.st.Members)
	}
}

// Propose makes only the changes it is for, and refuses rather than
// panics on anything else.
func TestProposeRefusesWhatItDoesNotMake(t *testing.T) {
	w, _ := admins(t)
	var nilAdd *Add
	for _, a := range []Action{nil, nilAdd, &Remove{User: "carol"}, Genesis{Key: keyFor("bob").Public}, Join{Key: keyFor("bob").Public}} {
		if b, err := w.st.Propose("bob", keyFor("bob"), a, t0, rand.Reader); !errors.Is(err, ErrMalformed) || b != nil {
			t.Errorf("Propose(%#v) = %v", a, err)
		}
	}
	if _, err := w.st.Propose("bob", keyFor("bob"), Leave{}, t0, strings.NewReader("short")); err == nil {
		t.Error("Propose without enough randomness succeeded")
	}
}
