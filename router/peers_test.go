package router_test

import (
	"slices"
	"testing"
	"time"

	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/router/peertest"
	"github.com/magpie-im/magpie/store"
)

// cluster starts n routers on one store (users alice and bob), joined by
// an in-memory hub: what several nodes on one database look like.
func cluster(t *testing.T, n int, cfg router.Config) (*peertest.Hub, []*router.Router) {
	hub, rs, _ := clusterNodes(t, n, cfg)
	return hub, rs
}

func clusterNodes(t *testing.T, n int, cfg router.Config) (*peertest.Hub, []*router.Router, []*peertest.Node) {
	t.Helper()
	st := openStore(t)
	hub := peertest.NewHub()
	var rs []*router.Router
	var nodes []*peertest.Node
	for i := range n {
		c := cfg
		c.Store = st
		node := hub.Node(string(rune('A' + i)))
		c.Peers = node
		r := router.New(c)
		t.Cleanup(r.Close)
		rs, nodes = append(rs, r), append(nodes, node)
	}
	return hub, rs, nodes
}

func sentOf(hub *peertest.Hub, kind peertest.Kind) []peertest.Msg {
	var out []peertest.Msg
	for _, m := range hub.Sent() {
		if m.Kind == kind {
			out = append(out, m)
		}
	}
	return out
}

// A message committed on one node reaches a device connected on another
// through a wake alone (no periodic re-read), and the receipt of its ack
// goes back the same way.
func TestPeersWakeAcrossNodes(t *testing.T) {
	hub, rs := cluster(t, 2, router.Config{Recheck: -1})
	a, b := rs[0], rs[1]
	bobMB, aliceMB := newMailbox(), newMailbox()
	bobSub := a.Attach(bob, bobMB)
	defer bobSub.Detach()
	aliceSub := b.Attach(alice, aliceMB)
	defer aliceSub.Detach()
	mustDrained(t, bobMB, aliceMB)

	send(t, b, []byte("across")) // alice → bob, committed on B
	seqs := bobMB.waitFor(t, bobSub, 1)
	wakes := sentOf(hub, peertest.Wake)
	if len(wakes) != 1 || wakes[0].From != "B" || wakes[0].User != "bob" || !slices.Equal(wakes[0].Devices, []uint32{1}) {
		t.Fatalf("wakes %+v, want one from B for bob/1", wakes)
	}
	if err := bobSub.Ack(seqs); err != nil {
		t.Fatal(err)
	}
	if got := aliceMB.waitFor(t, aliceSub, 1); len(got) != 1 {
		t.Fatalf("receipt: %v", got)
	}
	if wakes := sentOf(hub, peertest.Wake); len(wakes) != 2 || wakes[1].From != "A" || wakes[1].User != "alice" {
		t.Fatalf("wakes %+v, want the receipt's from A for alice", wakes)
	}
}

// mustDrained waits for each mailbox's first Drained push.
func mustDrained(t *testing.T, mbs ...*mailbox) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for _, mb := range mbs {
		for !mb.drained() {
			select {
			case <-mb.changed:
			case <-deadline:
				t.Fatal("no drained push")
			}
		}
	}
}

// A device connected on the committing node is offered the item there:
// nothing is sent to the peers.
func TestPeersNoWakeForLocalDevices(t *testing.T) {
	hub, rs := cluster(t, 2, router.Config{Recheck: -1})
	mb := newMailbox()
	sub := rs[0].Attach(bob, mb)
	defer sub.Detach()
	send(t, rs[0], []byte("local"))
	mb.waitFor(t, sub, 1)
	if w := sentOf(hub, peertest.Wake); len(w) != 0 {
		t.Fatalf("wakes for a local device: %+v", w)
	}
}

// A lost wake costs delay, not the message: the periodic re-read, or a
// Recheck (what the bus does after a reconnect), finds it.
func TestPeersLostWake(t *testing.T) {
	for _, tc := range []struct {
		name    string
		recheck time.Duration
		call    bool
	}{{"periodic", 20 * time.Millisecond, false}, {"Recheck", -1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			hub, rs := cluster(t, 2, router.Config{Recheck: tc.recheck})
			hub.SetDrop(func(m peertest.Msg) bool { return m.Kind == peertest.Wake })
			mb := newMailbox()
			sub := rs[0].Attach(bob, mb)
			defer sub.Detach()
			mustDrained(t, mb)
			send(t, rs[1], []byte("lost wake"))
			if tc.call {
				waitIdle(t, sub)
				if n := len(mb.messages()); n != 0 {
					t.Fatalf("%d messages before the recheck, with no wake and no periodic re-read", n)
				}
				rs[0].Recheck()
			}
			mb.waitFor(t, sub, 1)
		})
	}
}

// A device connecting on one node supersedes its connection on another,
// which then stops listening for the user.
func TestPeersSupersede(t *testing.T) {
	_, rs, nodes := clusterNodes(t, 2, router.Config{Recheck: -1})
	first, second := newMailbox(), newMailbox()
	firstSub := rs[0].Attach(bob, first)
	mustDrained(t, first)
	sub := rs[1].Attach(bob, second)
	defer sub.Detach()
	first.mu.Lock()
	superseded := first.superseded
	first.mu.Unlock()
	if !superseded {
		t.Fatal("the connection on A was not superseded by the one on B")
	}
	if nodes[0].Listening("bob") || !nodes[1].Listening("bob") {
		t.Fatal("A should have stopped listening for bob, and B started")
	}
	firstSub.Detach() // as the closed connection does: a no-op now
	send(t, rs[0], []byte("to the new one"))
	second.waitFor(t, sub, 1)
	if len(first.messages()) != 0 {
		t.Fatal("the superseded connection was pushed to")
	}
}

// Listen and Unlisten follow the first and last device of a user.
func TestPeersListen(t *testing.T) {
	hub := peertest.NewHub()
	node := hub.Node("A")
	r := setup(t, router.Config{Peers: node, Recheck: -1})
	bob2 := store.DeviceAddr{User: "bob", Device: 2}
	s1 := r.Attach(bob, newMailbox())
	s2 := r.Attach(bob2, newMailbox())
	if !node.Listening("bob") {
		t.Fatal("not listening for bob after his attach")
	}
	s1.Detach()
	if !node.Listening("bob") {
		t.Fatal("stopped listening with bob's second device still here")
	}
	s2.Detach()
	if node.Listening("bob") {
		t.Fatal("still listening after bob's last device left")
	}
}

// Ephemeral envelopes and pushes reach devices on other nodes; the sender's
// own device is skipped there too.
func TestPeersEphemeralAndPush(t *testing.T) {
	_, rs := cluster(t, 2, router.Config{Recheck: -1})
	a, b := rs[0], rs[1]
	bobMB, aliceMB, alice2MB := newMailbox(), newMailbox(), newMailbox()
	alice2 := store.DeviceAddr{User: "alice", Device: 2}
	defer a.Attach(bob, bobMB).Detach()
	defer a.Attach(alice, aliceMB).Detach()
	defer a.Attach(alice2, alice2MB).Detach()

	if n := b.SendEphemeral("bob", &router.Ephemeral{From: alice, Payload: []byte("typing")}); n != 0 {
		t.Fatalf("%d devices on B took it; bob is on A", n)
	}
	// alice/1 is on A, so her own ephemeral sent from B (as if from a
	// second connection there) skips her device on A, not her other one.
	b.SendEphemeral("alice", &router.Ephemeral{From: alice, Payload: []byte("sync")})
	if b.PushTo(bob, router.Push{KeysLow: &store.KeyCounts{PreKeys: 3}}) {
		t.Fatal("PushTo reported a push to a device on another node")
	}
	ephemerals := func(mb *mailbox) (out []string) {
		mb.mu.Lock()
		defer mb.mu.Unlock()
		for _, p := range mb.pushes {
			switch {
			case p.Ephemeral != nil:
				out = append(out, string(p.Ephemeral.Payload))
			case p.KeysLow != nil:
				out = append(out, "keyslow")
			}
		}
		return out
	}
	if got := ephemerals(bobMB); !slices.Equal(got, []string{"typing", "keyslow"}) {
		t.Fatalf("bob on A got %q", got)
	}
	if got := ephemerals(alice2MB); !slices.Equal(got, []string{"sync"}) {
		t.Fatalf("alice/2 on A got %q", got)
	}
	if got := ephemerals(aliceMB); len(got) != 0 {
		t.Fatalf("the sending device got %q", got)
	}
}

// An item committed here must not be pushed ahead of one another node
// committed before it and has not told this node about yet: a pump that
// has pushed a later seq would never read the earlier one. So a wake
// that comes late (here: dropped, then a Recheck) still delivers it.
func TestPeersLateWakeAfterALocalCommit(t *testing.T) {
	hub, rs := cluster(t, 2, router.Config{Recheck: -1})
	hub.SetDrop(func(m peertest.Msg) bool { return m.Kind == peertest.Wake })
	mb := newMailbox()
	sub := rs[0].Attach(bob, mb)
	defer sub.Detach()
	mustDrained(t, mb)
	send(t, rs[1], []byte("first, on B")) // its wake is lost for now
	send(t, rs[0], []byte("second, on A"))
	waitIdle(t, sub)
	hub.SetDrop(nil)
	rs[0].Recheck() // the late news of B's commit
	mb.waitFor(t, sub, 2)
	var got []string
	mb.mu.Lock()
	for _, p := range mb.pushes {
		if p.Message != nil {
			got = append(got, string(p.Message.Payload))
		}
	}
	mb.mu.Unlock()
	if !slices.Equal(got, []string{"first, on B", "second, on A"}) {
		t.Fatalf("bob was pushed %q, want both, in seq order", got)
	}
}

// News of a connection that the device's current one here was dialed
// together with (one dial, two nodes) never supersedes it, whatever the two
// nodes' clocks say: the device closes the one it does not keep. News of
// a later dial does.
func TestPeerAttachedLeavesADialsSibling(t *testing.T) {
	_, rs := cluster(t, 2, router.Config{Recheck: -1})
	mb := newMailbox()
	sub := rs[0].AttachAt(bob, mb, dial(at(0, 3), 7))
	defer sub.Detach()
	rs[0].PeerAttached(bob, dial(at(5, 6), 7)) // began after this one was done, by the clocks
	rs[0].PeerAttached(bob, dial(at(1, 2), 7)) // done first, by the clocks
	rs[0].PeerAttached(bob, dial(at(20, 21), 6))
	if mb.superseded {
		t.Fatal("news of a sibling or an earlier dial elsewhere closed the connection here")
	}
	send(t, rs[0], []byte("still here"))
	mb.waitFor(t, sub, 1)
	rs[0].PeerAttached(bob, dial(at(1, 2), 8))
	if !mb.superseded {
		t.Fatal("news of a later dial elsewhere left this one open")
	}
}

// A message committed on node A while the device is connected there goes
// to that connection, and no wake crosses. If that connection then goes
// without acknowledging it, the device's connection on node B, whose pump
// has read its queue already, must get it (no periodic re-read here): when
// A's connection was a dial's sibling that the device closes (one dial's
// connections leave each other be), and when news of B's newer connection
// supersedes it.
func TestMessagesOfAClosedConnectionGoToTheOtherNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    router.Handshake // bob's connection on B; on A: dial(at(0, 3), 7)
	}{
		{"a dial's sibling closed", dial(at(1, 4), 7)},
		{"superseded by a newer dial", dial(at(5, 6), 8)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub, rs := cluster(t, 2, router.Config{Recheck: -1})
			onA, onB := newMailbox(), newMailbox()
			subA := rs[0].AttachAt(bob, onA, dial(at(0, 3), 7))
			defer subA.Detach()
			// A hears of B's connection only after the send.
			hub.SetDrop(func(m peertest.Msg) bool { return m.Kind == peertest.Attached })
			subB := rs[1].AttachAt(bob, onB, tc.b)
			defer subB.Detach()
			mustDrained(t, onB)
			hub.SetDrop(nil)

			send(t, rs[0], []byte("for bob"))
			onA.waitFor(t, subA, 1)
			if tc.b.Siblings(dial(at(0, 3), 7)) {
				subA.Detach() // the device closes the one it did not keep
			} else {
				rs[0].PeerAttached(bob, tc.b)
				if !onA.superseded {
					t.Fatal("news of a newer dial on B left A's connection current")
				}
			}
			onB.waitFor(t, subB, 1)
		})
	}
}

// News of a device's connection on another node supersedes its connection
// here only if that one replaces it (router.Handshake.Replaces): the news
// of an older one, or of a dial's losing sibling, arriving late, leaves
// the current connection alone.
func TestPeerAttachedOnlyWhenItReplaces(t *testing.T) {
	_, rs := cluster(t, 2, router.Config{Recheck: -1})
	mb := newMailbox()
	sub := rs[0].AttachAt(bob, mb, at(10, 13))
	defer sub.Detach()
	rs[0].PeerAttached(bob, at(0, 1))
	rs[0].PeerAttached(bob, at(11, 14)) // dialed at once, done later
	if mb.superseded {
		t.Fatal("news of an older or losing connection elsewhere closed the current one here")
	}
	send(t, rs[0], []byte("still here"))
	mb.waitFor(t, sub, 1)
	rs[0].PeerAttached(bob, at(20, 21))
	if !mb.superseded {
		t.Fatal("news of a newer connection elsewhere left this one open")
	}
}

// A wake for no device in particular (what the bus sends once it has a
// user's subscription) reads every connected device of the user; a wake
// for some devices reads only those.
func TestPeerWakeForNoDeviceWakesThemAll(t *testing.T) {
	hub, rs := cluster(t, 2, router.Config{Recheck: -1})
	hub.SetDrop(func(m peertest.Msg) bool { return m.Kind == peertest.Wake })
	mb := newMailbox()
	sub := rs[0].Attach(bob, mb)
	defer sub.Detach()
	other := rs[0].Attach(store.DeviceAddr{User: "bob", Device: 2}, newMailbox())
	defer other.Detach()
	mustDrained(t, mb)
	send(t, rs[1], []byte("woken")) // its own wake is dropped
	rs[0].PeerWake("bob", []uint32{2})
	waitIdle(t, sub, other)
	if n := len(mb.messages()); n != 0 {
		t.Fatalf("a wake for bob's device 2 pushed %d to device 1", n)
	}
	rs[0].PeerWake("bob", nil)
	mb.waitFor(t, sub, 1)
}

// The periodic re-read asks for a tick every Recheck/16 and reads one
// slot of devices per tick, the devices taking successive slots as they
// attach: a device whose wake was lost is read at its slot's tick, not
// before, and not later.
func TestRecheckReadsOneSlotPerTick(t *testing.T) {
	st := openStore(t)
	hub := peertest.NewHub()
	hub.SetDrop(func(m peertest.Msg) bool { return m.Kind == peertest.Wake })
	ticks := &router.RecheckTicks{Every: make(chan time.Duration, 1), C: make(chan time.Time)}
	a := router.New(router.WithRecheckTicks(router.Config{Store: st, Peers: hub.Node("A"), Recheck: 160 * time.Millisecond}, ticks))
	t.Cleanup(a.Close)
	b := router.New(router.Config{Store: st, Peers: hub.Node("B"), Recheck: -1})
	t.Cleanup(b.Close)
	if every := <-ticks.Every; every != 10*time.Millisecond {
		t.Fatalf("a tick every %v, want Recheck/16 = 10ms", every)
	}

	// Slots 0, 1 and 2, in the order of attaching.
	var subs []*router.Subscription
	var mbs []*mailbox
	for _, d := range []store.DeviceAddr{alice, {User: "bob", Device: 2}, bob} {
		mb := newMailbox()
		sub := a.Attach(d, mb)
		defer sub.Detach()
		mustDrained(t, mb)
		subs, mbs = append(subs, sub), append(mbs, mb)
	}
	bobSub, bobMB := subs[2], mbs[2]
	send(t, b, []byte("wake lost")) // alice → bob's device 1, committed on B

	// Slot 0, then slot 1: the loop takes the second tick only once the
	// first one's reads have begun.
	ticks.C <- time.Time{}
	ticks.C <- time.Time{}
	waitIdle(t, subs...)
	if n := len(bobMB.messages()); n != 0 {
		t.Fatalf("bob's device (slot 2) was read at the tick of slot 0 or 1: %d pushed", n)
	}
	ticks.C <- time.Time{}
	bobMB.waitFor(t, bobSub, 1)
}
