package tlsws

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/censor"
	"github.com/magpie-im/magpie/transport/transporttest"
)

// siteRoot writes the tests' generated site to a directory, for nginx.
func siteRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for name, f := range generateFiles(testSeed) {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, f.mod, f.mod)
	}
	return root
}

// nginxTimeout is the site's client_header_timeout and keepalive_timeout
// in these tests (nginx's defaults are 60 s and 75 s), so that the
// comparison sees closes within the prober's timeout.
const nginxTimeout = "2s"

// serverFlight connects a real Magpie client to addr through a proxy and
// returns the server's handshake flight (its first six records) as
// censor.CompareServers shows records.
func serverFlight(t *testing.T, addr string, cc ClientConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flight := make(chan string, 1)
	acceptAll(t, ln, func(c net.Conn, track func(net.Conn)) {
		b, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		track(b)
		go func() {
			io.Copy(b, c)
			b.Close()
		}()
		var s strings.Builder
		n := 0
		copyRecords(c, b, func(typ byte, size int) {
			if n++; n <= 6 {
				fmt.Fprintf(&s, "record %d 0303 %d\n", typ, size)
			}
			if n == 6 {
				flight <- s.String()
			}
		})
	})
	transporttest.Echo(t, dial(t, ln.Addr().String(), cc), []byte("still Magpie"))
	return <-flight
}

// recordGenuineFirstPacket connects a real Magpie client to ln through the
// censor emulator and returns the first packet the censor recorded.
func recordGenuineFirstPacket(t *testing.T, addr string, cc ClientConfig) [][]byte {
	t.Helper()
	cen := censor.New(censor.Config{})
	t.Cleanup(func() { cen.Close() })
	fwd, err := cen.Forward("127.0.0.1:0", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, fwd, cc)
	transporttest.Echo(t, c, []byte("a genuine connection, recorded"))
	c.Close()
	firsts := cen.FirstPacketsTo(fwd)
	if len(firsts) != 1 || len(firsts[0]) < 1000 || firsts[0][0] != 22 {
		t.Fatalf("recorded %d first packets (%d bytes)", len(firsts), len(firsts[0]))
	}
	return firsts
}

// TestIndistinguishableFromNginx: the censor emulator compares a tls://
// listener whose fallback is nginx with that nginx itself (the same site,
// the same certificate), in every probe class it knows, replays of a
// genuine first packet included. Any difference in the bytes returned,
// the close (FIN, RST, still open) or its timing beyond noise fails.
//
// The same comparison against the listener without a fallback (its own
// decoy on Go's TLS and HTTP) must find differences: the test can fail.
func TestIndistinguishableFromNginx(t *testing.T) {
	// RSA: its signatures have one length, where ECDSA's vary by a byte
	// or two from one handshake to the next, which would be noise here.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c := newCertFor(t, nil, false, key)
	site := runNginx(t, "testdata/nginx-site.conf.tmpl", c, map[string]string{"Root": siteRoot(t), "Timeout": nginxTimeout})
	cfg := serverConfig(t)
	cfg.Certificate = &c.tls
	cfg.Fallback = site
	ln := serve(t, cfg)
	cc := clientConfig(t)
	cc.PinSHA256 = SPKIPin(c.x509)
	firsts := recordGenuineFirstPacket(t, ln.Addr().String(), cc)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pc := censor.CompareConfig{ServerName: testName, FirstPackets: firsts, Timeout: 4 * time.Second}
	rep := censor.CompareServers(ctx, site, ln.Addr().String(), pc)
	t.Logf("tls:// with --tls-fallback nginx, against nginx:\n%s", rep.Table())
	if len(rep.Results) < 12 {
		t.Fatalf("%d probe classes, want at least 12", len(rep.Results))
	}
	if len(rep.Differ) > 0 {
		t.Errorf("distinguishable from nginx in %d of %d classes: %v", len(rep.Differ), len(rep.Results), rep.Differ)
	}
	// nginx negotiates h2 with a client that offers it, and so does the
	// listener: it is nginx answering.
	for _, r := range rep.Results {
		if r.Class == "https-h2" && !strings.Contains(r.Suspect.Shape, `ALPN "h2"`) {
			t.Errorf("https-h2: %q, want h2 negotiated", r.Suspect.Shape)
		}
	}
	// The genuine client still gets through, beside all that; and a passive
	// observer sees its connection get the records nginx answers that
	// ClientHello with: the same key exchange (so the same ServerHello
	// size), the same ALPN choice (the same encrypted extensions), the
	// same certificate.
	got := serverFlight(t, ln.Addr().String(), cc)
	t.Logf("a genuine connection's server flight:\n%s", got)
	compared := false
	for _, r := range rep.Results {
		compared = compared || r.Class == "replay-0"
		if r.Class == "replay-0" && got != r.Reference.Shape {
			t.Errorf("a genuine connection's server flight:\n%snginx's answer to the same ClientHello:\n%s", got, r.Reference.Shape)
		}
	}
	if !compared {
		t.Error("no replay class to compare the genuine flight with")
	}

	// Without the fallback, the listener is a Go web server: the comparison
	// must see it.
	cfg.Fallback = ""
	alone := serve(t, cfg)
	pc.FirstPackets = recordGenuineFirstPacket(t, alone.Addr().String(), cc)
	rep = censor.CompareServers(ctx, site, alone.Addr().String(), pc)
	t.Logf("tls:// without a fallback, against nginx:\n%s", rep.Table())
	if len(rep.Differ) < 6 {
		t.Errorf("the listener without a fallback differs from nginx in only %v: the comparison is too weak", rep.Differ)
	}
}
