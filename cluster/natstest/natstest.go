// Package natstest runs real NATS servers (github.com/nats-io/nats-server,
// embedded) on loopback for tests: one alone, or several joined by routes
// into a NATS cluster. Only tests import it, so the NATS server is linked
// into test binaries only.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyWithin bounds the wait for servers to start and join: generous,
// since a loaded CI box can take seconds to form a JetStream cluster (a
// bound, not a verdict).
const readyWithin = 30 * time.Second

// Start runs one NATS server on a random loopback port until the test ends.
func Start(t testing.TB) *server.Server {
	t.Helper()
	return start(t, &server.Options{})
}

// Restart runs a new NATS server on s's port (s must be shut down): the
// server coming back after a crash.
func Restart(t testing.TB, s *server.Server) *server.Server {
	t.Helper()
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscan(u.Port(), &port)
	return start(t, &server.Options{Port: port})
}

// Cluster runs n NATS servers routed to each other (a full mesh), each on
// random loopback ports, until the test ends.
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	return ClusterOpts(t, n, Options{})
}

// Options say how ClusterOpts's servers run.
type Options struct {
	// JetStream enables JetStream on every server, each with its own store
	// directory that lasts as long as the test. ClusterOpts returns once
	// a JetStream meta leader knows every server.
	JetStream bool
	// SyncAlways makes a JetStream server fsync its Raft log before it
	// answers a write; without it, it fsyncs every 2 minutes (the
	// server's default sync_interval), and an acknowledgement means "in
	// the memory of a quorum".
	SyncAlways bool
}

// ClusterOpts is Cluster with options.
func ClusterOpts(t testing.TB, n int, opts Options) []*server.Server {
	t.Helper()
	var (
		srvs   []*server.Server
		routes []*url.URL
		ports  = make([]int, n)
	)
	if opts.JetStream {
		// A JetStream server refuses to start clustered without routes,
		// so the first cannot wait to be joined: every server is given
		// every server's route port (its own is ignored) before any runs.
		for i := range ports {
			ports[i] = freePort(t)
			routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])})
		}
	}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("nats%d", i+1),
			Cluster:    server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: -1, PoolSize: -1},
			Routes:     routes,
		}
		switch {
		case opts.JetStream:
			o.Cluster.Port = ports[i]
			o.JetStream, o.StoreDir, o.SyncAlways = true, t.TempDir(), opts.SyncAlways
		case i > 0:
			// Each joins the first, and learns the others from it.
			o.Routes = []*url.URL{{Scheme: "nats", Host: srvs[0].ClusterAddr().String()}}
		}
		srvs = append(srvs, start(t, o))
	}
	deadline := time.Now().Add(readyWithin)
	for _, s := range srvs {
		for s.NumRoutes() < n-1 {
			if time.Now().After(deadline) {
				t.Fatalf("NATS cluster: %s has %d routes, want %d", s.Name(), s.NumRoutes(), n-1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Stopped together: a JetStream server can take seconds to stop,
	// stopping every Raft group it is in. (Stop again is a no-op.)
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range srvs {
			wg.Go(func() { Stop(s) })
		}
		wg.Wait()
	})
	for opts.JetStream && !jetStreamReady(srvs) {
		if time.Now().After(deadline) {
			t.Fatalf("NATS cluster: JetStream not ready after %v", readyWithin)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return srvs
}

// jetStreamReady says whether one of srvs leads JetStream's meta group
// and knows every server as a peer online (until then, creating a
// replicated stream fails: "no suitable peers for placement").
func jetStreamReady(srvs []*server.Server) bool {
	for _, s := range srvs {
		if !s.JetStreamIsLeader() {
			continue
		}
		info, err := s.Jsz(nil)
		if err != nil || info.Meta == nil {
			return false
		}
		online := 0
		for _, p := range info.Meta.Replicas {
			if !p.Offline && p.Current {
				online++
			}
		}
		return online == len(srvs)-1
	}
	return false
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URLs joins the servers' client URLs with commas, as natsbus takes them.
func URLs(srvs ...*server.Server) string {
	var us []string
	for _, s := range srvs {
		us = append(us, s.ClientURL())
	}
	return strings.Join(us, ",")
}

// Stop shuts s down and waits until it has.
func Stop(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

func start(t testing.TB, o *server.Options) *server.Server {
	t.Helper()
	o.Host = "127.0.0.1"
	if o.Port == 0 {
		o.Port = -1
	}
	o.NoLog, o.NoSigs = true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(readyWithin) {
		t.Fatalf("NATS server not ready after %v", readyWithin)
	}
	t.Cleanup(func() { Stop(s) })
	return s
}
