package group

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
)

// det is a deterministic stand-in for a random source, so that keys,
// signatures and the committed fuzz seeds are the same on every run.
func det(seed string) io.Reader { return mrand.NewChaCha8(sha256.Sum256([]byte(seed))) }

// keyFor is user's identity key: the same on every run.
func keyFor(user string) curve.KeyPair {
	kp, err := curve.GenerateKeyPair(det("identity " + user))
	if err != nil {
		panic(err)
	}
	return kp
}

func member(user string, r Role) Member { return Member{User: user, Key: keyFor(user).Public, Role: r} }

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// world is a group as every member's client sees it: a state and its log.
type world struct {
	t   testing.TB
	st  *State
	log [][]byte
}

func newWorld(t testing.TB, owner string, settings Settings, members ...Member) *world {
	t.Helper()
	id, err := NewID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, st, err := Create(id, owner, keyFor(owner), "Test group", members, settings, t0, rand.Reader)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return &world{t: t, st: st, log: [][]byte{b}}
}

// do has author propose a, as the server would receive it, and applies it.
func (w *world) do(author string, a Action) *Change {
	w.t.Helper()
	b, err := w.st.Propose(author, keyFor(author), a, t0.Add(time.Duration(len(w.log))*time.Minute), rand.Reader)
	if err != nil {
		w.t.Fatalf("%s proposing %#v: %v", author, a, err)
	}
	return w.mustApply(b)
}

// join has user join with link.
func (w *world) join(user string, link LinkSecret) *Change {
	w.t.Helper()
	b, err := w.st.Join(user, keyFor(user), link, t0, rand.Reader)
	if err != nil {
		w.t.Fatalf("%s joining: %v", user, err)
	}
	return w.mustApply(b)
}

func (w *world) mustApply(b []byte) *Change {
	w.t.Helper()
	next, c, err := w.st.Apply(b)
	if err != nil {
		w.t.Fatalf("Apply: %v", err)
	}
	checkTransition(w.t, w.st, next, c)
	w.st, w.log = next, append(w.log, b)
	return c
}

// signed is a change by author, signed with key, on the current head,
// made without Propose's own check: what a buggy or malicious client, or
// the server, could send.
func (w *world) signed(author string, key curve.KeyPair, a Action) []byte {
	w.t.Helper()
	c := &Change{GroupID: w.st.ID, Seq: w.st.Seq + 1, Prev: w.st.Head, Author: author, Time: t0, Action: a}
	b, err := sign(c, key.Private, nil, rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// refuse checks that author may not do a: Propose refuses, and the same
// change signed anyway is refused by Apply, with want, leaving the state
// as it was. It returns Apply's error.
func (w *world) refuse(author string, a Action, want error) error {
	w.t.Helper()
	if _, err := w.st.Propose(author, keyFor(author), a, t0, rand.Reader); !errors.Is(err, want) {
		w.t.Errorf("%s proposing %#v: %v, want %v", author, a, err, want)
	}
	return w.refuseBytes(w.signed(author, keyFor(author), a), want)
}

// refuseBytes checks that Apply refuses b with want and changes nothing.
func (w *world) refuseBytes(b []byte, want error) error {
	w.t.Helper()
	before := marshal(w.t, w.st)
	next, c, err := w.st.Apply(b)
	if !errors.Is(err, want) || next != nil || c != nil {
		w.t.Errorf("Apply = %v, %v, %v; want nil, nil, %v", next, c, err, want)
	}
	if !bytes.Equal(before, marshal(w.t, w.st)) {
		w.t.Error("a refused change altered the state")
	}
	return err
}

func marshal(t testing.TB, s *State) []byte {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return b
}

// checkTransition states the rules table as outcomes, independently of
// how permit reasons about actions: whatever the change, everything that
// differs between old and next must be something its author may do. It
// runs after every change the tests and fuzzers apply.
func checkTransition(t testing.TB, old, next *State, c *Change) {
	t.Helper()
	var back State
	if err := back.UnmarshalBinary(marshal(t, next)); err != nil {
		t.Fatalf("%s's change left an invalid state: %v", c.Author, err)
	}
	if next.ID != old.ID || next.Seq != old.Seq+1 || c.Prev != old.Head || next.Head == old.Head {
		t.Fatalf("change %d accepted on state %d (head %x, prev %x)", c.Seq, old.Seq, old.Head, c.Prev)
	}
	author, wasMember := old.Members[c.Author]
	_, joining := c.Action.(Join)
	if joining == wasMember {
		t.Fatalf("%s acted (a %T) while member=%v", c.Author, c.Action, wasMember)
	}
	admin := author.Role >= RoleAdmin
	outranks := func(m Member) bool { return admin && author.Role > m.Role }
	byLink := joining && old.LinkKey != nil && len(old.Members) > 0
	for u, m := range old.Members {
		n, still := next.Members[u]
		switch {
		case !still && u != c.Author && !outranks(m):
			t.Fatalf("%s (%s) removed %s (%s)", c.Author, author.Role, u, m.Role)
		case !still && m.Role == RoleOwner && len(next.Members) > 0:
			t.Fatalf("the owner %s left %d members behind", u, len(next.Members))
		case still && n.Key != m.Key && u != c.Author && !outranks(m):
			t.Fatalf("%s (%s) changed the key of %s (%s)", c.Author, author.Role, u, m.Role)
		case still && n.Role != m.Role && (n.Role == RoleOwner || m.Role == RoleOwner) && author.Role != RoleOwner:
			t.Fatalf("%s (%s) moved ownership (%s: %s → %s)", c.Author, author.Role, u, m.Role, n.Role)
		case still && n.Role > m.Role && !admin:
			t.Fatalf("%s (%s) promoted %s", c.Author, author.Role, u)
		case still && n.Role < m.Role && author.Role != RoleOwner:
			t.Fatalf("%s (%s) demoted %s", c.Author, author.Role, u)
		}
	}
	for u, n := range next.Members {
		if _, ok := old.Members[u]; ok {
			continue
		}
		if !admin && !(byLink && u == c.Author && !old.LinkApproval) {
			t.Fatalf("%s (%s) brought in %s", c.Author, author.Role, u)
		}
		if n.Role != RoleMember {
			t.Fatalf("%s came in as %s", u, n.Role)
		}
	}
	if (next.Name != old.Name || next.Description != old.Description || !bytes.Equal(next.Avatar, old.Avatar)) &&
		(!wasMember || old.Settings.AdminsOnlyEditInfo && !admin) {
		t.Fatalf("%s (%s) changed the info", c.Author, author.Role)
	}
	if (next.Settings != old.Settings || !sameKey(next.LinkKey, old.LinkKey) || next.LinkApproval != old.LinkApproval) && !admin {
		t.Fatalf("%s (%s) changed the settings or link", c.Author, author.Role)
	}
	for u, r := range next.Requests {
		if o, ok := old.Requests[u]; ok && o != r || !ok && !(byLink && u == c.Author && old.LinkApproval) {
			t.Fatalf("%s (%s) made or altered %s's request", c.Author, author.Role, u)
		}
	}
	for u := range old.Requests {
		if _, ok := next.Requests[u]; !ok && !admin && !(byLink && u == c.Author) {
			t.Fatalf("%s (%s) dropped %s's request", c.Author, author.Role, u)
		}
	}
}
