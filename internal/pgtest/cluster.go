package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
	return newCluster(t, o, func(*server) {})
}

// newCluster is NewCluster with the server's configuration changed by
// configure before it first starts.
func newCluster(t testing.TB, o Options, configure func(*server)) *Cluster {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		skipWithout(t, err, "install postgresql-15")
	}
	s, err := newServer(bin, o)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c := &Cluster{t: t, s: s}
	t.Cleanup(c.cleanup)
	configure(s)
	if err := s.initdb(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := s.launch(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c
}

// cleanup stops the cluster if it runs and removes it.
func (c *Cluster) cleanup() {
	if err := c.s.stop(); err != nil {
		c.t.Errorf("pgtest: %v", err)
	}
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

// Replicated is a primary and a synchronous standby, streaming on the
// unix sockets of one test: a commit is acknowledged only once the
// standby has it on disk, as OPERATIONS asks of a deployment that must
// survive the loss of the database's machine.
type Replicated struct {
	Primary, Standby *Cluster
}

// standbyName is the standby's application_name, which the primary waits
// for (synchronous_standby_names).
const standbyName = "standby1"

// NewReplicated starts a primary and its synchronous standby for t alone,
// and waits until the standby is streaming in sync.
func NewReplicated(t testing.TB, o Options) *Replicated {
	t.Helper()
	p := newCluster(t, o, func(s *server) {
		s.conf = []string{"-c", "synchronous_standby_names=" + standbyName}
	})
	bin, _ := binDir()
	s, err := newServer(bin, o)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	sb := &Cluster{t: t, s: s}
	t.Cleanup(sb.cleanup)
	// A copy of the primary, made a standby of it by hand (standby.signal
	// and primary_conninfo) so that it names itself as the primary waits.
	if out, err := s.command("pg_basebackup", "-D", s.data(), "-d", "host="+p.s.dir+" user=postgres",
		"-X", "stream", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: pg_basebackup: %v\n%s", err, out)
	}
	conf := fmt.Sprintf("primary_conninfo = 'host=%s user=postgres application_name=%s'\n", p.s.dir, standbyName)
	if err := errors.Join(s.appendFile("postgresql.auto.conf", conf), s.appendFile("standby.signal", "")); err != nil {
		t.Fatalf("pgtest: making the standby: %v", err)
	}
	if err := s.launch(); err != nil {
		t.Fatalf("pgtest: standby: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var state string
		err := queryRow(p.URL(), `SELECT sync_state FROM pg_stat_replication WHERE application_name = $1`, []any{standbyName}, &state)
		if err == nil && state == "sync" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: the standby is not in sync after 60s (%q, %v)", state, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Replicated{Primary: p, Standby: sb}
}

// URL names both servers, the primary first, for a client that must reach
// whichever of them takes writes (target_session_attrs=read-write): after
// a failover, the promoted standby.
func (r *Replicated) URL() string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres",
		RawQuery: url.Values{"host": {r.Primary.s.dir + "," + r.Standby.s.dir}, "target_session_attrs": {"read-write"}}.Encode()}).String()
}

// Lose takes the cluster away as the loss of its machine would: killed,
// and its data gone.
func (c *Cluster) Lose() {
	c.t.Helper()
	if err := c.s.halt(syscall.SIGKILL); err != nil {
		c.t.Fatalf("pgtest: lose: %v", err)
	}
	if err := os.RemoveAll(c.s.data()); err != nil {
		c.t.Fatalf("pgtest: lose: %v", err)
	}
}

// Promote makes a standby the primary, and waits until it takes writes.
func (c *Cluster) Promote() {
	c.t.Helper()
	var ok bool
	if err := queryRow(c.URL(), `SELECT pg_promote(true, 60)`, nil, &ok); err != nil || !ok {
		c.t.Fatalf("pgtest: promote: %v, %v", ok, err)
	}
}

// appendFile appends text to the file name in the data directory, made
// the postgres user's if this process is root.
func (s *server) appendFile(name, text string) error {
	path := filepath.Join(s.data(), name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if err := errors.Join(err, f.Close()); err != nil {
		return err
	}
	if s.cred != nil {
		return os.Chown(path, int(s.cred.Uid), int(s.cred.Gid))
	}
	return nil
}

// queryRow runs one query on a connection of its own and scans its row.
func queryRow(url, sql string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}
