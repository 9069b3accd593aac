package natsbus

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/magpie-im/magpie/cluster/natstest"
	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
)

// Zero options take the documented defaults; options that are set are
// kept; a cluster name unfit for a subject is refused.
func TestOptionDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if got.Cluster != "magpie" || got.Node != host || got.Logger == nil || got.ReconnectWait != time.Second ||
		got.Queue != 16_384 || got.ConnectTimeout != 5*time.Second {
		t.Fatalf("defaults: %+v", got)
	}
	set := Options{URLs: "nats://x", Cluster: "c-1_" + strings.Repeat("c", 60), Node: "n1", ReconnectWait: 7 * time.Millisecond, Queue: 3, ConnectTimeout: 9 * time.Millisecond}
	got, err = set.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	got.Logger = nil
	if got != set {
		t.Fatalf("options set: %+v, kept as %+v", set, got)
	}
	for _, bad := range []string{"a.b", "a b", "*", ">", strings.Repeat("c", 65)} {
		if _, err := (Options{Cluster: bad}).withDefaults(); err == nil {
			t.Errorf("cluster name %q accepted", bad)
		}
	}
}

// The NATS client retries its servers for ever (a node must come back
// after any outage), is named for the node, does not hear its own
// messages, and waits as configured.
func TestNATSOptions(t *testing.T) {
	o, err := Options{Node: "n1", ReconnectWait: 7 * time.Millisecond, ConnectTimeout: 9 * time.Millisecond}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	no := nats.GetDefaultOptions()
	for _, opt := range (&Bus{}).natsOptions(o) {
		if err := opt(&no); err != nil {
			t.Fatal(err)
		}
	}
	if no.MaxReconnect != -1 || no.Name != "magpie n1" || !no.NoEcho || no.ReconnectWait != 7*time.Millisecond || no.Timeout != 9*time.Millisecond {
		t.Fatalf("NATS options: max reconnects %d, name %q, no echo %v, reconnect wait %v, timeout %v",
			no.MaxReconnect, no.Name, no.NoEcho, no.ReconnectWait, no.Timeout)
	}
}

// bareBus is a Bus without a connection: what it would publish stays in
// its queue.
func bareBus() *Bus {
	return &Bus{userPf: "magpie.t.u.", out: make(chan outMsg, 16), m: newMetrics(nil)}
}

// queued takes the messages waiting to be published, decoded.
func (b *Bus) queued(t *testing.T) (subjects []string, msgs []*message) {
	t.Helper()
	for {
		select {
		case o := <-b.out:
			m, err := decode(o.data)
			if err != nil {
				t.Fatalf("queued for %s: %v", o.subj, err)
			}
			subjects, msgs = append(subjects, o.subj), append(msgs, m)
		default:
			return subjects, msgs
		}
	}
}

// A wake for more devices of one user than a message may carry is split
// into messages of at most maxDevices, one user per message; a user unfit
// for a subject is left out.
func TestWakeSplitsAtMaxDevices(t *testing.T) {
	b := bareBus()
	var devs []store.DeviceAddr
	for i := range maxDevices + 1 {
		devs = append(devs, store.DeviceAddr{User: "bob", Device: uint32(i)})
	}
	devs = append(devs, store.DeviceAddr{User: "bo.b", Device: 1}, store.DeviceAddr{User: "carol", Device: 1})
	b.Wake(devs)
	subjects, msgs := b.queued(t)
	want := []struct {
		user string
		n    int
	}{{"bob", maxDevices}, {"bob", 1}, {"carol", 1}}
	if len(msgs) != len(want) {
		t.Fatalf("%d messages queued, want %d", len(msgs), len(want))
	}
	for i, w := range want {
		if msgs[i].kind != kindWake || msgs[i].user != w.user || len(msgs[i].devices) != w.n || subjects[i] != "magpie.t.u."+w.user {
			t.Errorf("message %d: %s wake for %s, %d devices; want %s, %d", i, subjects[i], msgs[i].user, len(msgs[i].devices), w.user, w.n)
		}
	}
	if got := msgs[1].devices[0]; got != maxDevices {
		t.Errorf("the second message wakes device %d, want %d", got, maxDevices)
	}
}

// An ephemeral with a payload for each of maxDevices devices crosses,
// directly or as a push; one with more is dropped (the decoder would
// refuse it).
func TestPerDevicePayloadsUpToMaxDevices(t *testing.T) {
	payloads := func(n int) map[uint32][]byte {
		m := make(map[uint32][]byte, n)
		for i := range n {
			m[uint32(i)] = []byte{byte(i)}
		}
		return m
	}
	from := store.DeviceAddr{User: "alice", Device: 1}
	bob := store.DeviceAddr{User: "bob", Device: 2}
	b := bareBus()
	most := &router.Ephemeral{From: from, Payloads: payloads(maxDevices)}
	b.Ephemeral("bob", most)
	b.Push(bob, router.Push{Ephemeral: most})
	_, msgs := b.queued(t)
	if len(msgs) != 2 || len(msgs[0].eph.Payloads) != maxDevices || len(msgs[1].eph.Payloads) != maxDevices {
		t.Fatalf("%d payloads: %d messages queued, want 2", maxDevices, len(msgs))
	}
	tooMany := &router.Ephemeral{From: from, Payloads: payloads(maxDevices + 1)}
	b.Ephemeral("bob", tooMany)
	b.Push(bob, router.Push{Ephemeral: tooMany})
	if _, msgs := b.queued(t); len(msgs) != 0 {
		t.Fatalf("%d payloads: %d messages queued, want none", maxDevices+1, len(msgs))
	}
}

// A message of exactly maxMessage bytes is queued; a byte more is dropped
// and counted.
func TestSendBoundIsInclusive(t *testing.T) {
	b := bareBus()
	b.send(kindWake, "s", make([]byte, maxMessage))
	b.send(kindWake, "s", make([]byte, maxMessage+1))
	if n := len(b.out); n != 1 {
		t.Fatalf("%d messages queued, want 1", n)
	}
	if o := <-b.out; len(o.data) != maxMessage {
		t.Fatalf("queued %d bytes, want %d", len(o.data), maxMessage)
	}
	if n := testutil.ToFloat64(b.m.dropped.WithLabelValues("too_large")); n != 1 {
		t.Fatalf("dropped as too large: %v, want 1", n)
	}
}

// The publisher sends a message as large as the NATS server takes, drops
// (and counts) one a byte larger, and counts what it published.
func TestPublishUpToTheServersMaxPayload(t *testing.T) {
	ns := natstest.Start(t)
	b, err := Connect(Options{URLs: ns.ClientURL(), Cluster: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("magpie.t.u.bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	most := int(b.nc.MaxPayload())
	if most >= maxMessage {
		t.Fatalf("the server takes %d bytes, more than a message may have (%d): this test needs a smaller limit", most, maxMessage)
	}
	b.send(kindEphemeral, "magpie.t.u.bob", bytes.Repeat([]byte{1}, most+1))
	b.send(kindEphemeral, "magpie.t.u.bob", bytes.Repeat([]byte{2}, most))
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("the message of the server's maximum size: %v", err)
	}
	if len(msg.Data) != most || msg.Data[0] != 2 {
		t.Fatalf("received %d bytes of %d, want %d of 2", len(msg.Data), msg.Data[0], most)
	}
	if n := testutil.ToFloat64(b.m.dropped.WithLabelValues("too_large")); n != 1 {
		t.Errorf("dropped as too large: %v, want 1", n)
	}
	if n := testutil.ToFloat64(b.m.out.WithLabelValues("ephemeral")); n != 1 {
		t.Errorf("published: %v, want 1", n)
	}
	if n := testutil.ToFloat64(b.m.dropped.WithLabelValues("publish")); n != 0 {
		t.Errorf("failed publishes: %v, want 0", n)
	}
}
