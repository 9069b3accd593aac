package client_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/censor"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
)

// TestConversationCarriesOnUnderCensorship runs one server on tcp, obfs and
// tls, each reachable only through a censor (internal/censor), and checks
// that under each rule, and under all at once, messages keep flowing both
// ways within the failover time, and an attachment goes through. Plain
// tcp, listed first but not marked safe, is never dialled; once the user
// allows it, the fingerprint rule catches it (so the test can fail). It
// also probes every listener actively.
func TestConversationCarriesOnUnderCensorship(t *testing.T) {
	t.Parallel()
	s, pub := publishingServer(t, server.Config{
		Link:  link.Config{HandshakeTimeoutMin: 2 * time.Second, HandshakeTimeoutMax: 3 * time.Second},
		Blobs: servertest.Blobs(t, blobstore.Options{}),
	})
	direct := s.TransportEndpoints(t, obfs.Config{ProbeMin: 2 * time.Second, ProbeMax: 3 * time.Second})

	cen := censor.New(censor.Config{BlackholeFor: time.Hour})
	t.Cleanup(func() { cen.Close() })
	// The clients know only the censored forwards, tcp first.
	censored := map[string]string{}
	for i, name := range []string{"tcp", "obfs", "tls"} {
		e := direct[name]
		fwd, err := cen.Forward("", e.Address)
		if err != nil {
			t.Fatal(err)
		}
		censored[name], e.Address, e.Priority = fwd, fwd, i
		direct[name+" forward"] = e
	}
	pub.set(t, direct["tcp forward"], direct["obfs forward"], direct["tls forward"])
	inv := pub.invite(t, s)
	alice := newUser(t, inv, "alice", client.Options{})
	bob := newUser(t, inv, "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)

	// Each step is a fresh connection: Sync connects, does what there is to
	// do, and disconnects.
	exchange := func(rule string) {
		t.Helper()
		for _, p := range []struct {
			from, to *client.Client
			peer     string
			sub      *client.Subscription
		}{{alice, bob, "bob", bsub}, {bob, alice, "alice", asub}} {
			text := fmt.Sprintf("%s, to %s", rule, p.peer)
			start := time.Now()
			send(t, p.from, p.peer, text)
			syncOK(t, p.from)
			drain(p.sub)
			syncOK(t, p.to)
			if got := incoming(drain(p.sub)); !slices.Equal(got, []string{text}) {
				t.Fatalf("%s: received %q", rule, got)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("%s: a message took %v, want within the 5 s failover time", rule, d)
			}
		}
	}
	// An attachment goes through too: 5 MB, or 100 KB where the censor
	// throttles to 20 KB/s (5 MB would take four minutes there).
	sendAttachment := func(rule string, size int) {
		t.Helper()
		data := randomBytes(size)
		start := time.Now()
		sendFile(t, alice, "bob", "a.bin", data, rule)
		syncOK(t, alice)
		syncOK(t, bob)
		m := waitAttachment(t, bsub, client.TransferSaved)
		if got := readAll(t, bob, m.Seq); string(got) != string(data) || m.Text != rule {
			t.Fatalf("%s: the attachment differs", rule)
		}
		t.Logf("%-24s %d KB attachment in %v", rule, size>>10, time.Since(start).Round(10*time.Millisecond))
	}
	exchange("no censorship")

	tcpF := censored["tcp"]
	rules := []struct {
		name string
		cfg  censor.Config
	}{
		{"block tcp address", censor.Config{BlockAddrs: []string{tcpF}, BlockAction: censor.ActionReset}},
		{"fully encrypted traffic", censor.Config{FET: true, BlackholeFor: time.Hour}},
		{"tcp fingerprint", censor.Config{TCPFingerprint: true}},
		{"SNI", censor.Config{BlockSNI: []string{"magpie.example"}}},
		{"throttle 20 KB/s", censor.Config{ThrottleBytesPerSec: 20 << 10}},
		{"all at once", censor.Config{BlockAddrs: []string{tcpF}, FET: true, BlackholeFor: time.Hour, TCPFingerprint: true,
			BlockSNI: []string{"magpie.example"}, ThrottleBytesPerSec: 20 << 10}},
	}
	for _, r := range rules {
		cen.SetConfig(r.cfg)
		cen.ClearBlackholes()
		// As fresh clients: try endpoints in priority order, tcp first, so
		// that each rule meets every transport.
		for _, c := range []*client.Client{alice, bob} {
			if err := client.ForgetEndpointsForTest(testCtx(t), c); err != nil {
				t.Fatal(err)
			}
		}
		exchange(r.name)
		if r.cfg.ThrottleBytesPerSec > 0 {
			sendAttachment(r.name, 100<<10)
		} else {
			sendAttachment(r.name, 5<<20)
		}
		stats := cen.Stats()
		t.Logf("%-24s flows %d, forwarded %d, reset %d, black-holed %d", r.name, stats.Flows, stats.Forwarded, stats.Reset, stats.Blackholed)
	}

	// Stealth first: with obfs and tls offered, and plain tcp not marked
	// safe, no client ever walked into plain tcp, though it comes first by
	// priority.
	for _, ev := range cen.Events() {
		if ev.Listen == tcpF {
			t.Fatalf("a client dialled plain tcp (%s: %s)", ev.Verdict, ev.Rule)
		}
	}
	// A user who allows plain tcp gets it, and the fingerprint rule
	// catches it (so the check above can fail), while obfs was never
	// flagged as fully encrypted traffic.
	cen.SetConfig(censor.Config{TCPFingerprint: true})
	if err := alice.SetPlainTCP(testCtx(t), true); err != nil {
		t.Fatal(err)
	}
	rs, err := alice.Probe(testCtx(t), client.ProbeOptions{Timeout: 2 * time.Second, EchoBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Endpoint.Address == tcpF && r.Verdict != client.VerdictConnectionReset {
			t.Fatalf("plain tcp under the fingerprint rule: %s (%v)", r.Verdict, r.Err)
		}
	}
	var fingerprinted, obfsFlagged int
	for _, ev := range cen.Events() {
		if ev.Rule == censor.RuleTCPFingerprint && ev.Listen == tcpF {
			fingerprinted++
		}
		if ev.Rule == censor.RuleFET && ev.Listen == censored["obfs"] {
			obfsFlagged++
		}
	}
	if fingerprinted == 0 {
		t.Fatal("the tcp fingerprint rule never caught the plain tcp transport")
	}
	if obfsFlagged != 0 {
		t.Fatalf("obfs flagged as fully encrypted traffic %d times", obfsFlagged)
	}

	// Active probing of every listener: replays of recorded first packets
	// (identical and altered) and random bytes get the same reaction as
	// silence. (The prober waits less than the servers' handshake windows,
	// so it compares bytes received and early closes. It sends them all at
	// once: each waits out its timeout.)
	prober := censor.Prober{Timeout: 1500 * time.Millisecond, Concurrency: 64}
	for _, name := range []string{"tcp", "obfs"} {
		rep := prober.Probe(context.Background(), direct[name].Address, cen.FirstPacketsTo(censored[name]))
		if len(rep.Results) == 0 {
			t.Fatalf("%s: nothing probed", name)
		}
		if rep.Distinguishable {
			t.Errorf("%s listener reacts differently from a silent server: %v", name, rep.Reasons)
		}
	}
}
