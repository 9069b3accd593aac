package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/cluster/natstest"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/pgtest"
	"github.com/magpie-im/magpie/invite"
)

// failoverBound is how soon a device whose node died must be talking to
// another node (issue 22: "within 5 s").
const failoverBound = 5 * time.Second

// clusterTest is a Magpie cluster on loopback with every part real: n
// `magpie serve` processes on one PostgreSQL database (internal/pgtest)
// and a three-server NATS cluster (embedded nats-server, routed).
type clusterTest struct {
	t     *testing.T
	db    string
	nats  []*natsserver.Server
	addrs []string // node i listens on addrs[i]
	datas []string
	nodes []*server
}

func newClusterTest(t *testing.T, n int) *clusterTest {
	t.Helper()
	c := &clusterTest{t: t, nodes: make([]*server, n)}
	// The nodes migrate the schema themselves, as in production.
	c.db = pgtest.NewDatabase(t, "cluster", func(string) error { return nil })
	c.nats = natstest.Cluster(t, 3)
	for range n {
		c.addrs = append(c.addrs, freeAddr(t))
		c.datas = append(c.datas, t.TempDir())
	}
	// The first node makes the server key; the others get a copy, as an
	// operator does (docs/OPERATIONS.md).
	c.start(0)
	key, err := os.ReadFile(filepath.Join(c.datas[0], "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		if err := os.WriteFile(filepath.Join(c.datas[i], "server.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
		c.start(i)
	}
	return c
}

// start starts node i, or starts it again after it died.
func (c *clusterTest) start(i int) {
	c.t.Helper()
	if old := c.nodes[i]; old != nil {
		c.nodes[i] = old.restart(c.t)
		return
	}
	extra := []string{"--store", c.db, "--cluster", natstest.URLs(c.nats...), "--node", fmt.Sprintf("node%d", i+1), "--admin="}
	for _, a := range c.addrs {
		extra = append(extra, "--advertise", a)
	}
	s, err := startServeWith(c.t, c.datas[i], extra, c.addrs[i])
	if err != nil {
		c.t.Fatalf("node %d: %v", i+1, err)
	}
	c.nodes[i] = s
}

// nodeOf is the node whose address is endpoint key k ("tcp://addr"), or -1.
func (c *clusterTest) nodeOf(k string) int {
	for i, a := range c.addrs {
		if k == "tcp://"+a {
			return i
		}
	}
	return -1
}

// firstNode is the node a new device with this home dials first: the
// invite's endpoints ordered as the client orders them (by its device
// key, endpoints.Memory.Spread).
func (c *clusterTest) firstNode(home string) int {
	c.t.Helper()
	cl, err := client.Open(c.t.Context(), client.Options{Home: home, Unlocker: testUnlocker})
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	inv, err := invite.Parse(c.nodes[0].invite)
	if err != nil {
		c.t.Fatal(err)
	}
	eps, err := clientconn.InviteEndpoints(inv, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	key := cl.PublicKey()
	return c.nodeOf(endpoints.Order(eps, endpoints.Memory{Spread: key[:]}, false)[0].Key())
}

// userOn makes a user whose device dials node first, trying new devices
// until one does (each lands on a given node with probability 1/n).
func (c *clusterTest) userOn(node int, name string) string {
	c.t.Helper()
	for try := range 40 {
		home := filepath.Join(c.t.TempDir(), fmt.Sprintf("%s-%d", name, try))
		mustRun(c.t, "--home", home, "init", "--invite", c.nodes[0].invite)
		if c.firstNode(home) == node {
			mustRun(c.t, "--home", home, "register", name)
			return home
		}
	}
	c.t.Fatalf("no device of 40 dials node %d first: the client does not spread devices", node+1)
	return ""
}

// receiver is bob: an engine in the test process that records every
// message shown to him and every node he connects to.
type receiver struct {
	cl     *client.Client
	mu     sync.Mutex
	got    map[string]int
	states []client.Status
	news   chan struct{}
}

func startReceiver(t *testing.T, home string) *receiver {
	t.Helper()
	cl, err := client.Open(t.Context(), client.Options{Home: home, Unlocker: testUnlocker})
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{cl: cl, got: map[string]int{}, news: make(chan struct{}, 1)}
	sub := cl.Subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { cl.Run(ctx) })
	wg.Go(func() {
		for ev := range sub.Events() {
			r.mu.Lock()
			switch {
			case ev.Kind == client.EventMessage && !ev.Message.Outgoing:
				r.got[ev.Message.Text]++
			case ev.Kind == client.EventState:
				r.states = append(r.states, ev.Status)
			case ev.Kind == client.EventResync:
				t.Errorf("bob's subscription fell behind: the count of what he was shown is incomplete")
			}
			r.mu.Unlock()
			select {
			case r.news <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		cl.Close() // closes sub
		wg.Wait()
	})
	return r
}

// endpoint is where bob's engine is connected now.
func (r *receiver) endpoint() string { return r.cl.Status().Endpoint }

// waitFor waits until cond holds of what bob was shown.
func (r *receiver) waitFor(t *testing.T, d time.Duration, what string, cond func(got map[string]int) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		ok := cond(r.got)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.news:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("bob: timed out waiting for %s", what)
		}
	}
}

// waitUntil polls cond every few milliseconds for up to d and says how
// long it took, or fails.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// Three nodes on one PostgreSQL and a three-server NATS cluster, clients
// spread over them by their device keys. While four senders write to bob
// across nodes, bob's node is SIGKILLed: bob and the senders on that node
// are talking to another node within 5 s, and the others never stop. The
// node restarts and rejoins: a new device that dials it first reaches
// bob on another node. Then the NATS server with the most Magpie nodes on
// it is shut down, and messages still flow. Everything acknowledged
// reaches bob's app, each message exactly once, and so does everything
// else once the outboxes are flushed.
func TestClusterSurvivesTheLossOfANode(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster: not in -short")
	}
	c := newClusterTest(t, 3)

	// bob on node 1; a sender on each node, one more on node 2.
	bobHome := c.userOn(0, "bob")
	var senders []*sender
	for i, node := range []int{0, 1, 2, 1} {
		name := []string{"alice", "carol", "dave", "erin"}[i]
		senders = append(senders, &sender{name: name, home: c.userOn(node, name)})
	}
	bob := startReceiver(t, bobHome)

	g := startSending(t, senders)
	acks, fails := &g.acks, &g.fails

	// Messages flow across nodes, and each device is where its key says.
	waitCount(t, acks, 40, "sends before the kill")
	bob.waitFor(t, eventTimeout, "a message from each node's sender", func(got map[string]int) bool {
		n := 0
		for _, s := range senders[:3] {
			for text := range got {
				if strings.HasPrefix(text, s.name+"-") {
					n++
					break
				}
			}
		}
		return n == 3
	})
	if n := c.nodeOf(bob.endpoint()); n != 0 {
		t.Fatalf("bob is on node %d (%s), his key says node 1", n+1, bob.endpoint())
	}
	for i, s := range senders {
		want := []int{0, 1, 2, 1}[i]
		if n := c.nodeOf(s.endpoint()); n != want {
			t.Fatalf("%s is on node %d (%q), its key says node %d", s.name, n+1, s.endpoint(), want+1)
		}
	}

	// SIGKILL bob's node, which alice is on too.
	killAt := time.Now()
	c.nodes[0].kill()
	waitUntil(t, failoverBound, "bob on another node", func() bool { return c.nodeOf(bob.endpoint()) > 0 })
	bobMoved := time.Since(killAt)
	waitUntil(t, failoverBound-bobMoved, "alice on another node", func() bool { return c.nodeOf(senders[0].endpoint()) > 0 })
	aliceMoved := time.Since(killAt)
	// Every sender has a send acknowledged after the kill, within the bound.
	for _, s := range senders {
		waitUntil(t, failoverBound-time.Since(killAt), s.name+"'s first send acknowledged after the kill", func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, r := range s.records {
				if r.err == nil && r.end.After(killAt) {
					return true
				}
			}
			return false
		})
		t.Logf("%s: a send acknowledged %v after the kill", s.name, time.Since(killAt).Round(time.Millisecond))
	}
	t.Logf("node 1 killed: bob on node %d after %v, alice on node %d after %v",
		c.nodeOf(bob.endpoint())+1, bobMoved.Round(time.Millisecond), c.nodeOf(senders[0].endpoint())+1, aliceMoved.Round(time.Millisecond))
	waitCount(t, acks, acks.Load()+40, "sends with node 1 down")

	// Node 1 comes back and rejoins: frank, whose device dials it first,
	// writes to bob, who is on another node now.
	c.start(0)
	frank := c.userOn(0, "frank")
	mustRun(t, "--home", frank, "send", "bob", "frank via the restarted node")
	bob.waitFor(t, eventTimeout, "frank's message through the restarted node", func(got map[string]int) bool {
		return got["frank via the restarted node"] == 1
	})

	// A NATS server goes: the one the most Magpie nodes are connected to.
	victim := c.nats[0]
	for _, ns := range c.nats[1:] {
		if ns.NumClients() > victim.NumClients() {
			victim = ns
		}
	}
	t.Logf("shutting down NATS server %s (%d clients)", victim.Name(), victim.NumClients())
	natstest.Stop(victim)
	natsAt := acks.Load()
	waitCount(t, acks, natsAt+60, "sends after a NATS server died")

	g.stopAndFlush(t)

	// Every message attempted (acknowledged or flushed from an outbox)
	// reaches bob's app exactly once.
	attempted := map[string]bool{}
	acked := 0
	for _, s := range senders {
		for _, r := range s.records {
			attempted[r.text] = true
			if r.err == nil {
				acked++
			}
		}
	}
	missing := func() []string {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		var out []string
		for text := range attempted {
			if bob.got[text] == 0 {
				out = append(out, text)
			}
		}
		slices.Sort(out)
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if m := missing(); len(m) > 0 {
		t.Errorf("bob was never shown %d of the %d messages sent: %v", len(m), len(attempted), m[:min(len(m), 20)])
	}
	bob.mu.Lock()
	defer bob.mu.Unlock()
	for text, n := range bob.got {
		switch {
		case n > 1:
			t.Errorf("bob was shown %q %d times", text, n)
		case !attempted[text] && text != "frank via the restarted node":
			t.Errorf("bob was shown %q, which nobody sent", text)
		}
	}
	t.Logf("%d sends attempted, %d acknowledged, %d failed while a node was down; bob was shown %d distinct messages",
		len(attempted), acked, fails.Load(), len(bob.got))
}

// Nodes of a cluster must share a database: --cluster on an embedded
// store is refused, and says what to add.
func TestClusterNeedsASharedStore(t *testing.T) {
	mustFail(t, []string{"--cluster needs", "--store postgres://"}, "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--cluster", "nats://127.0.0.1:4222")
}
