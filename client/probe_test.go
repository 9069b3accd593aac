package client_test

import (
	"encoding/base64"
	"net"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// resetter accepts connections and resets them at once (SO_LINGER 0).
func resetter(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Let the client's first bytes arrive, then reset.
			c.Read(make([]byte, 1))
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// throttled forwards to upstream at bytesPerSec in each direction.
func throttled(t *testing.T, upstream string, bytesPerSec int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			conns = append(conns, c, up)
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				go func(dst, src net.Conn) {
					lim := rate.NewLimiter(rate.Limit(bytesPerSec), 4096)
					buf := make([]byte, 4096)
					for {
						n, err := src.Read(buf)
						if err != nil {
							dst.Close()
							return
						}
						lim.WaitN(t.Context(), n)
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
				}(pair[0], pair[1])
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestProbeVerdicts(t *testing.T) {
	pub := &publishing{}
	s := servertest.Start(t, server.Config{Endpoints: pub.current})
	pub.key = curve.PrivateKey(s.Key.Private)
	closed := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		a := ln.Addr().String()
		ln.Close()
		return a
	}()
	eps := map[string]string{
		s.Addr:                       client.VerdictOK,
		closed:                       client.VerdictConnectionRefused,
		blackHole(t):                 client.VerdictTimeout,
		resetter(t):                  client.VerdictConnectionReset,
		throttled(t, s.Addr, 20<<10): client.VerdictThrottled,
	}
	var list []endpoints.Endpoint
	for a := range eps {
		list = append(list, endpoints.Endpoint{Transport: "tcp", Address: a})
	}
	// A tls endpoint whose certificate does not match the pin.
	tlsEp := transportEndpoints(t, s)["tls"]
	tlsEp.Cert = base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	eps[tlsEp.Address] = client.VerdictTLSHandshakeFailed
	list = append(list, tlsEp)
	pub.set(t, list...)
	c := newClient(t, s.Invite, client.Options{})
	register(t, c, "alice") // learns the list in band

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
		if r.Verdict == client.VerdictOK && (r.Handshake == 0 || r.RoundTrip == 0 || r.Throughput < 1<<20) {
			t.Errorf("ok endpoint without measurements: %+v", r)
		}
	}
	// The client now tries the working endpoint first.
	order, _ := c.Endpoints(testCtx(t))
	if order[0].Address != s.Addr {
		t.Fatalf("after probing, dial order starts with %s", order[0].Address)
	}
}
