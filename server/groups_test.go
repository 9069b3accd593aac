package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/wire"
)

// Groups, against a real server over real sockets: every check the server
// makes on GroupChange, GroupLog and GroupSend (server/groups.go), the
// fan-out, and the limits. The clients here are bare connections that sign
// changes with package group themselves, so they can also make the changes
// an honest client never would.

// gUser is a registered user whose first device has uploaded keys (its
// identity key is id).
type gUser struct {
	*servertest.User
	id curve.KeyPair
}

func newGroupUser(t *testing.T, s *servertest.Server, name string) *gUser {
	t.Helper()
	u := &gUser{User: s.Register(t, name), id: servertest.NewIdentity(t)}
	if _, err := u.SetKeys(ctx(t), servertest.KeysUpload(t, u.id, 1, 1, 0)); err != nil {
		t.Fatalf("keys of %s: %v", name, err)
	}
	return u
}

// addDevice links another device to u's account and connects it; with
// keys, it uploads them (registration id regID), as a device that group
// messages go to.
func addDevice(t *testing.T, s *servertest.Server, u *gUser, keys bool, regID uint32) *clientconn.Conn {
	t.Helper()
	key := servertest.NewKey(t)
	if _, err := s.Store.AddDevice(ctx(t), u.Name, key.Public, time.Now()); err != nil {
		t.Fatal(err)
	}
	c := s.Dial(t, key)
	if keys {
		if _, err := c.SetKeys(ctx(t), servertest.KeysUpload(t, u.id, regID, 1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func as(u *gUser, r group.Role) group.Member {
	return group.Member{User: u.Name, Key: u.id.Public, Role: r}
}

// tGroup is a group as the test knows it: its state after the last change
// the server accepted, and its log.
type tGroup struct {
	id  [16]byte
	st  *group.State
	log [][]byte
}

// createGroup creates a group owned by owner, with members, through the
// server.
func createGroup(t *testing.T, owner *gUser, settings group.Settings, members ...group.Member) *tGroup {
	t.Helper()
	id, err := group.NewID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signed, st, err := group.Create(id, owner.Name, owner.id, "Harbour", members, settings, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := owner.GroupChange(ctx(t), id, signed); err != nil || seq != 0 {
		t.Fatalf("create: seq %d, %v", seq, err)
	}
	return &tGroup{id: id, st: st, log: [][]byte{signed}}
}

// propose signs a change by author on the group's head, without sending it.
func (g *tGroup) propose(t *testing.T, author *gUser, a group.Action) []byte {
	t.Helper()
	b, err := g.st.Propose(author.Name, author.id, a, time.Now(), rand.Reader)
	if err != nil {
		t.Fatalf("propose %T by %s: %v", a, author.Name, err)
	}
	return b
}

// accepted applies a change the server accepted to the test's copy.
func (g *tGroup) accepted(t *testing.T, b []byte) {
	t.Helper()
	st, _, err := g.st.Apply(b)
	if err != nil {
		t.Fatal(err)
	}
	g.st, g.log = st, append(g.log, b)
}

// submit sends a change by u's connection and applies it once accepted.
func (g *tGroup) submit(t *testing.T, u *gUser, b []byte) {
	t.Helper()
	want := g.st.Seq + 1
	if seq, err := u.GroupChange(ctx(t), g.id, b); err != nil || seq != want {
		t.Fatalf("change by %s: seq %d, %v (want %d)", u.Name, seq, err, want)
	}
	g.accepted(t, b)
}

// do proposes and submits a change by author.
func (g *tGroup) do(t *testing.T, author *gUser, a group.Action) []byte {
	t.Helper()
	b := g.propose(t, author, a)
	g.submit(t, author, b)
	return b
}

// forge signs a change on the group's head, by author with key, whatever
// the rules say: what a client that does not follow them could send.
func forge(t *testing.T, g *tGroup, author string, key curve.PrivateKey, set func(*group.WireChange)) []byte {
	t.Helper()
	w := &group.WireChange{GroupId: g.id[:], Seq: g.st.Seq + 1, Prev: g.st.Head[:], Author: author, TimeMs: uint64(time.Now().UnixMilli())}
	set(w)
	return signWire(t, w, key)
}

func signWire(t *testing.T, w *group.WireChange, key curve.PrivateKey) []byte {
	t.Helper()
	cb, err := proto.MarshalOptions{Deterministic: true}.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var z [64]byte
	rand.Read(z[:])
	sig := xeddsa.Sign(key, append([]byte("magpie group change v1\x00"), cb...), z)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&group.WireSignedChange{Change: cb, Signature: sig[:]})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serverLog reads a group's whole log from the server as u.
func serverLog(t *testing.T, u *clientconn.Conn, id [16]byte) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		page, more, err := u.GroupLog(ctx(t), id, uint64(len(out)), nil)
		if err != nil {
			t.Fatalf("group log: %v", err)
		}
		out = append(out, page...)
		if !more {
			return out
		}
		if len(page) == 0 {
			t.Fatal("an empty page with more")
		}
	}
}

// checkLog checks that the server holds exactly the test's log, both in its
// store and as a member reads it.
func checkLog(t *testing.T, s *servertest.Server, reader *clientconn.Conn, g *tGroup) {
	t.Helper()
	seq, _, err := s.Store.Group(ctx(t), g.id)
	if err != nil || seq != g.st.Seq {
		t.Errorf("stored head %d (%v), want %d", seq, err, g.st.Seq)
	}
	if got := serverLog(t, reader, g.id); !slices.EqualFunc(got, g.log, bytes.Equal) {
		t.Errorf("the server's log has %d changes, want %d (or they differ)", len(got), len(g.log))
	}
}

// wantErr checks err against a clientconn error (a wire error code).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// nextGroupEnvelope skips receipts and drained markers until an envelope
// arrives, and acknowledges it.
func nextGroupEnvelope(t *testing.T, c *clientconn.Conn) *clientconn.Envelope {
	t.Helper()
	e := servertest.NextEnvelope(t, c, wait)
	if err := c.Ack(e.Seq); err != nil {
		t.Fatal(err)
	}
	return e
}

// expectChange waits for the push of a change to group id.
func expectChange(t *testing.T, c *clientconn.Conn, id [16]byte, change []byte, from clientconn.DeviceAddr) {
	t.Helper()
	e := nextGroupEnvelope(t, c)
	if !e.GroupChange || e.Group != id || !bytes.Equal(e.Payload, change) || e.From != from || e.Ephemeral {
		t.Fatalf("want the change (%d bytes) from %v, got %+v", len(change), from, e)
	}
}

// expectMessage waits for the push of a group message.
func expectMessage(t *testing.T, c *clientconn.Conn, id [16]byte, mid clientconn.MessageID, payload string, from clientconn.DeviceAddr) *clientconn.Envelope {
	t.Helper()
	e := nextGroupEnvelope(t, c)
	if e.GroupChange || e.Group != id || e.ID != mid || string(e.Payload) != payload || e.From != from || e.Ephemeral || e.Seq == 0 {
		t.Fatalf("want group message %q from %v, got %+v", payload, from, e)
	}
	return e
}

// settle acknowledges whatever c has been pushed, until the server reports
// (a Drain) that everything queued for c by now has been pushed: what came
// before it cannot turn up after.
func settle(t *testing.T, c *clientconn.Conn) {
	t.Helper()
	tok, err := c.Drain(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(wait)
	for {
		select {
		case p, ok := <-c.Pushes():
			if !ok {
				t.Fatalf("connection closed: %v", c.Err())
			}
			switch {
			case p.Envelope != nil && p.Envelope.Seq != 0:
				c.Ack(p.Envelope.Seq)
			case p.Receipt != nil:
				c.Ack(p.Receipt.Seq)
			case p.Drained && p.DrainTok == tok:
				return
			}
		case <-deadline:
			t.Fatalf("no report of Drain %d within %v", tok, wait)
		}
	}
}

// expectNoEnvelope checks that nothing but receipts and drained markers
// reaches c for d.
func expectNoEnvelope(t *testing.T, c *clientconn.Conn, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case p, ok := <-c.Pushes():
			if !ok {
				t.Fatalf("connection closed: %v", c.Err())
			}
			if p.Envelope != nil {
				t.Fatalf("unexpected envelope %+v", p.Envelope)
			}
		case <-timer.C:
			return
		}
	}
}

func dev(u string, d uint32) clientconn.DeviceAddr { return clientconn.DeviceAddr{User: u, Device: d} }

func TestGroupChangeConflict(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")
	g := createGroup(t, alice, group.Settings{}, as(bob, group.RoleAdmin))

	// Two admins propose on the same head: the first is applied, the second
	// is not on the head any more.
	first := g.propose(t, alice, group.SetInfo{Name: "one"})
	second := g.propose(t, bob, group.SetInfo{Name: "two"})
	g.submit(t, alice, first)
	_, err := bob.GroupChange(ctx(t), g.id, second)
	wantErr(t, "a change on the old head", err, clientconn.ErrConflict)

	// seq ≠ head+1: a change two ahead (made on a state the server never
	// had), a replay of the applied change, a change of the right seq on
	// another head (a fork), and a second Create.
	skipped, _, err := g.st.Apply(g.propose(t, alice, group.SetInfo{Name: "three"}))
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := skipped.Propose(alice.Name, alice.id, group.SetInfo{Name: "four"}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := group.Decode(ahead); c.Seq != g.st.Seq+2 {
		t.Fatalf("the change ahead has seq %d", c.Seq)
	}
	_, err = alice.GroupChange(ctx(t), g.id, ahead)
	wantErr(t, "a change two ahead of the head", err, clientconn.ErrConflict)
	_, err = alice.GroupChange(ctx(t), g.id, first)
	wantErr(t, "a replayed change", err, clientconn.ErrConflict)
	fork, err := group.Replay(g.log[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	forked, _, err := fork.Apply(second)
	if err != nil {
		t.Fatal(err)
	}
	onFork, err := forked.Propose(alice.Name, alice.id, group.SetInfo{Name: "five"}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := group.Decode(onFork); c.Seq != g.st.Seq+1 || c.Prev == g.st.Head {
		t.Fatalf("the forked change: seq %d", c.Seq)
	}
	_, err = alice.GroupChange(ctx(t), g.id, onFork)
	wantErr(t, "a change on a forked head", err, clientconn.ErrConflict)
	_, err = alice.GroupChange(ctx(t), g.id, g.log[0])
	wantErr(t, "the Create again", err, clientconn.ErrConflict)

	// None of them was stored, and the group goes on from its head.
	checkLog(t, s, bob.Conn, g)
	g.do(t, bob, group.SetInfo{Name: "six"})
	checkLog(t, s, alice.Conn, g)

	// Races: two admins propose on the same head at once, from their own
	// connections, again and again. Each time exactly one is applied.
	for round := range 8 {
		proposals := [][]byte{
			g.propose(t, alice, group.SetInfo{Name: fmt.Sprintf("alice %d", round)}),
			g.propose(t, bob, group.SetInfo{Name: fmt.Sprintf("bob %d", round)}),
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, u := range []*gUser{alice, bob} {
			wg.Go(func() { _, errs[i] = u.GroupChange(ctx(t), g.id, proposals[i]) })
		}
		wg.Wait()
		switch {
		case errs[0] == nil && errors.Is(errs[1], clientconn.ErrConflict):
			g.accepted(t, proposals[0])
		case errs[1] == nil && errors.Is(errs[0], clientconn.ErrConflict):
			g.accepted(t, proposals[1])
		default:
			t.Fatalf("round %d: %v / %v, want one applied and one conflict", round, errs[0], errs[1])
		}
	}
	checkLog(t, s, alice.Conn, g)
}

// TestGroupChangeStaleCache runs two server processes on one store (as two
// servers behind one database would be): a change that the second one
// appended is news to the first, whose cached state is behind. The store
// refuses a change on the cached (old) head as a conflict, and the first
// server reloads the group, so that the proposer, proposing again on the
// real head, succeeds.
func TestGroupChangeStaleCache(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")
	g := createGroup(t, alice, group.Settings{}, as(bob, group.RoleAdmin))
	g.do(t, alice, group.SetInfo{Name: "cached"}) // server 1 caches seq 1

	// A second server on the same store.
	srv2, err := server.New(server.Config{Key: s.Key, Store: s.Store, SignupBurst: 100})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv2.Serve(ln) }()
	t.Cleanup(func() { // before servertest's cleanup closes the store
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv2.Shutdown(c)
		if err := <-served; err != nil && !errors.Is(err, server.ErrServerClosed) {
			t.Error(err)
		}
	})
	c2, err := clientconn.Dial(ctx(t), invite.Invite{ServerKey: s.Key.Public, Addrs: []string{ln.Addr().String()}}, bob.Key, s.DialOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })

	b := g.propose(t, bob, group.SetInfo{Name: "via server 2"})
	if seq, err := c2.GroupChange(ctx(t), g.id, b); err != nil || seq != 2 {
		t.Fatalf("change on server 2: %d %v", seq, err)
	}
	stale := g.propose(t, alice, group.SetInfo{Name: "on the old head"}) // seq 2 too
	g.accepted(t, b)
	// Server 1 verifies stale against its cached seq 1: fine by the rules,
	// but the store's head has moved.
	_, err = alice.GroupChange(ctx(t), g.id, stale)
	wantErr(t, "a change on a head only the cache still has", err, clientconn.ErrConflict)
	// alice reads the log (from server 1: it comes from the store) and
	// proposes again on the real head.
	if got := serverLog(t, alice.Conn, g.id); len(got) != 3 || !bytes.Equal(got[2], b) {
		t.Fatalf("server 1's log: %d changes", len(got))
	}
	g.do(t, alice, group.SetInfo{Name: "on the new head"})
	checkLog(t, s, alice.Conn, g)
}

func TestGroupChangeRefused(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")     // a member
	carol := newGroupUser(t, s, "carol") // an admin
	mallory := newGroupUser(t, s, "mallory")
	dave := newGroupUser(t, s, "dave")
	g := createGroup(t, alice, group.Settings{}, as(bob, group.RoleMember), as(carol, group.RoleAdmin))
	for _, u := range []*gUser{alice, bob, carol} {
		expectChange(t, u.Conn, g.id, g.log[0], dev("alice", 1))
	}
	addDave := func(w *group.WireChange) {
		w.Action = &group.WireChange_Add{Add: &group.WireAdd{User: "dave", Key: dave.id.Public.Serialize()}}
	}
	resign := func(b []byte, f func(*group.WireSignedChange)) []byte {
		var w group.WireSignedChange
		if err := proto.Unmarshal(b, &w); err != nil {
			t.Fatal(err)
		}
		f(&w)
		out, err := proto.MarshalOptions{Deterministic: true}.Marshal(&w)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// joinBy is u's Join, without the link's signature; withLinkSig adds
	// one by key.
	joinBy := func(u *gUser) []byte {
		return forge(t, g, u.Name, u.id.Private, func(w *group.WireChange) {
			w.Action = &group.WireChange_Join{Join: &group.WireJoin{Key: u.id.Public.Serialize()}}
		})
	}
	withLinkSig := func(b []byte, key curve.PrivateKey) []byte {
		return resign(b, func(w *group.WireSignedChange) {
			var z [64]byte
			rand.Read(z[:])
			sig := xeddsa.Sign(key, append([]byte("magpie group change v1\x00"), w.Change...), z)
			w.LinkSignature = sig[:]
		})
	}
	link, linkKey, err := group.NewLink(g.id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		by   *gUser
		id   [16]byte // the request's group id: g.id if zero
		b    []byte
		want error
	}{
		{"a flipped bit in the signature", alice, [16]byte{},
			resign(g.propose(t, alice, group.SetInfo{Name: "x"}), func(w *group.WireSignedChange) { w.Signature[7] ^= 1 }), clientconn.ErrForbidden},
		{"signed by a key that is not the author's", alice, [16]byte{},
			forge(t, g, "alice", mallory.id.Private, addDave), clientconn.ErrForbidden},
		{"an admin's change signed by the server's own key", carol, [16]byte{},
			forge(t, g, "carol", servertest.NewIdentity(t).Private, addDave), clientconn.ErrForbidden},
		{"a member adds someone", bob, [16]byte{},
			forge(t, g, "bob", bob.id.Private, addDave), clientconn.ErrForbidden},
		{"a member changes the settings", bob, [16]byte{},
			forge(t, g, "bob", bob.id.Private, func(w *group.WireChange) {
				w.Action = &group.WireChange_SetSettings{SetSettings: &group.WireSettings{AdminsOnlySend: true}}
			}), clientconn.ErrForbidden},
		{"an admin removes the owner", carol, [16]byte{},
			forge(t, g, "carol", carol.id.Private, func(w *group.WireChange) {
				w.Action = &group.WireChange_Remove{Remove: &group.WireUser{User: "alice"}}
			}), clientconn.ErrForbidden},
		{"a non-member adds themself", mallory, [16]byte{},
			forge(t, g, "mallory", mallory.id.Private, func(w *group.WireChange) {
				w.Action = &group.WireChange_Add{Add: &group.WireAdd{User: "mallory", Key: mallory.id.Public.Serialize()}}
			}), clientconn.ErrForbidden},
		{"a join without the link's signature", mallory, [16]byte{},
			joinBy(mallory), clientconn.ErrBadRequest}, // malformed
		{"a join while links are off", mallory, [16]byte{},
			withLinkSig(joinBy(mallory), servertest.NewIdentity(t).Private), clientconn.ErrForbidden},
		{"the owner's valid change, sent by a member", bob, [16]byte{},
			g.propose(t, alice, group.Add{User: "dave", Key: dave.id.Public}), clientconn.ErrForbidden},
		{"an admin's valid change, sent by the owner", alice, [16]byte{},
			g.propose(t, carol, group.SetLink{Key: &linkKey}), clientconn.ErrForbidden},
		{"a change for this group sent as another group's", alice, [16]byte{1, 2, 3},
			g.propose(t, alice, group.SetInfo{Name: "y"}), clientconn.ErrBadRequest},
		{"not a signed change", alice, [16]byte{}, []byte("hello"), clientconn.ErrBadRequest},
		{"a change with a field from the future", alice, [16]byte{},
			resign(g.propose(t, alice, group.SetInfo{Name: "z"}), func(w *group.WireSignedChange) {
				w.ProtoReflect().SetUnknown([]byte{0xa0, 0x06, 0x01}) // field 100, varint 1
			}), clientconn.ErrBadRequest},
		{"a change that changes nothing", alice, [16]byte{},
			forge(t, g, "alice", alice.id.Private, func(w *group.WireChange) {
				w.Action = &group.WireChange_SetInfo{SetInfo: &group.WireInfo{Name: "Harbour"}}
			}), clientconn.ErrForbidden},
	} {
		id := c.id
		if id == ([16]byte{}) {
			id = g.id
		}
		_, err := c.by.GroupChange(ctx(t), id, c.b)
		wantErr(t, c.name, err, c.want)
	}
	// None was stored, and none reached anyone.
	checkLog(t, s, bob.Conn, g)
	for _, u := range []*gUser{alice, bob, carol, mallory, dave} {
		servertest.ExpectNoPush(t, u.Conn, 100*time.Millisecond)
	}
	// The group still takes valid changes: the same ones, by those
	// allowed to make them.
	add := g.do(t, alice, group.Add{User: "dave", Key: dave.id.Public})
	for _, u := range []*gUser{alice, bob, carol, dave} {
		expectChange(t, u.Conn, g.id, add, dev("alice", 1))
	}
	setLink := g.do(t, carol, group.SetLink{Key: &linkKey})
	for _, u := range []*gUser{alice, bob, carol, dave} {
		expectChange(t, u.Conn, g.id, setLink, dev("carol", 1))
	}
	// Now a Join: with the link's signature it is applied (it is
	// mallory's own), with another link's it is not.
	other, _, err := group.NewLink(g.id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badJoin := withLinkSig(joinBy(mallory), other.Key)
	_, err = mallory.GroupChange(ctx(t), g.id, badJoin)
	wantErr(t, "a join signed by another link", err, clientconn.ErrForbidden)
	join, err := g.st.Join("mallory", mallory.id, link, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.GroupChange(ctx(t), g.id, join)
	wantErr(t, "mallory's join, sent by alice", err, clientconn.ErrForbidden)
	g.submit(t, mallory, join)
	for _, u := range []*gUser{alice, bob, carol, dave, mallory} {
		expectChange(t, u.Conn, g.id, join, dev("mallory", 1))
	}
	checkLog(t, s, mallory.Conn, g)
}

func TestGroupCreateRefused(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")
	nokeys := s.Register(t, "nokeys")
	newID := func() [16]byte {
		id, err := group.NewID(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	create := func(id [16]byte, author string, key curve.KeyPair, members ...group.Member) []byte {
		b, _, err := group.Create(id, author, key, "G", members, group.Settings{}, time.Now(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	exists := func(what string, id [16]byte) {
		t.Helper()
		if _, _, err := s.Store.Group(ctx(t), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: the group was stored (%v)", what, err)
		}
	}

	id := newID()
	_, err := nokeys.GroupChange(ctx(t), id, create(id, "nokeys", servertest.NewIdentity(t)))
	wantErr(t, "a Create by an account without keys", err, clientconn.ErrNoKeys)
	exists("no keys", id)

	id = newID()
	_, err = alice.GroupChange(ctx(t), id, create(id, "alice", servertest.NewIdentity(t)))
	wantErr(t, "a Create signed with a key that is not the account's", err, clientconn.ErrForbidden)
	exists("another key", id)

	id = newID()
	_, err = alice.GroupChange(ctx(t), id, create(id, "bob", bob.id))
	wantErr(t, "bob's Create, sent by alice", err, clientconn.ErrForbidden)
	exists("bob's Create", id)

	// Made by alice's key, naming bob as its author (and owner): the
	// requesting account's key checks out, the author does not.
	id = newID()
	_, err = alice.GroupChange(ctx(t), id, create(id, "bob", alice.id))
	wantErr(t, "a Create naming another author", err, clientconn.ErrForbidden)
	exists("a Create naming another author", id)

	// A Create for one group sent as another's: neither exists after.
	id, other := newID(), newID()
	_, err = alice.GroupChange(ctx(t), id, create(other, "alice", alice.id))
	wantErr(t, "a Create sent under another group id", err, clientconn.ErrBadRequest)
	exists("the request's group", id)
	exists("the change's group", other)

	// A first change that is not a Create.
	id = newID()
	unknown := &tGroup{id: id, st: &group.State{ID: id, Members: map[string]group.Member{}}}
	_, err = alice.GroupChange(ctx(t), id, forge(t, unknown, "alice", alice.id.Private, func(w *group.WireChange) {
		w.Action = &group.WireChange_SetInfo{SetInfo: &group.WireInfo{Name: "x"}}
	}))
	if err == nil {
		t.Error("a change to a group that does not exist was accepted")
	}
	exists("a change to no group", id)

	// Unregistered devices cannot create groups.
	id = newID()
	_, err = s.Dial(t, servertest.NewKey(t)).GroupChange(ctx(t), id, create(id, "alice", alice.id))
	wantErr(t, "a Create by an unregistered device", err, clientconn.ErrUnauthenticated)
	exists("unregistered", id)

	// And a correct one works.
	id = newID()
	if seq, err := alice.GroupChange(ctx(t), id, create(id, "alice", alice.id, as(bob, group.RoleMember))); err != nil || seq != 0 {
		t.Fatalf("create: %d %v", seq, err)
	}
	if e := nextGroupEnvelope(t, bob.Conn); !e.GroupChange || e.Group != id {
		t.Fatalf("bob got %+v", e)
	}
}

func TestGroupChangePushes(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	alice2 := addDevice(t, s, alice, false, 0) // no keys: gets changes all the same
	bob := newGroupUser(t, s, "bob")
	carol := newGroupUser(t, s, "carol")
	erin := newGroupUser(t, s, "erin")
	g := createGroup(t, alice, group.Settings{}, as(bob, group.RoleMember))
	a1 := dev("alice", 1)
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn} {
		expectChange(t, c, g.id, g.log[0], a1)
	}
	// A new member gets the change that added them; those left out of the
	// group get nothing.
	add := g.do(t, alice, group.Add{User: "carol", Key: carol.id.Public})
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, carol.Conn} {
		expectChange(t, c, g.id, add, a1)
	}
	// Those asking to join get the changes from their request on.
	link, linkKey, err := group.NewLink(g.id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	setLink := g.do(t, alice, group.SetLink{Key: &linkKey, Approval: true})
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, carol.Conn} {
		expectChange(t, c, g.id, setLink, a1)
	}
	join, err := g.st.Join("erin", erin.id, link, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g.submit(t, erin, join)
	if _, ok := g.st.Requests["erin"]; !ok {
		t.Fatal("erin's join is not a request")
	}
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, carol.Conn, erin.Conn} {
		expectChange(t, c, g.id, join, dev("erin", 1))
	}
	info := g.do(t, carol, group.SetInfo{Name: "Harbour 2"})
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, carol.Conn, erin.Conn} {
		expectChange(t, c, g.id, info, dev("carol", 1))
	}
	// A denied request and a removed member get the change that put them
	// out, and nothing after.
	deny := g.do(t, alice, group.Deny{User: "erin"})
	remove := g.do(t, alice, group.Remove{User: "bob"})
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, carol.Conn, erin.Conn} {
		expectChange(t, c, g.id, deny, a1)
	}
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, carol.Conn} {
		expectChange(t, c, g.id, remove, a1)
	}
	last := g.do(t, carol, group.SetInfo{Name: "Harbour 3"})
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, carol.Conn} {
		expectChange(t, c, g.id, last, dev("carol", 1))
	}
	servertest.ExpectNoPush(t, bob.Conn, 200*time.Millisecond)
	servertest.ExpectNoPush(t, erin.Conn, 0)
	// Offline devices get what they missed when they come back, in order.
	carol.Close()
	more := []group.Action{group.SetInfo{Name: "Harbour 4"}, group.SetInfo{Name: "Harbour 5"}}
	var sent [][]byte
	for _, a := range more {
		sent = append(sent, g.do(t, alice, a))
	}
	carolAgain := s.Reconnect(t, carol.User)
	for _, b := range sent {
		expectChange(t, carolAgain.Conn, g.id, b, a1)
	}
}

func TestGroupLogAccess(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")
	mallory := newGroupUser(t, s, "mallory")
	erin := newGroupUser(t, s, "erin")
	g := createGroup(t, alice, group.Settings{}, as(bob, group.RoleMember))

	readAs := func(c *clientconn.Conn, id [16]byte, proof []byte) error {
		t.Helper()
		changes, more, err := c.GroupLog(ctx(t), id, 0, proof)
		if err == nil && (more || !slices.EqualFunc(changes, g.log, bytes.Equal)) {
			t.Fatalf("a log of %d changes (more %v), want %d", len(changes), more, len(g.log))
		}
		return err
	}
	if err := readAs(bob.Conn, g.id, nil); err != nil {
		t.Fatalf("a member reads the log: %v", err)
	}
	// Anyone else, and any unknown group, get one answer: nobody learns
	// that the group exists.
	errOutsider := readAs(mallory.Conn, g.id, nil)
	wantErr(t, "an outsider reads the log", errOutsider, clientconn.ErrNotMember)
	unknown, _ := group.NewID(rand.Reader)
	errUnknown := readAs(alice.Conn, unknown, nil)
	wantErr(t, "a member of no group reads an unknown group", errUnknown, clientconn.ErrNotMember)
	if errOutsider != nil && errUnknown != nil && errOutsider.Error() != errUnknown.Error() {
		t.Errorf("an outsider learns the group exists: %q vs %q", errOutsider, errUnknown)
	}

	// A link proof while links are off opens nothing.
	link, linkKey, err := group.NewLink(g.id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	proof := func(l group.LinkSecret, user string) []byte {
		p, err := l.LogProof(user, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	wantErr(t, "a proof while links are off", readAs(mallory.Conn, g.id, proof(link, "mallory")), clientconn.ErrNotMember)
	wantErr(t, "a proof for an unknown group", readAs(mallory.Conn, unknown, proof(group.LinkSecret{Group: unknown, Key: link.Key}, "mallory")), clientconn.ErrNotMember)

	g.do(t, alice, group.SetLink{Key: &linkKey, Approval: true})
	if err := readAs(mallory.Conn, g.id, proof(link, "mallory")); err != nil {
		t.Fatalf("a link holder reads the log: %v", err)
	}
	// The proof is the link's over the group and the reader: one made for
	// someone else, for another group, by another key, or a broken one, is
	// refused.
	otherGroup, _ := group.NewID(rand.Reader)
	forger, _, err := group.NewLink(g.id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	broken := proof(link, "mallory")
	broken[10] ^= 1
	for name, p := range map[string][]byte{
		"a proof made for erin":            proof(link, "erin"),
		"a proof for another group":        proof(group.LinkSecret{Group: otherGroup, Key: link.Key}, "mallory"),
		"a proof by a key that is no link": proof(forger, "mallory"),
		"a broken proof":                   broken,
	} {
		wantErr(t, name, readAs(mallory.Conn, g.id, p), clientconn.ErrNotMember)
	}
	_, _, err = mallory.GroupLog(ctx(t), g.id, 0, []byte("short"))
	wantErr(t, "a proof of the wrong size", err, clientconn.ErrBadRequest)

	// Someone asking to join reads the log without a proof.
	join, err := g.st.Join("erin", erin.id, link, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g.submit(t, erin, join)
	if err := readAs(erin.Conn, g.id, nil); err != nil {
		t.Fatalf("a pending requester reads the log: %v", err)
	}
	// A new link: the old one's proofs open nothing.
	link2, linkKey2, err := group.NewLink(g.id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g.do(t, alice, group.SetLink{Key: &linkKey2, Approval: true}) // drops erin's request
	wantErr(t, "a dropped requester reads the log", readAs(erin.Conn, g.id, nil), clientconn.ErrNotMember)
	wantErr(t, "a proof by the old link", readAs(mallory.Conn, g.id, proof(link, "mallory")), clientconn.ErrNotMember)
	if err := readAs(mallory.Conn, g.id, proof(link2, "mallory")); err != nil {
		t.Fatalf("a holder of the new link reads the log: %v", err)
	}
	// A removed member reads no more.
	g.do(t, alice, group.Remove{User: "bob"})
	wantErr(t, "a removed member reads the log", readAs(bob.Conn, g.id, nil), clientconn.ErrNotMember)
}

func TestGroupLogPages(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 500 changes")
	}
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	g := createGroup(t, alice, group.Settings{})
	// 300 small changes, then 250 of about 3 KiB (the longest description
	// and avatar): 256 of those would be over the page's 768 KiB.
	for i := range 300 {
		g.do(t, alice, group.SetInfo{Name: fmt.Sprint(i)})
	}
	big := len(g.log)
	desc := strings.Repeat("d", 1024)
	for i := range 250 {
		avatar := bytes.Repeat([]byte{byte(i)}, 2048)
		g.do(t, alice, group.SetInfo{Name: "big", Description: desc, Avatar: avatar})
	}
	changes, more, err := alice.GroupLog(ctx(t), g.id, 0, nil)
	if err != nil || !more || len(changes) != 256 {
		t.Fatalf("the first page: %d changes, more %v, %v; want 256 and more", len(changes), more, err)
	}
	changes, more, err = alice.GroupLog(ctx(t), g.id, uint64(big), nil)
	size := 0
	for _, c := range changes {
		size += len(c)
	}
	if err != nil || !more || size > 768<<10 || size+len(g.log[big+len(changes)]) <= 768<<10 || len(changes) >= 256 {
		t.Fatalf("a page of big changes: %d changes of %d bytes, more %v, %v; want as many as fit in 768 KiB, and more", len(changes), size, more, err)
	}
	t.Logf("a page holds %d changes of %d bytes", len(changes), len(g.log[big]))
	// Page after page, the whole log, in order; from past the head, none.
	checkLog(t, s, alice.Conn, g)
	changes, more, err = alice.GroupLog(ctx(t), g.id, g.st.Seq+1, nil)
	if err != nil || more || len(changes) != 0 {
		t.Fatalf("from past the head: %d changes, more %v, %v", len(changes), more, err)
	}
}

func TestGroupLimits(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")
	// A group of 1,024 members: its Create is allowed, one more member
	// is not.
	others := make([]group.Member, 0, group.MaxMembers)
	for i := range group.MaxMembers {
		others = append(others, group.Member{User: fmt.Sprintf("member%04d", i), Key: servertest.NewIdentity(t).Public, Role: group.RoleMember})
	}
	id, err := group.NewID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := group.Create(id, "alice", alice.id, "Big", others, group.Settings{}, time.Now(), rand.Reader); err == nil {
		t.Fatal("a Create of 1,025 was made")
	}
	// Made by hand, then: the server refuses it.
	wc := &group.WireChange{GroupId: id[:], Author: "alice", TimeMs: 1, Action: &group.WireChange_Create{Create: &group.WireCreate{
		OwnerKey: alice.id.Public.Serialize(), Name: "Big"}}}
	for _, m := range others {
		wc.GetCreate().Members = append(wc.GetCreate().Members, &group.WireMember{User: m.User, Key: m.Key.Serialize(), Role: group.WireRole(m.Role)})
	}
	tooMany := signWire(t, wc, alice.id.Private)
	_, err = alice.GroupChange(ctx(t), id, tooMany)
	wantErr(t, "a Create of 1,025 members", err, clientconn.ErrTooLarge)
	if err != nil && !strings.Contains(err.Error(), "1024") {
		t.Errorf("the error does not say the limit: %v", err)
	}
	g := createGroup(t, alice, group.Settings{}, others[:group.MaxMembers-1]...)
	if len(g.st.Members) != group.MaxMembers || len(g.log[0]) > group.MaxChangeSize {
		t.Fatalf("%d members, a Create of %d bytes", len(g.st.Members), len(g.log[0]))
	}
	full := forge(t, g, "alice", alice.id.Private, func(w *group.WireChange) {
		w.Action = &group.WireChange_Add{Add: &group.WireAdd{User: "bob", Key: bob.id.Public.Serialize()}}
	})
	_, err = alice.GroupChange(ctx(t), g.id, full)
	wantErr(t, "adding a 1,025th member", err, clientconn.ErrTooLarge)
	// One leaves (removed), and there is room again.
	g.do(t, alice, group.Remove{User: others[0].User})
	g.do(t, alice, group.Add{User: "bob", Key: bob.id.Public})

	// The size of a change: over 128 KiB the group refuses it, over
	// 256 KiB the wire does; both say how big it may be.
	huge := forge(t, g, "alice", alice.id.Private, func(w *group.WireChange) {
		w.Action = &group.WireChange_SetInfo{SetInfo: &group.WireInfo{Name: "x", Description: strings.Repeat("d", 150<<10)}}
	})
	_, err = alice.GroupChange(ctx(t), g.id, huge)
	if !errors.Is(err, clientconn.ErrBadRequest) && !errors.Is(err, clientconn.ErrTooLarge) || err != nil && !strings.Contains(err.Error(), fmt.Sprint(group.MaxChangeSize)) {
		t.Errorf("a change of %d bytes: %v", len(huge), err)
	}
	_, err = alice.GroupChange(ctx(t), g.id, make([]byte, wire.MaxGroupChange+1))
	wantErr(t, "a change over the wire's limit", err, clientconn.ErrTooLarge)
	// The name and description have their limits too.
	long := forge(t, g, "alice", alice.id.Private, func(w *group.WireChange) {
		w.Action = &group.WireChange_SetInfo{SetInfo: &group.WireInfo{Name: strings.Repeat("n", 65)}}
	})
	_, err = alice.GroupChange(ctx(t), g.id, long)
	wantErr(t, "a name of 65 bytes", err, clientconn.ErrBadRequest)
	checkLog(t, s, alice.Conn, g)
}

// pendingOf returns what is queued for a device.
func pendingOf(t *testing.T, s *servertest.Server, d clientconn.DeviceAddr) []store.Message {
	t.Helper()
	msgs, err := s.Store.Pending(ctx(t), store.DeviceAddr{User: d.User, Device: d.Device}, 0, 1000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// storedCopies counts the stored copies of a group message's payload
// (reading the database file beside the server).
func storedCopies(t *testing.T, s *servertest.Server, payload []byte) int {
	t.Helper()
	n, err := s.Store.CountPayload(ctx(t), payload)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestGroupSendFanOut(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	alice2 := addDevice(t, s, alice, true, 2)
	bob := newGroupUser(t, s, "bob")
	bob2 := addDevice(t, s, bob, true, 2)
	bob3 := addDevice(t, s, bob, false, 0) // no keys: no group messages
	carol := newGroupUser(t, s, "carol")
	mallory := newGroupUser(t, s, "mallory")
	g := createGroup(t, alice, group.Settings{}, as(bob, group.RoleMember), as(carol, group.RoleMember))
	everyone := []*clientconn.Conn{alice.Conn, alice2, bob.Conn, bob2, bob3, carol.Conn}
	for _, c := range everyone {
		settle(t, c)
	}

	// One send from alice's first device: every other device with keys
	// gets it, alice's second device included; the sender's does not.
	id := clientconn.NewMessageID()
	r, err := alice.GroupSend(ctx(t), g.id, id, []byte("hello group"), false)
	if err != nil || r.Devices != 4 || r.Duplicate || r.ServerTime.IsZero() {
		t.Fatalf("group send: %+v %v", r, err)
	}
	a1 := dev("alice", 1)
	seqs := map[uint64]bool{}
	for _, c := range []*clientconn.Conn{alice2, bob.Conn, bob2, carol.Conn} {
		e := expectMessage(t, c, g.id, id, "hello group", a1)
		if !e.ServerTime.Equal(r.ServerTime) {
			t.Errorf("server time %v, the send said %v", e.ServerTime, r.ServerTime)
		}
		seqs[e.Seq] = true
	}
	if len(seqs) != 4 {
		t.Errorf("the copies' seqs: %v", seqs)
	}
	expectNoEnvelope(t, bob3, 200*time.Millisecond)
	// The payload is stored once however many devices it is queued for
	// (read before any ack could release it: carol is offline for this
	// one).
	carol.Close()
	id2 := clientconn.NewMessageID()
	once := []byte("stored once, queued four times")
	if r, err := bob.GroupSend(ctx(t), g.id, id2, once, false); err != nil || r.Devices != 4 {
		t.Fatalf("bob's send: %+v %v", r, err)
	}
	if n := storedCopies(t, s, once); n != 1 {
		t.Errorf("the payload is stored %d times", n)
	}
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob2} {
		expectMessage(t, c, g.id, id2, string(once), dev("bob", 1))
	}
	carolAgain := s.Reconnect(t, carol.User)
	expectMessage(t, carolAgain.Conn, g.id, id2, string(once), dev("bob", 1))
	carol.User = carolAgain

	// A retry with the same id is a duplicate: nothing new is queued, and
	// it answers the first send's time, on this connection or a new one.
	for i := range 2 {
		if i == 1 {
			alice.Conn = s.Reconnect(t, alice.User).Conn
		}
		r2, err := alice.GroupSend(ctx(t), g.id, id, []byte("hello group"), false)
		if err != nil || !r2.Duplicate || !r2.ServerTime.Equal(r.ServerTime) || r2.Devices != 0 {
			t.Fatalf("retry %d: %+v %v", i, r2, err)
		}
	}
	// The same id from another device is another message.
	if r3, err := alice2.GroupSend(ctx(t), g.id, id, []byte("from device 2"), false); err != nil || r3.Duplicate || r3.Devices != 4 {
		t.Fatalf("the same id from alice's other device: %+v %v", r3, err)
	}
	for _, c := range []*clientconn.Conn{alice.Conn, bob.Conn, bob2, carol.Conn} {
		expectMessage(t, c, g.id, id, "from device 2", dev("alice", 2))
	}
	for _, c := range []*clientconn.Conn{bob.Conn, bob2, carol.Conn, bob3} {
		expectNoEnvelope(t, c, 100*time.Millisecond)
	}

	// Acknowledgements make receipts for the sending device. (The earlier
	// copies were acknowledged too: their receipts come first.)
	got := map[clientconn.DeviceAddr]bool{}
	deadline := time.Now().Add(wait)
	for len(got) < 4 && time.Now().Before(deadline) {
		p := servertest.NextPush(t, alice2, time.Until(deadline))
		if p.Receipt != nil && p.Receipt.ID == id {
			got[p.Receipt.Recipient] = true
			alice2.Ack(p.Receipt.Seq)
		}
	}
	if len(got) != 4 || got[dev("alice", 2)] {
		t.Errorf("receipts for alice's second device's message: %v", got)
	}

	// Outsiders, and unknown groups, get NOT_MEMBER; nothing is queued.
	_, err = mallory.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte("let me in"), false)
	wantErr(t, "a send by a non-member", err, clientconn.ErrNotMember)
	_, err = mallory.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte("let me in"), true)
	wantErr(t, "an ephemeral send by a non-member", err, clientconn.ErrNotMember)
	unknown, _ := group.NewID(rand.Reader)
	_, err = alice.GroupSend(ctx(t), unknown, clientconn.NewMessageID(), []byte("anyone?"), false)
	wantErr(t, "a send to an unknown group", err, clientconn.ErrNotMember)
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, bob2, carol.Conn} {
		expectNoEnvelope(t, c, 100*time.Millisecond)
	}

	// A device that uploads keys from now on gets the group's messages.
	if _, err := bob3.SetKeys(ctx(t), servertest.KeysUpload(t, bob.id, 3, 1, 0)); err != nil {
		t.Fatal(err)
	}
	id3 := clientconn.NewMessageID()
	if r, err := carol.GroupSend(ctx(t), g.id, id3, []byte("now bob3 too"), false); err != nil || r.Devices != 5 {
		t.Fatalf("carol's send: %+v %v", r, err)
	}
	for _, c := range []*clientconn.Conn{alice.Conn, alice2, bob.Conn, bob2, bob3} {
		expectMessage(t, c, g.id, id3, "now bob3 too", dev("carol", 1))
	}

	// Ephemeral sends reach the devices connected now and are never
	// stored.
	// (Until the server has seen bob2's connection close, it is handed
	// one too: send until it has.)
	bob2.Close()
	var typing string
	for i := 0; ; i++ {
		typing = fmt.Sprint("typing ", i)
		r, err = alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte(typing), true)
		if err != nil || r.Devices < 4 || r.Devices > 5 {
			t.Fatalf("ephemeral: %+v %v", r, err)
		}
		if r.Devices == 4 {
			break
		}
		if i == 500 {
			t.Fatal("the server still hands ephemeral sends to a closed connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []*clientconn.Conn{alice2, bob.Conn, bob3, carol.Conn} {
		for {
			e := servertest.NextEnvelope(t, c, wait)
			if !e.Ephemeral || e.Group != g.id || e.Seq != 0 || !strings.HasPrefix(string(e.Payload), "typing ") || e.From != a1 {
				t.Fatalf("ephemeral envelope %+v", e)
			}
			if string(e.Payload) == typing {
				break
			}
		}
	}
	for _, d := range []clientconn.DeviceAddr{dev("bob", 2), dev("bob", 1), dev("carol", 1)} {
		for _, m := range pendingOf(t, s, d) {
			if strings.HasPrefix(string(m.Payload), "typing") {
				t.Errorf("an ephemeral send was queued for %v", d)
			}
		}
	}
}

func TestGroupSendRules(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")
	carol := newGroupUser(t, s, "carol")
	g := createGroup(t, alice, group.Settings{AdminsOnlySend: true}, as(bob, group.RoleMember), as(carol, group.RoleAdmin))
	for _, u := range []*gUser{alice, bob, carol} {
		settle(t, u.Conn)
	}
	send := func(u *gUser, text string, ephemeral bool) error {
		_, err := u.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte(text), ephemeral)
		return err
	}
	// Only admins send: a member is forbidden, ephemeral (typing) too.
	wantErr(t, "a member's send while only admins send", send(bob, "may I?", false), clientconn.ErrForbidden)
	wantErr(t, "a member typing while only admins send", send(bob, "typing", true), clientconn.ErrForbidden)
	for _, u := range []*gUser{alice, carol} {
		expectNoEnvelope(t, u.Conn, 100*time.Millisecond)
	}
	if err := send(carol, "an admin's", false); err != nil {
		t.Fatalf("an admin's send: %v", err)
	}
	for _, u := range []*gUser{alice, bob} {
		if e := nextGroupEnvelope(t, u.Conn); string(e.Payload) != "an admin's" {
			t.Fatalf("%s got %q", u.Name, e.Payload)
		}
	}
	// Promoted, bob sends; everyone sends once the setting is off.
	g.do(t, alice, group.SetRole{User: "bob", Role: group.RoleAdmin})
	if err := send(bob, "promoted", false); err != nil {
		t.Fatalf("a promoted member's send: %v", err)
	}
	g.do(t, alice, group.SetRole{User: "bob", Role: group.RoleMember})
	wantErr(t, "a demoted member's send", send(bob, "demoted", false), clientconn.ErrForbidden)
	g.do(t, alice, group.SetSettings{Settings: group.Settings{}})
	if err := send(bob, "anyone may", false); err != nil {
		t.Fatalf("a member's send: %v", err)
	}
	for _, u := range []*gUser{alice, carol} {
		var texts []string
		for len(texts) < 2 {
			if e := nextGroupEnvelope(t, u.Conn); !e.GroupChange {
				texts = append(texts, string(e.Payload))
			}
		}
		if fmt.Sprint(texts) != "[promoted anyone may]" {
			t.Errorf("%s got %v", u.Name, texts)
		}
	}

	// A removed member sends nothing and gets nothing more; one who
	// left, likewise.
	settle(t, bob.Conn)
	g.do(t, alice, group.Remove{User: "bob"})
	if e := nextGroupEnvelope(t, bob.Conn); !e.GroupChange {
		t.Fatalf("bob got %+v, want his removal", e)
	}
	wantErr(t, "a removed member's send", send(bob, "still here?", false), clientconn.ErrNotMember)
	wantErr(t, "a removed member typing", send(bob, "typing", true), clientconn.ErrNotMember)
	id := clientconn.NewMessageID()
	if r, err := alice.GroupSend(ctx(t), g.id, id, []byte("after bob"), false); err != nil || r.Devices != 1 {
		t.Fatalf("a send after bob's removal: %+v %v", r, err)
	}
	if r, err := alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte("typing"), true); err != nil || r.Devices != 1 {
		t.Fatalf("typing after bob's removal: %+v %v", r, err)
	}
	expectNoEnvelope(t, bob.Conn, 300*time.Millisecond)
	for _, m := range pendingOf(t, s, dev("bob", 1)) {
		if m.Kind == store.KindGroupMessage {
			t.Errorf("a group message queued for bob after his removal: %q", m.Payload)
		}
	}
	g.do(t, carol, group.Leave{})
	wantErr(t, "a send by one who left", send(carol, "bye", false), clientconn.ErrNotMember)
	// Alone in the group: a send is accepted, and goes nowhere.
	if r, err := alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte("echo"), false); err != nil || r.Devices != 0 {
		t.Fatalf("a send to nobody: %+v %v", r, err)
	}
	// A new member gets the messages sent after they were added only.
	g.do(t, alice, group.Add{User: "bob", Key: bob.id.Public})
	settle(t, bob.Conn)
	if _, err := alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte("welcome back"), false); err != nil {
		t.Fatal(err)
	}
	if e := nextGroupEnvelope(t, bob.Conn); string(e.Payload) != "welcome back" {
		t.Fatalf("bob got %q", e.Payload)
	}
}

// TestGroupSendQueueFull: a member whose queue is full is skipped; a send
// that reaches nobody for that reason says so.
func TestGroupSendQueueFull(t *testing.T) {
	s := servertest.Start(t, server.Config{QueueLimit: 3, SenderShare: -1}) // one sender fills the queue
	alice := newGroupUser(t, s, "alice")
	bob := newGroupUser(t, s, "bob")
	carol := newGroupUser(t, s, "carol")
	g := createGroup(t, alice, group.Settings{}, as(bob, group.RoleMember), as(carol, group.RoleMember))
	bob.Close() // bob's queue: the Create, then two messages
	settle(t, carol.Conn)
	for i := range 2 {
		if r, err := alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte(fmt.Sprint(i)), false); err != nil || r.Devices != 2 {
			t.Fatalf("send %d: %+v %v", i, r, err)
		}
		settle(t, carol.Conn)
	}
	if r, err := alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte("bob is full"), false); err != nil || r.Devices != 1 {
		t.Fatalf("a send while bob's queue is full: %+v %v", r, err)
	}
	carol.Close()
	for i := range 2 {
		if r, err := alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte(fmt.Sprint("fill ", i)), false); err != nil || r.Devices != 1 {
			t.Fatalf("fill %d: %+v %v", i, r, err)
		}
	}
	_, err := alice.GroupSend(ctx(t), g.id, clientconn.NewMessageID(), []byte("nobody has room"), false)
	wantErr(t, "a send when every queue is full", err, clientconn.ErrQueueFull)
	if err != nil && strings.Contains(err.Error(), `""`) {
		t.Errorf("the error names nobody: %v", err)
	}
	// bob gets what there was room for, and nothing of what was not
	// queued for him.
	bob2 := s.Reconnect(t, bob.User)
	var got []string
	for len(got) < 2 {
		if e := nextGroupEnvelope(t, bob2.Conn); !e.GroupChange {
			got = append(got, string(e.Payload))
		}
	}
	if fmt.Sprint(got) != "[0 1]" {
		t.Errorf("bob got %q", got)
	}
	servertest.ExpectNoPush(t, bob2.Conn, 200*time.Millisecond)
}
