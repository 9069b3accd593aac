package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/nginxtest"
	"github.com/magpie-im/magpie/transport/tlsws"
)

func openTLS(t *testing.T, spec, data string, opts tlsOptions) *listener {
	t.Helper()
	if opts.path == "" {
		opts.path = tlsws.DefaultPath
	}
	ln, err := openListener(spec, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Without any tls flag, a deployment gets its own cover name, certificate
// and site, kept across restarts; another deployment gets others.
func TestTLSListenerPerDeployment(t *testing.T) {
	data := t.TempDir()
	a := openTLS(t, "tls://127.0.0.1:0", data, tlsOptions{})
	seed, err := os.ReadFile(filepath.Join(data, "tls.site"))
	if err != nil || len(seed) != 32 {
		t.Fatalf("tls.site: %d bytes, %v", len(seed), err)
	}
	if want := tlsws.SiteHost([32]byte(seed)); a.template.SNI != want {
		t.Fatalf("SNI %q, want the generated cover name %q", a.template.SNI, want)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(data, "tls.crt"), filepath.Join(data, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf.VerifyHostname(a.template.SNI); err != nil || cert.Leaf.Subject.CommonName != a.template.SNI {
		t.Errorf("certificate for %q/%v, SNI %q: %v", cert.Leaf.Subject.CommonName, cert.Leaf.DNSNames, a.template.SNI, err)
	}
	if life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore); life != selfSignedLife {
		t.Errorf("certificate valid for %v, want %v", life, selfSignedLife)
	}
	a.Close()

	again := openTLS(t, "tls://127.0.0.1:0", data, tlsOptions{})
	if again.template.SNI != a.template.SNI || again.template.Cert != a.template.Cert {
		t.Errorf("after a restart: SNI %q pin %q, before %q %q", again.template.SNI, again.template.Cert, a.template.SNI, a.template.Cert)
	}
	other := openTLS(t, "tls://127.0.0.1:0", t.TempDir(), tlsOptions{})
	if other.template.Cert == a.template.Cert {
		t.Error("two deployments share a certificate")
	}
	// The operator's name wins.
	named := openTLS(t, "tls://127.0.0.1:0", t.TempDir(), tlsOptions{sni: "chat.example.org"})
	if named.template.SNI != "chat.example.org" {
		t.Errorf("SNI %q with --tls-sni chat.example.org", named.template.SNI)
	}
}

// A self-signed certificate near its end, or for another name, is signed
// again with the same key: the pin clients hold stays valid.
func TestSelfSignedRenewedWithSameKey(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now()
	if err := ensureSelfSigned(crt, key, "a.example", t0); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(crt)
	load := func() *tls.Certificate {
		c, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	c0 := load()
	if err := ensureSelfSigned(crt, key, "a.example", t0.Add(30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(crt); !bytes.Equal(b, first) {
		t.Fatal("renewed with 60 days left")
	}
	for _, tc := range []struct {
		name string
		now  time.Time
	}{{"a.example", t0.Add(70 * 24 * time.Hour)}, {"b.example", t0.Add(70 * 24 * time.Hour)}} {
		if err := ensureSelfSigned(crt, key, tc.name, tc.now); err != nil {
			t.Fatal(err)
		}
		c := load()
		if !bytes.Equal(tlsws.SPKIPin(c.Leaf), tlsws.SPKIPin(c0.Leaf)) {
			t.Fatalf("%s: a new key; clients' pins break", tc.name)
		}
		if !c.Leaf.NotAfter.After(tc.now.Add(selfSignedRenew)) || c.Leaf.VerifyHostname(tc.name) != nil {
			t.Fatalf("%s: certificate for %v until %v", tc.name, c.Leaf.DNSNames, c.Leaf.NotAfter)
		}
	}
}

func TestTLSFallbackFlagChecks(t *testing.T) {
	_, err := openListener("tls+proxy://127.0.0.1:0", t.TempDir(), tlsOptions{path: "/ws", fallback: "127.0.0.1:8443"})
	var ue usageError
	if !errors.As(err, &ue) {
		t.Errorf("--tls-fallback behind a proxy: %v", err)
	}
	_, err = openListener("tls://127.0.0.1:0", t.TempDir(), tlsOptions{path: "/ws", decoyDir: "/nonexistent/site"})
	if !errors.As(err, &ue) {
		t.Errorf("--tls-decoy-dir of a missing directory: %v", err)
	}
	site := t.TempDir()
	os.WriteFile(filepath.Join(site, "index.html"), []byte("<p>mine</p>"), 0o644)
	ln := openTLS(t, "tls://127.0.0.1:0", t.TempDir(), tlsOptions{decoyDir: site, fallback: "127.0.0.1:1"})
	ln.Close()
}

// The recommended deployment, through the flags: the operator's
// certificate, nginx serving the site with it, and a tls:// listener with
// --tls-fallback to nginx. The Magpie client gets through; a browser gets
// nginx's site, over h2.
func TestTLSFallbackToNginx(t *testing.T) {
	const name = "chat.example.test"
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	if err := ensureSelfSigned(crt, key, name, time.Now()); err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(crt)
	keyPEM, _ := os.ReadFile(key)
	root := t.TempDir()
	page := []byte("<p>the operator's own site</p>\n")
	os.WriteFile(filepath.Join(root, "index.html"), page, 0o644)
	site := nginxtest.Start(t, "../../transport/tlsws/testdata/nginx-site.conf.tmpl", certPEM, keyPEM, name,
		map[string]string{"Root": root, "Timeout": "10s"})

	ln := openTLS(t, "tls://127.0.0.1:0", t.TempDir(), tlsOptions{certFile: crt, keyFile: key, fallback: site})
	if ln.template.SNI != name || ln.template.Cert != "" {
		t.Fatalf("endpoint SNI %q, pin %q; want the certificate's name and no pin", ln.template.SNI, ln.template.Cert)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	leaf, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf.Leaf)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := tlsws.ClientConfig{ServerName: ln.template.SNI, RootCAs: pool, Path: ln.template.Path}
	copy(cc.Secret[:], ln.template.Secret)
	c, err := tlsws.Dial(ctx, "tcp", ln.Addr().String(), cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("nothing accepted")
	}
	defer s.Close()
	go c.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("server read %q, %v", buf, err)
	}

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.HasPrefix(resp.Header.Get("Server"), "nginx") || !bytes.Equal(body, page) {
		t.Fatalf("a browser got %s, Server %q, %q; want nginx's site over h2", resp.Proto, resp.Header.Get("Server"), body)
	}
}
