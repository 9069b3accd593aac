package client_test

import (
	"encoding/base64"
	"slices"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
)

// Probe tells each kind of blocking apart and measures what works, over
// one real connection per endpoint and no empty one; it ranks what it
// found and changes the dial order only when asked.
func TestProbeVerdicts(t *testing.T) {
	t.Parallel()
	s, pub := publishingServer(t, server.Config{})
	slow := newProxy(t, s.Addr)
	slow.bps.Store(20 << 10)
	eps := map[string]string{
		s.Addr:        client.VerdictOK,
		closedAddr(t): client.VerdictConnectionRefused,
		blackHole(t):  client.VerdictTimeout,
		resetter(t):   client.VerdictConnectionReset,
		slow.Addr():   client.VerdictThrottled,
	}
	var list []endpoints.Endpoint
	for a := range eps {
		e := tcp(a, 0)
		e.Safe = true // the operator vouches for plain tcp here
		list = append(list, e)
	}
	// A tls endpoint whose certificate does not match the pin.
	tlsEp := s.TransportEndpoints(t, obfs.Config{})["tls"]
	tlsEp.Cert = base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	eps[tlsEp.Address] = client.VerdictTLSHandshakeFailed
	list = append(list, tlsEp)
	pub.set(t, list...)
	c := newUser(t, s.Invite, "alice", client.Options{}) // learns the list in band

	rs, err := c.Probe(testCtx(t), client.ProbeOptions{Timeout: 2 * time.Second, EchoBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(eps) {
		t.Fatalf("%d results for %d endpoints", len(rs), len(eps))
	}
	for _, r := range rs {
		if want := eps[r.Endpoint.Address]; r.Verdict != want {
			t.Errorf("%s: verdict %s (%v), want %s", r.Endpoint.Address, r.Verdict, r.Err, want)
		}
		// Ten times the throttled endpoint's rate: a loopback that shares
		// two cores with the race detector and other suites has measured
		// 450 KB/s here, while a broken measurement gives 0.
		if r.Verdict == client.VerdictOK && (r.Handshake == 0 || r.RoundTrip == 0 || r.Throughput < 10*float64(slow.bps.Load())) {
			t.Errorf("ok endpoint without measurements: %+v", r)
		}
	}
	// Ranked: the working endpoint first.
	if rs[0].Endpoint.Address != s.Addr {
		t.Fatalf("ranked first: %s (%s)", rs[0].Endpoint.Address, rs[0].Verdict)
	}
	// One connection to each endpoint, the probe itself: none empty.
	if n := slow.accepted.Load(); n != 1 {
		t.Fatalf("the probe opened %d connections to an endpoint, want 1", n)
	}
	// The probe only reports: the dial order is what it was, until asked.
	before, _ := c.Endpoints(testCtx(t))
	if _, err := c.Probe(testCtx(t), client.ProbeOptions{Timeout: 2 * time.Second, EchoBytes: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	after, _ := c.Endpoints(testCtx(t))
	if !slices.Equal(keys(before), keys(after)) {
		t.Fatalf("probing changed the dial order from %v to %v", keys(before), keys(after))
	}
	c.ReorderByProbe(testCtx(t), rs)
	if order, _ := c.Endpoints(testCtx(t)); order[0].Address != s.Addr || order[len(order)-1].Address == s.Addr {
		t.Fatalf("reordered by the probe: %v", keys(order))
	}
}

// Probe ranks stealth first, and leaves out plain tcp the operator did not
// mark safe: its first packet is what a censor fingerprints.
func TestProbeRanksStealthFirst(t *testing.T) {
	t.Parallel()
	s, pub := publishingServer(t, server.Config{})
	direct := s.TransportEndpoints(t, obfs.Config{})
	unsafe := newProxy(t, s.Addr)
	pub.set(t, tcp(unsafe.Addr(), -1), direct["tcp"], direct["tls"], direct["obfs"])
	c := newUser(t, pub.invite(t, s), "alice", client.Options{})
	before := unsafe.accepted.Load()
	rs, err := c.Probe(testCtx(t), client.ProbeOptions{Timeout: 2 * time.Second, EchoBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, r.Endpoint.Transport+" "+r.Verdict)
	}
	if len(rs) != 2 || rs[0].Endpoint.Transport == "tcp" || rs[1].Endpoint.Transport == "tcp" {
		t.Fatalf("probed %v, want obfs and tls only", got)
	}
	if unsafe.accepted.Load() != before {
		t.Fatal("the probe dialled plain tcp that is not marked safe")
	}
	// The user allows plain tcp: it is probed, and ranked after stealth.
	if err := c.SetPlainTCP(testCtx(t), true); err != nil {
		t.Fatal(err)
	}
	if rs, err = c.Probe(testCtx(t), client.ProbeOptions{Timeout: 2 * time.Second, EchoBytes: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, r := range rs {
		got = append(got, r.Endpoint.Transport+" "+r.Verdict)
	}
	if len(rs) != 4 || rs[0].Endpoint.Transport == "tcp" || rs[1].Endpoint.Transport == "tcp" || rs[2].Endpoint.Transport != "tcp" {
		t.Fatalf("probed %v, want obfs and tls, then the two tcp", got)
	}
}
