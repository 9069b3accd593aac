package client_test

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
)

// Probe tells each kind of blocking apart, measures what works, and puts
// the working endpoint first.
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
		list = append(list, tcp(a, 0))
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
	// The client now tries the working endpoint first.
	if order, _ := c.Endpoints(testCtx(t)); order[0].Address != s.Addr {
		t.Fatalf("after probing, dial order starts with %s", order[0].Address)
	}
}
