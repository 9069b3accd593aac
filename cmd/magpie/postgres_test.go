package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/pgtest"
)

// TestServePostgres: serve --store postgres://… carries a message between
// two clients, and its queue survives a restart of the server.
func TestServePostgres(t *testing.T) {
	// An empty database: serve creates the schema itself.
	url := pgtest.NewDatabase(t, "cli", func(string) error { return nil })
	srv := serveOnFreePortWith(t, t.TempDir(), []string{"--store", url})
	if !strings.Contains(srv.stdout.String(), "accounts, queues, attachments and sign-up codes in PostgreSQL") || strings.Contains(srv.stdout.String(), url) {
		t.Errorf("banner should name PostgreSQL without its URL:\n%s", srv.stdout)
	}
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	mustRun(t, "--home", alice, "send", "bob", "first")
	if m := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)); len(m) != 1 || m[0].Text != "first" {
		t.Fatalf("bob's inbox: %+v, want alice's first", m)
	}

	// Queued while bob is away; the server restarts before he looks.
	mustRun(t, "--home", alice, "send", "bob", "kept")
	srv.stop(t)
	srv = srv.restart(t)
	defer srv.stop(t)
	if m := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)); len(m) != 1 || m[0].Text != "kept" || m[0].Peer != "alice" {
		t.Fatalf("bob's inbox after the restart: %+v, want alice's kept", m)
	}
}

// TestPostgresCrashLosesNothingAcknowledged crashes the database under a
// running server (an immediate shutdown: no checkpoint, recovery from the
// WAL at restart) while four senders send to bob, twice. Meanwhile sends
// fail with a temporary error and wait in the outboxes, and none is
// acknowledged; the server stays up, and once the database is back every
// message, acknowledged or not, reaches bob exactly once.
func TestPostgresCrashLosesNothingAcknowledged(t *testing.T) {
	const (
		cycles       = 2
		acksPerPhase = 40
		// After the first refusal the database stays down a while longer,
		// for the retries to be refused too. (Only the first message to
		// bob is refused outright: his later ones wait behind it in each
		// outbox, so their senders see nothing until the 20 s timeout.)
		outageAfterRefusal = 1500 * time.Millisecond
	)
	db := pgtest.NewCluster(t, pgtest.Options{Fsync: true})
	srv, bob, g := sendToBobOn(t, db.URL())
	var outages []outage
	for cycle := range cycles {
		waitCount(t, &g.acks, g.acks.Load()+acksPerPhase, fmt.Sprintf("sends before crash %d", cycle+1))
		failed := g.fails.Load() // before: refusals may come before Crash returns
		db.Crash()
		o := outage{from: time.Now()}
		waitCount(t, &g.fails, failed+1, fmt.Sprintf("a refused send in outage %d", cycle+1))
		time.Sleep(outageAfterRefusal)
		o.to = time.Now()
		outages = append(outages, o)
		db.Start()
	}
	waitCount(t, &g.acks, g.acks.Load()+acksPerPhase, "sends after the database came back")
	g.stopAndFlush(t)
	checkDelivered(t, g.senders, bob, outages, fmt.Sprintf("%d database crashes", cycles), g.fails.Load())
	select {
	case <-srv.done:
		t.Fatalf("serve exited when its database went away:\n%s", srv.stderr)
	default:
	}
}

// TestPostgresFailoverLosesNothingAcknowledged loses the database's
// machine under a running server: the primary is killed and its data
// removed, and its synchronous standby is promoted (serve's --store names
// both, with target_session_attrs=read-write). Every acknowledged message
// was on the standby's disk before it was acknowledged, so every message,
// acknowledged or not, reaches bob exactly once.
func TestPostgresFailoverLosesNothingAcknowledged(t *testing.T) {
	const acksPerPhase = 40
	db := pgtest.NewReplicated(t, pgtest.Options{Fsync: true})
	_, bob, g := sendToBobOn(t, db.URL())
	waitCount(t, &g.acks, g.acks.Load()+acksPerPhase, "sends before the primary is lost")
	failed := g.fails.Load()
	db.Primary.Lose()
	o := outage{from: time.Now()}
	waitCount(t, &g.fails, failed+1, "a refused send while there is no primary")
	db.Standby.Promote()
	o.to = time.Now()
	waitCount(t, &g.acks, g.acks.Load()+acksPerPhase, "sends after the failover")
	g.stopAndFlush(t)
	checkDelivered(t, g.senders, bob, []outage{o}, "a failover", g.fails.Load())
}

// sendToBobOn starts serve on the database at storeURL (stopped when the
// test ends), registers bob and four senders, and starts them sending to
// bob; it returns the server, bob's home and the senders.
func sendToBobOn(t *testing.T, storeURL string) (*server, string, *sending) {
	t.Helper()
	srv := serveOnFreePortWith(t, t.TempDir(), []string{"--store", storeURL})
	t.Cleanup(func() { srv.stop(t) })
	bob := newUser(t, srv, "bob")
	var senders []*sender
	for _, name := range []string{"alice", "carol", "dave", "erin"} {
		senders = append(senders, &sender{name: name, home: newUser(t, srv, name)})
	}
	return srv, bob, startSending(t, senders)
}
