package tlsws

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/censor"
	"github.com/magpie-im/magpie/transport/transporttest"
)

// captureProxy forwards TCP connections to backend and hands over, for each,
// the first TLS record the client sent: what the server received.
func captureProxy(t *testing.T, backend string) (addr string, hellos <-chan []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte, 16)
	acceptAll(t, ln, func(c net.Conn, track func(net.Conn)) {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:])))
		copy(rec, hdr)
		if _, err := io.ReadFull(c, rec[5:]); err != nil {
			return
		}
		out <- rec
		b, err := net.Dial("tcp", backend)
		if err != nil {
			return
		}
		track(b)
		defer b.Close()
		b.Write(rec)
		done := make(chan struct{})
		go func() {
			io.Copy(c, b)
			c.Close()
			close(done)
		}()
		io.Copy(b, c)
		b.Close()
		<-done
	})
	return ln.Addr().String(), out
}

// clientHello is the parts of a ClientHello that fingerprints look at.
type parsedHello struct {
	version    uint16
	ciphers    []uint16
	extensions []uint16
	alpn       []string
	sni        string
}

func parseHello(rec []byte) (*parsedHello, error) {
	bad := errors.New("malformed ClientHello")
	if len(rec) < 9 || rec[0] != 22 || rec[5] != 1 {
		return nil, bad
	}
	b := rec[9:]
	take := func(n int) []byte {
		if n > len(b) {
			b = nil
			return nil
		}
		v := b[:n]
		b = b[n:]
		return v
	}
	u8 := func() int {
		v := take(1)
		if v == nil {
			return 0
		}
		return int(v[0])
	}
	u16 := func() int {
		v := take(2)
		if v == nil {
			return 0
		}
		return int(binary.BigEndian.Uint16(v))
	}
	h := &parsedHello{version: uint16(u16())}
	take(32)   // random
	take(u8()) // session id
	cs := take(u16())
	for i := 0; i+1 < len(cs); i += 2 {
		h.ciphers = append(h.ciphers, binary.BigEndian.Uint16(cs[i:]))
	}
	take(u8()) // compression
	exts := take(u16())
	if b == nil || exts == nil {
		return nil, bad
	}
	for len(exts) >= 4 {
		typ := binary.BigEndian.Uint16(exts)
		n := int(binary.BigEndian.Uint16(exts[2:]))
		if 4+n > len(exts) {
			return nil, bad
		}
		data := exts[4 : 4+n]
		exts = exts[4+n:]
		h.extensions = append(h.extensions, typ)
		switch typ {
		case 16: // ALPN
			if len(data) < 2 {
				return nil, bad
			}
			for l := data[2:]; len(l) > 0; {
				n := int(l[0])
				if 1+n > len(l) {
					return nil, bad
				}
				h.alpn = append(h.alpn, string(l[1:1+n]))
				l = l[1+n:]
			}
		case 0: // server_name
			if len(data) >= 5 {
				h.sni = string(data[5:])
			}
		}
	}
	return h, nil
}

func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

func withoutGREASE(v []uint16) []uint16 {
	return slices.DeleteFunc(slices.Clone(v), isGREASE)
}

// chromeFixture is testdata/chrome-*.json: where the captured ClientHello
// came from and the JA4 it must have.
type chromeFixture struct {
	Browser  string `json:"browser"`
	Captured string `json:"captured"`
	File     string `json:"file"`
	JA4      string `json:"ja4"`
	How      string `json:"how"`
}

const chromeFixtureJSON = "testdata/chrome-156.json"

func loadChromeFixture(t *testing.T) (chromeFixture, []byte) {
	t.Helper()
	var f chromeFixture
	b, err := os.ReadFile(chromeFixtureJSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	hello, err := os.ReadFile(filepath.Join("testdata", f.File))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hello, chromeHello) {
		t.Fatalf("%s is not the ClientHello the package embeds", f.File)
	}
	return f, hello
}

// The fixture is what its metadata says: a ClientHello with that JA4, from
// the Chrome version the client's User-Agent names.
func TestChromeFixture(t *testing.T) {
	f, hello := loadChromeFixture(t)
	ja4, err := censor.JA4(hello)
	if err != nil {
		t.Fatal(err)
	}
	if ja4 != f.JA4 {
		t.Fatalf("JA4 of %s = %s, metadata says %s", f.File, ja4, f.JA4)
	}
	if !strings.HasPrefix(ja4, "t13d") || !strings.Contains(ja4, "h2_") {
		t.Errorf("fixture JA4 %s: not TLS 1.3 with SNI and h2", ja4)
	}
	m := regexp.MustCompile(`Chrom(e|ium) (\d+)\.`).FindStringSubmatch(f.Browser)
	if m == nil || !strings.Contains(userAgent, "Chrome/"+m[2]+".") {
		t.Errorf("User-Agent %q does not name the fixture's %q", userAgent, f.Browser)
	}
	if _, err := time.Parse("2006-01-02", f.Captured); err != nil {
		t.Errorf("captured %q: %v", f.Captured, err)
	}
}

// TestCaptureChromeClientHello captures what the installed chromium sends
// (headless, to a local TCP listener) and checks that its JA4 is the
// fixture's: when Debian's chromium moves on, this fails until the fixture
// is refreshed. MAGPIE_CAPTURE_CHROME=1 rewrites the fixture instead.
func TestCaptureChromeClientHello(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("MAGPIE_REQUIRE_CHROMIUM") == "1" {
			t.Fatal("chromium not found; install it with: apt-get install -y chromium")
		}
		t.Skip("chromium not found (apt-get install -y chromium)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	profile, err := os.MkdirTemp("", "magpie-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+profile, "--host-resolver-rules=MAP "+testName+" 127.0.0.1",
		fmt.Sprintf("https://%s:%d/", testName, ln.Addr().(*net.TCPAddr).Port))
	// Its own process group: chromium's helper processes go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		// Helpers may still be exiting: retry for a while.
		for deadline := time.Now().Add(5 * time.Second); os.RemoveAll(profile) != nil && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
	}()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err != nil {
			got <- nil
			return
		}
		rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:])))
		copy(rec, hdr)
		if _, err := io.ReadFull(c, rec[5:]); err != nil {
			got <- nil
			return
		}
		got <- rec
	}()
	var hello []byte
	select {
	case hello = <-got:
	case <-ctx.Done():
	}
	ln.Close()
	if hello == nil {
		t.Fatal("chromium sent no ClientHello")
	}
	ja4, err := censor.JA4(hello)
	if err != nil {
		t.Fatal(err)
	}
	version, _ := exec.Command(bin, "--version").Output()
	f, _ := loadChromeFixture(t)
	if os.Getenv("MAGPIE_CAPTURE_CHROME") == "1" {
		f.Browser = strings.TrimSpace(string(version)) + ", headless"
		f.Captured = time.Now().UTC().Format("2006-01-02")
		f.JA4 = ja4
		if err := os.WriteFile(filepath.Join("testdata", f.File), hello, 0o644); err != nil {
			t.Fatal(err)
		}
		b, _ := json.MarshalIndent(f, "", "  ")
		if err := os.WriteFile(chromeFixtureJSON, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("fixture rewritten: %s, JA4 %s (rename the files and the embed for a new major version; update userAgent)", f.Browser, ja4)
		return
	}
	if ja4 != f.JA4 {
		t.Fatalf("the installed %s sends JA4 %s; the fixture (%s, %s) has %s: refresh it (docs/TRANSPORTS.md)",
			strings.TrimSpace(string(version)), ja4, f.Browser, f.Captured, f.JA4)
	}
	t.Logf("%s: JA4 %s, as the fixture", strings.TrimSpace(string(version)), ja4)
}

func TestClientHelloIsChrome(t *testing.T) {
	ln := serve(t, serverConfig(t))
	proxy, hellos := captureProxy(t, ln.Addr().String())

	// Magpie's client, through the proxy to the real server.
	cfg := clientConfig(t)
	cfg.ServerName = testName
	transporttest.Echo(t, dial(t, proxy, cfg), []byte("through the capturing proxy"))
	raw := <-hellos
	ours, err := parseHello(raw)
	if err != nil {
		t.Fatal(err)
	}

	// The JA4 a censor computes is the captured Chrome's.
	f, fixture := loadChromeFixture(t)
	ja4, err := censor.JA4(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ja4 != f.JA4 {
		t.Errorf("the client's JA4 is %s; %s (captured %s) sends %s", ja4, f.Browser, f.Captured, f.JA4)
	}
	t.Logf("client JA4 %s; fixture %s (%s)", ja4, f.JA4, f.Browser)
	chrome, err := parseHello(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(withoutGREASE(ours.ciphers), withoutGREASE(chrome.ciphers)) {
		t.Errorf("cipher suites %x, Chrome's %x", ours.ciphers, chrome.ciphers)
	}
	// Like Chrome, a new extension order on every connection.
	transporttest.Echo(t, dial(t, proxy, cfg), []byte("again"))
	again, err := parseHello(<-hellos)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(withoutGREASE(again.extensions), withoutGREASE(ours.extensions)) {
		t.Errorf("the same extension order twice: %v", ours.extensions)
	}

	// Go's crypto/tls, for comparison.
	c, err := tls.Dial("tcp", proxy, &tls.Config{InsecureSkipVerify: true, ServerName: testName, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	goHello, err := parseHello(<-hellos)
	if err != nil {
		t.Fatal(err)
	}

	if !slices.Equal(ours.alpn, []string{"h2", "http/1.1"}) {
		t.Errorf("ALPN offered %q, want [h2 http/1.1]", ours.alpn)
	}
	if ours.sni != testName {
		t.Errorf("SNI %q, want %q", ours.sni, testName)
	}
	if slices.Equal(ours.ciphers, goHello.ciphers) {
		t.Errorf("cipher suites are crypto/tls's: %x", ours.ciphers)
	}
	if slices.Equal(ours.extensions, goHello.extensions) {
		t.Errorf("extensions are crypto/tls's: %v", ours.extensions)
	}
	// What marks a Chrome ClientHello, and crypto/tls never sends.
	if len(ours.ciphers) == 0 || !isGREASE(ours.ciphers[0]) {
		t.Errorf("first cipher suite %x is not GREASE", ours.ciphers)
	}
	if len(ours.extensions) == 0 || !isGREASE(ours.extensions[0]) || !isGREASE(ours.extensions[len(ours.extensions)-1]) {
		t.Errorf("extensions %v do not start and end with GREASE", ours.extensions)
	}
	for _, want := range []struct {
		ext  uint16
		name string
	}{{27, "compress_certificate"}, {17613, "application_settings (ALPS)"}, {65037, "encrypted_client_hello (GREASE ECH)"}} {
		if !slices.Contains(ours.extensions, want.ext) {
			t.Errorf("no %s extension (%d) in %v", want.name, want.ext, ours.extensions)
		}
		if slices.Contains(goHello.extensions, want.ext) {
			t.Errorf("crypto/tls sent %s too; the comparison is void", want.name)
		}
	}
	if slices.ContainsFunc(goHello.ciphers, isGREASE) {
		t.Error("crypto/tls sent GREASE; the comparison is void")
	}
}

func TestNoSNIForIPRefused(t *testing.T) {
	ln := serve(t, serverConfig(t))
	proxy, hellos := captureProxy(t, ln.Addr().String())
	cfg := clientConfig(t)
	cfg.ServerName = ""
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "tcp", proxy, cfg); !errors.Is(err, ErrNoServerName) {
		t.Fatalf("Dial to an IP address without a server name: %v", err)
	}
	select {
	case h := <-hellos:
		t.Fatalf("a ClientHello was sent: % x", h[:min(len(h), 64)])
	case <-time.After(100 * time.Millisecond):
	}
}
