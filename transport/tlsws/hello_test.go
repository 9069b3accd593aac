package tlsws

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

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
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
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
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
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

func TestClientHelloIsChrome(t *testing.T) {
	ln := serve(t, serverConfig(t))
	proxy, hellos := captureProxy(t, ln.Addr().String())

	// Magpie's client, through the proxy to the real server.
	cfg := clientConfig(t)
	cfg.ServerName = testName
	transporttest.Echo(t, dial(t, proxy, cfg), []byte("through the capturing proxy"))
	ours, err := parseHello(<-hellos)
	if err != nil {
		t.Fatal(err)
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
