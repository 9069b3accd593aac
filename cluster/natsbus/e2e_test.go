package natsbus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/magpie-im/magpie/cluster/natsbus"
	"github.com/magpie-im/magpie/cluster/natstest"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pebblestore"
	"github.com/magpie-im/magpie/transport"
)

// Several real Magpie servers in one process, each with its own router and
// NATS bus, and clients over real sockets on different nodes.
//
// The nodes share ONE store value: a Pebble store opened once. That stands
// in for the shared PostgreSQL database (store/pgstore, coming), which is
// what several nodes on several machines will share. Everything that
// crosses between nodes here goes through NATS; only the queues are shared.

const wait = 10 * time.Second

// prompt is how soon an item committed on one node must reach a device on
// another: far below the re-read interval of these tests (an hour), so
// only the wake can have brought it.
const prompt = 3 * time.Second

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// testCluster is the shared store and server key of a cluster's nodes.
type testCluster struct {
	st  store.Store
	key link.KeyPair
}

func newCluster(t *testing.T) *testCluster {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after every node (cleanups run last first)
	return &testCluster{st: st, key: servertest.NewKey(t)}
}

// node is one Magpie server of the cluster.
type node struct {
	name string
	bus  *natsbus.Bus
	inv  invite.Invite
}

func (c *testCluster) node(t *testing.T, name, natsURLs string) *node {
	t.Helper()
	return c.nodeWith(t, name, natsURLs, func(*server.Config) {})
}

// nodeWith is node with its server's Config changed by configure.
func (c *testCluster) nodeWith(t *testing.T, name, natsURLs string, configure func(*server.Config)) *node {
	t.Helper()
	bus, err := natsbus.Connect(natsbus.Options{URLs: natsURLs, Node: name, Cluster: "e2e", ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Key: c.key, Store: c.st, Peers: bus, Recheck: time.Hour,
		SignupBurst: 1000, MaxConnsPerNetwork: 100_000,
	}
	configure(&cfg)
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(c)
		if err := <-served; err != nil && !errors.Is(err, server.ErrServerClosed) {
			t.Error(err)
		}
		bus.Close() // after the server, whose router uses it
	})
	return &node{name: name, bus: bus, inv: invite.Invite{ServerKey: c.key.Public, Addrs: []string{ln.Addr().String()}}}
}

// user is a device of a user, connected to one node.
type user struct {
	name string
	key  link.KeyPair
	id   curve.KeyPair
	*clientconn.Conn
}

func (n *node) dial(t *testing.T, key link.KeyPair) *clientconn.Conn {
	t.Helper()
	c, err := clientconn.Dial(ctx(t), n.inv, key, clientconn.DialOptions{})
	if err != nil {
		t.Fatalf("dial %s: %v", n.name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// register creates user name on node n, with keys (so that group messages
// go to it), and waits for its empty queue to be pushed.
func (n *node) register(t *testing.T, name string) *user {
	t.Helper()
	u := &user{name: name, key: servertest.NewKey(t), id: servertest.NewIdentity(t)}
	u.Conn = n.dial(t, u.key)
	if _, err := u.Register(ctx(t), name); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetKeys(ctx(t), servertest.KeysUpload(t, u.id, 1, 1, 0)); err != nil {
		t.Fatal(err)
	}
	if p := servertest.NextPush(t, u.Conn, wait); !p.Drained {
		t.Fatalf("%s: first push %+v, want drained", name, p)
	}
	return u
}

// expect waits, at most within, for an envelope with payload (skipping
// drained markers and receipts), and acknowledges it if it is queued.
func expect(t *testing.T, c *clientconn.Conn, payload string, within time.Duration) *clientconn.Envelope {
	t.Helper()
	start := time.Now()
	for {
		e := servertest.NextEnvelope(t, c, wait)
		if e.Seq != 0 {
			if err := c.Ack(e.Seq); err != nil {
				t.Fatal(err)
			}
		}
		if string(e.Payload) != payload {
			if e.GroupChange {
				continue
			}
			t.Fatalf("got %q, want %q", e.Payload, payload)
		}
		if took := time.Since(start); took > within {
			t.Fatalf("%q took %v, want under %v", payload, took, within)
		}
		return e
	}
}

func send(t *testing.T, from *user, to, payload string) {
	t.Helper()
	if _, err := from.Send(ctx(t), to, clientconn.NewMessageID(), []byte(payload)); err != nil {
		t.Fatalf("%s → %s: %v", from.name, to, err)
	}
}

func TestClusterEndToEnd(t *testing.T) {
	ns := natstest.Start(t)
	c := newCluster(t)
	a, b := c.node(t, "A", ns.ClientURL()), c.node(t, "B", ns.ClientURL())
	bob := a.register(t, "bob")
	carol := a.register(t, "carol")
	alice := b.register(t, "alice")

	// A message committed on B reaches bob on A through the wake.
	id := clientconn.NewMessageID()
	if _, err := alice.Send(ctx(t), "bob", id, []byte("hello from B")); err != nil {
		t.Fatal(err)
	}
	expect(t, bob.Conn, "hello from B", prompt)
	// bob's ack, committed on A, queues a receipt that reaches alice on B.
	var rc *clientconn.Receipt
	for start := time.Now(); rc == nil; {
		rc = servertest.NextPush(t, alice.Conn, wait).Receipt
		if time.Since(start) > prompt {
			t.Fatal("the receipt was not prompt")
		}
	}
	if rc.ID != id || rc.Recipient != (clientconn.DeviceAddr{User: "bob", Device: 1}) {
		t.Fatalf("receipt %+v", rc)
	}
	alice.Ack(rc.Seq)

	// Typing crosses nodes.
	if _, err := alice.SendEphemeral(ctx(t), "bob", clientconn.NewMessageID(), []byte("typing")); err != nil {
		t.Fatal(err)
	}
	if e := expect(t, bob.Conn, "typing", prompt); !e.Ephemeral {
		t.Fatalf("typing arrived as %+v", e)
	}

	// A group created on B fans out to members on A; its typing too, and a
	// member on A reaches the one on B.
	gid, err := group.NewID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signed, _, err := group.Create(gid, "alice", alice.id, "Harbour",
		[]group.Member{{User: "bob", Key: bob.id.Public, Role: group.RoleMember}, {User: "carol", Key: carol.id.Public, Role: group.RoleMember}},
		group.Settings{}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GroupChange(ctx(t), gid, signed); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GroupSend(ctx(t), gid, clientconn.NewMessageID(), []byte("to the group"), false); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*user{bob, carol} {
		if e := expect(t, u.Conn, "to the group", prompt); e.Group != gid {
			t.Fatalf("%s: group message %+v", u.name, e)
		}
	}
	if _, err := alice.GroupSend(ctx(t), gid, clientconn.NewMessageID(), []byte("group typing"), true); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*user{bob, carol} {
		if e := expect(t, u.Conn, "group typing", prompt); !e.Ephemeral || e.Group != gid {
			t.Fatalf("%s: group typing %+v", u.name, e)
		}
	}
	if _, err := bob.GroupSend(ctx(t), gid, clientconn.NewMessageID(), []byte("from A"), false); err != nil {
		t.Fatal(err)
	}
	expect(t, alice.Conn, "from A", prompt)
	expect(t, carol.Conn, "from A", prompt)

	// bob connecting on B supersedes his connection on A; what is sent
	// next reaches the new one.
	bob2 := b.dial(t, bob.key)
	select {
	case <-bob.Done():
	case <-time.After(prompt):
		t.Fatal("bob's connection on A is still open after he connected on B")
	}
	send(t, carol, "bob", "from carol on A")
	expect(t, bob2, "from carol on A", prompt)
}

// A device that dials two nodes at once keeps the connection that answered
// it first and closes the other. The nodes' clocks disagree (B's is an
// hour ahead, then an hour behind): by them, the connection the device kept
// may look like the one on its way out, and the other node's news of its
// sibling closed it (the device stayed offline until it dialed again). Now
// the device's own stamp of the dial says they are siblings, and neither
// node closes either: the client closes the one it does not keep. Several
// dials, so that each node's connection is the kept one in some.
func TestClusterDialSiblingsKeepTheChosenOne(t *testing.T) {
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(fmt.Sprint("B ", skew), func(t *testing.T) {
			ns := natstest.Start(t)
			c := newCluster(t)
			a := c.node(t, "A", ns.ClientURL())
			b := c.nodeWith(t, "B", ns.ClientURL(), func(cfg *server.Config) {
				cfg.Now = func() time.Time { return time.Now().Add(skew) }
			})
			alice := a.register(t, "alice")
			bob := b.register(t, "bob")
			bob.Close()
			var eps []endpoints.Endpoint
			for _, n := range []*node{a, b} {
				eps = append(eps, endpoints.Endpoint{Transport: transport.TCP, Address: n.inv.Addrs[0], Priority: 100})
			}
			kept := map[string]int{}
			for i := range 8 {
				conn, e, err := clientconn.DialEndpoints(ctx(t), c.key.Public, eps, bob.key, clientconn.DialOptions{Stagger: time.Nanosecond})
				if err != nil {
					t.Fatal(err)
				}
				kept[e.Address]++
				payload := fmt.Sprint("after dial ", i)
				send(t, alice, "bob", payload)
				// What the previous connection got but had not acked as it
				// closed comes again.
				for start := time.Now(); ; {
					e := servertest.NextEnvelope(t, conn, wait)
					if err := conn.Ack(e.Seq); err != nil {
						t.Fatal(err)
					}
					if string(e.Payload) == payload {
						break
					}
					if !strings.HasPrefix(string(e.Payload), "after dial ") || time.Since(start) > prompt {
						t.Fatalf("dial %d: got %q after %v, want %q", i, e.Payload, time.Since(start), payload)
					}
				}
				conn.Close()
			}
			t.Logf("kept A's connection %d times, B's %d", kept[a.inv.Addrs[0]], kept[b.inv.Addrs[0]])
		})
	}
}

// TestClusterSurvivesNATSFailure kills the NATS server that node A is
// connected to, in a 3-server NATS cluster, while alice (on B) writes to
// bob (on A): A's bus moves to another NATS server, and every message
// reaches bob, in order, though wakes were lost meanwhile (the re-read
// after the reconnect finds them; the periodic one is an hour away).
func TestClusterSurvivesNATSFailure(t *testing.T) {
	srvs := natstest.Cluster(t, 3)
	c := newCluster(t)
	urls := natstest.URLs(srvs...)
	a, b := c.node(t, "A", urls), c.node(t, "B", urls)
	bob := a.register(t, "bob")
	alice := b.register(t, "alice")
	send(t, alice, "bob", "before")
	expect(t, bob.Conn, "before", prompt)
	send(t, bob, "alice", "before too")
	expect(t, alice.Conn, "before too", prompt)

	// The NATS server A is on; if it is B's too, B moves as well.
	var dead *natsserver.Server
	for _, s := range srvs {
		if s.ClientURL() == a.bus.ConnectedURL() {
			dead = s
		}
	}
	if dead == nil {
		t.Fatalf("A is connected to %q, none of %s", a.bus.ConnectedURL(), urls)
	}

	const n = 200
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if i == n/4 {
				natstest.Stop(dead)
			}
			_, err := alice.Send(context.Background(), "bob", clientconn.NewMessageID(), fmt.Appendf(nil, "m%d", i))
			if err != nil {
				sent <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		sent <- nil
	}()
	for i := range n {
		expect(t, bob.Conn, fmt.Sprintf("m%d", i), wait)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if a.bus.ConnectedURL() == "" || a.bus.ConnectedURL() == dead.ClientURL() {
		t.Fatalf("A's bus is on %q", a.bus.ConnectedURL())
	}
	// After the failover, delivery is prompt again, both ways.
	send(t, alice, "bob", "after")
	expect(t, bob.Conn, "after", prompt)
	send(t, bob, "alice", "after too")
	expect(t, alice.Conn, "after too", prompt)
}

// A group changed through one node is the group every node sends to: a
// member removed through B gets nothing that bob sends through A next,
// though A knew the group with her in it.
func TestClusterGroupChangeSeenByEveryNode(t *testing.T) {
	ns := natstest.Start(t)
	c := newCluster(t)
	a, b := c.node(t, "A", ns.ClientURL()), c.node(t, "B", ns.ClientURL())
	bob := a.register(t, "bob")
	carol := a.register(t, "carol")
	alice := b.register(t, "alice")
	gid, err := group.NewID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signed, st, err := group.Create(gid, "alice", alice.id, "Harbour",
		[]group.Member{{User: "bob", Key: bob.id.Public, Role: group.RoleMember}, {User: "carol", Key: carol.id.Public, Role: group.RoleMember}},
		group.Settings{}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GroupChange(ctx(t), gid, signed); err != nil {
		t.Fatal(err)
	}
	// A loads the group, carol in it.
	if _, err := bob.GroupSend(ctx(t), gid, clientconn.NewMessageID(), []byte("before"), false); err != nil {
		t.Fatal(err)
	}
	expect(t, carol.Conn, "before", prompt)
	expect(t, alice.Conn, "before", prompt)

	remove, err := st.Propose("alice", alice.id, group.Remove{User: "carol"}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GroupChange(ctx(t), gid, remove); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.GroupSend(ctx(t), gid, clientconn.NewMessageID(), []byte("after"), false); err != nil {
		t.Fatal(err)
	}
	expect(t, alice.Conn, "after", prompt)
	// What bob sends carol next comes right after her removal notice:
	// "after" was not queued for her in between.
	send(t, bob, "carol", "marker")
	expect(t, carol.Conn, "marker", prompt)
}
