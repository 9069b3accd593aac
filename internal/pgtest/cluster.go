package pgtest

import (
	"os"
	"syscall"
	"testing"
)

// Cluster is a PostgreSQL cluster of one test's own, for tests that take
// the database away under a running server and bring it back.
type Cluster struct {
	t testing.TB
	s *server
}

// NewCluster starts a throwaway cluster for t alone (fsync as o says),
// stopped and removed when t ends. Without PostgreSQL's programs it skips
// t, or fails it with MAGPIE_REQUIRE_POSTGRES=1; MAGPIE_POSTGRES_URL does
// not help, since the test must be able to stop the server.
func NewCluster(t testing.TB, o Options) *Cluster {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		if os.Getenv("MAGPIE_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("pgtest: %v, and MAGPIE_REQUIRE_POSTGRES=1", err)
		}
		t.Skipf("pgtest: %v (install postgresql-15)", err)
	}
	s, err := start(bin, o)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c := &Cluster{t: t, s: s}
	t.Cleanup(func() {
		if c.s.cmd.ProcessState == nil { // running
			if err := c.s.halt(syscall.SIGINT); err != nil {
				t.Errorf("pgtest: %v", err)
			}
		}
		if err := os.RemoveAll(c.s.dir); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// URL is the URL of the cluster's postgres database.
func (c *Cluster) URL() string { return c.s.url() }

// Crash stops the cluster as a crash of its server would: an immediate
// shutdown, with no checkpoint, so that Start recovers from the WAL.
func (c *Cluster) Crash() {
	c.t.Helper()
	if err := c.s.halt(syscall.SIGQUIT); err != nil {
		c.t.Fatalf("pgtest: crash: %v", err)
	}
}

// Start starts the cluster again on its data, after Crash.
func (c *Cluster) Start() {
	c.t.Helper()
	if err := c.s.launch(); err != nil {
		c.t.Fatalf("pgtest: start: %v", err)
	}
}
