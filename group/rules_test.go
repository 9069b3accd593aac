package group

import (
	"crypto/rand"
	"errors"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
)

// Every action by every kind of author on every kind of target, on both
// fixture states, properly signed: whatever Apply accepts must obey the
// rules as checkTransition states them, and whatever it refuses it
// refuses with an error callers can branch on. A rule dropped from permit
// shows up here as a forbidden change accepted.
func TestEveryChangeByEveryoneObeysTheRules(t *testing.T) {
	fx := newFixture(t)
	users := []string{"alice", "bob", "carol", "dan", "pat", "quinn", "mallory"}
	targets := append(users, "erin")
	other, otherPub, err := NewLink(fx.states[0].ID, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	accepted, refused := 0, 0
	for which, st := range fx.states {
		flip := !st.LinkApproval
		var actions []Action
		for _, u := range targets {
			actions = append(actions, Add{User: u, Key: keyFor(u).Public}, Add{User: u, Key: keyFor(u + " new").Public},
				Remove{User: u}, SetRole{User: u, Role: RoleMember}, SetRole{User: u, Role: RoleAdmin},
				SetRole{User: u, Role: RoleOwner}, Approve{User: u}, Deny{User: u})
		}
		actions = append(actions, Leave{}, SetInfo{Name: "x"}, SetSettings{Settings: Settings{AdminsOnlySend: true}},
			SetLink{}, SetLink{Key: &otherPub, Approval: true}, SetLink{Key: st.LinkKey, Approval: flip}, Join{}, Join{Key: curve.PublicKey{1}})
		for _, author := range users {
			for _, a := range actions {
				for _, link := range []LinkSecret{fx.link, other} {
					key, action := keyFor(author), a
					var linkKey *curve.PrivateKey
					if j, ok := a.(Join); ok {
						if j.Key != (curve.PublicKey{}) { // a joiner with a key the group does not know
							key = keyFor(author + " new")
						}
						action, linkKey = Join{Key: key.Public}, &link.Key
					} else if link == other {
						continue
					}
					c := &Change{GroupID: st.ID, Seq: st.Seq + 1, Prev: st.Head, Author: author, Time: t0, Action: action}
					b, err := sign(c, key.Private, linkKey, rand.Reader)
					if err != nil {
						t.Fatal(err)
					}
					next, got, err := st.Apply(b)
					if err != nil {
						refused++
						if !errors.Is(err, ErrForbidden) && !errors.Is(err, ErrNoChange) && !errors.Is(err, ErrBadSignature) {
							t.Errorf("state %d, %s: %#v: unexpected %v", which, author, action, err)
						}
						continue
					}
					accepted++
					checkTransition(t, st, next, got)
				}
			}
		}
	}
	t.Logf("%d changes accepted, %d refused", accepted, refused)
	if accepted < 50 || refused < 500 {
		t.Fatalf("only %d changes accepted and %d refused: the test no longer reaches both sides of the rules", accepted, refused)
	}
}
