package natsbus_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/cluster/natsbus"
	"github.com/magpie-im/magpie/cluster/natstest"
	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is an Inbound that writes down what the bus hands it.
type recorder struct {
	mu     sync.Mutex
	events []string
	eph    []*router.Ephemeral
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) PeerWake(user string, devices []uint32) {
	r.add(fmt.Sprintf("wake %s %v", user, devices))
}
func (r *recorder) PeerAttached(d store.DeviceAddr, h router.Handshake) {
	r.add(fmt.Sprint("attached ", d.User, " ", d.Device, " ", h.Began.UnixNano(), " ", h.Done.UnixNano()))
}
func (r *recorder) Recheck() { r.add("recheck") }
func (r *recorder) PeerEphemeral(to string, e *router.Ephemeral) int {
	r.mu.Lock()
	r.eph = append(r.eph, e)
	r.mu.Unlock()
	r.add(fmt.Sprintf("ephemeral %s %q", to, e.Payload))
	return 1
}
func (r *recorder) PeerPush(d store.DeviceAddr, p router.Push) bool {
	if p.KeysLow != nil {
		r.add(fmt.Sprint("keyslow ", d.User, " ", d.Device, " ", p.KeysLow.PreKeys))
	} else {
		r.add(fmt.Sprintf("push %s %d %q", d.User, d.Device, p.Ephemeral.Payload))
	}
	return true
}

// waitFor waits until the recorder has seen event e, and returns every
// event up to it (and takes them off).
// seen reports whether e has come (and forgets what came up to it).
func (r *recorder) seen(e string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.Index(r.events, e)
	if i >= 0 {
		r.events = r.events[i+1:]
	}
	return i >= 0
}

func (r *recorder) waitFor(t *testing.T, e string) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if i := slices.Index(r.events, e); i >= 0 {
			got := slices.Clone(r.events[:i+1])
			r.events = r.events[i+1:]
			r.mu.Unlock()
			return got
		}
		r.mu.Unlock()
		select {
		case <-r.signal:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("no %q within 10s; have %q", e, r.events)
		}
	}
}

func connect(t *testing.T, urls, node string) (*natsbus.Bus, *recorder) {
	t.Helper()
	return connectWith(t, natsbus.Options{URLs: urls, Node: node})
}

func connectWith(t *testing.T, o natsbus.Options) (*natsbus.Bus, *recorder) {
	t.Helper()
	o.Cluster, o.ReconnectWait = "test", 50*time.Millisecond
	b, err := natsbus.Connect(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	rec := newRecorder()
	b.Bind(rec)
	return b, rec
}

// listen makes b listen for user, and waits until its subscription is on
// the server (the bus then wakes the user's local devices).
func listen(t *testing.T, b *natsbus.Bus, rec *recorder, user string) {
	t.Helper()
	b.Listen(user)
	rec.waitFor(t, "wake "+user+" []")
}

func TestBusDelivers(t *testing.T) {
	ns := natstest.Start(t)
	regA := prometheus.NewPedanticRegistry()
	a, recA := connectWith(t, natsbus.Options{URLs: ns.ClientURL(), Node: "A", Registerer: regA})
	b, _ := connect(t, ns.ClientURL(), "B")
	listen(t, a, recA, "bob")
	listen(t, a, recA, "carol")

	sent := time.Now()
	e := &router.Ephemeral{From: store.DeviceAddr{User: "alice", Device: 1}, Payload: []byte("typing"), Sent: sent, ClientID: [16]byte{7}}
	b.Wake([]store.DeviceAddr{{User: "bob", Device: 1}, {User: "bob", Device: 2}, {User: "dave", Device: 1}})
	b.Attached(store.DeviceAddr{User: "bob", Device: 2}, router.Handshake{Began: time.Unix(0, 1000), Done: time.Unix(0, 1234)})
	b.Ephemeral("bob", e)
	b.Ephemeral("dave", e) // nobody listens for dave
	b.Push(store.DeviceAddr{User: "bob", Device: 1}, router.Push{KeysLow: &store.KeyCounts{PreKeys: 4}})
	b.Push(store.DeviceAddr{User: "bob", Device: 2}, router.Push{Ephemeral: &router.Ephemeral{From: e.From, Payload: []byte("group typing"), Group: [16]byte{1}}})
	a.Wake([]store.DeviceAddr{{User: "bob", Device: 1}}) // A's own: not for A
	b.Wake([]store.DeviceAddr{{User: "carol", Device: 5}})
	got := recA.waitFor(t, "wake carol [5]")
	want := []string{"wake bob [1 2]", "attached bob 2 1000 1234", `ephemeral bob "typing"`, "keyslow bob 1 4", `push bob 2 "group typing"`, "wake carol [5]"}
	if !slices.Equal(got, want) {
		t.Fatalf("A got\n%q\nwant\n%q", got, want)
	}
	if g := recA.eph[0]; g.From != e.From || g.ClientID != e.ClientID || !g.Sent.Equal(sent) {
		t.Fatalf("ephemeral %+v, sent %+v", g, e)
	}

	// After Unlisten, bob's messages no longer come. The unsubscription
	// is applied in the background; once it has been, the client drops
	// whatever the server still sends for it.
	a.Unlisten("bob")
	waitGauge(t, regA, "magpie_cluster_subscriptions", 1)
	b.Wake([]store.DeviceAddr{{User: "bob", Device: 1}})
	b.Wake([]store.DeviceAddr{{User: "carol", Device: 6}})
	if got := recA.waitFor(t, "wake carol [6]"); len(got) != 1 {
		t.Fatalf("after Unlisten(bob), A got %q", got)
	}
}

// waitGauge waits until the gauge name in reg reads want.
func waitGauge(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got float64 = -1
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.GetMetric()) == 1 {
				got = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v after 10s, want %v", name, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// After a reconnect, a node re-reads its devices' queues, and so does every
// other node (what it published while cut off may be lost).
func TestBusReconnectRechecks(t *testing.T) {
	ns := natstest.Start(t)
	a, recA := connect(t, ns.ClientURL(), "A")
	c, recC := connect(t, ns.ClientURL(), "C")
	listen(t, a, recA, "bob")

	natstest.Stop(ns)
	natstest.Restart(t, ns)
	recA.waitFor(t, "recheck")
	recC.waitFor(t, "recheck")
	// After the reconnect the subscriptions are back. Either node may be
	// the last to reconnect (the recheck each saw may be the other's), and
	// a wake published before A's subscription is back is lost by design:
	// so wake again until one comes.
	deadline := time.Now().Add(10 * time.Second)
	for !recA.seen("wake bob [1]") {
		if time.Now().After(deadline) {
			t.Fatal("A's subscription to bob's news did not come back after the reconnect")
		}
		c.Wake([]store.DeviceAddr{{User: "bob", Device: 1}})
		time.Sleep(20 * time.Millisecond)
	}
}

// subscribedCheck is an Inbound that, when the bus wakes a user's local
// devices after subscribing, asks the NATS server whether it has the
// subscription yet.
type subscribedCheck struct {
	*recorder
	ns         *server.Server
	subject    string
	subscribed chan bool
}

func (c *subscribedCheck) PeerWake(user string, devices []uint32) {
	if devices == nil {
		sz, err := c.ns.Subsz(&server.SubszOptions{Subscriptions: true, Test: c.subject})
		c.subscribed <- err == nil && sz.Total > 0
	}
	c.recorder.PeerWake(user, devices)
}

// The wake after Listen comes only once the NATS server has the new
// subscription: a device re-reads its queue then, so a wake another node
// publishes after that re-read is not lost.
func TestListenWakesOnceTheServerHasTheSubscription(t *testing.T) {
	ns := natstest.Start(t)
	b, rec := connect(t, ns.ClientURL(), "A")
	check := &subscribedCheck{recorder: rec, ns: ns, subject: "magpie.test.u.bob", subscribed: make(chan bool, 1)}
	b.Bind(check)
	b.Listen("bob")
	select {
	case ok := <-check.subscribed:
		if !ok {
			t.Fatal("the bus woke bob's devices before the server had the subscription")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no wake within 10s of Listen")
	}
}
