// Package natstest runs real NATS servers (github.com/nats-io/nats-server,
// embedded) on loopback for tests: one alone, or several joined by routes
// into a NATS cluster. Only tests import it, so the NATS server is linked
// into test binaries only.
package natstest

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

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
	var srvs []*server.Server
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("nats%d", i+1),
			Cluster:    server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: -1, PoolSize: -1},
		}
		if i > 0 {
			// Each joins the first, and learns the others from it.
			o.Routes = []*url.URL{{Scheme: "nats", Host: srvs[0].ClusterAddr().String()}}
		}
		srvs = append(srvs, start(t, o))
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range srvs {
		for s.NumRoutes() < n-1 {
			if time.Now().After(deadline) {
				t.Fatalf("NATS cluster: %s has %d routes, want %d", s.Name(), s.NumRoutes(), n-1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return srvs
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
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready after 10s")
	}
	t.Cleanup(func() { Stop(s) })
	return s
}
