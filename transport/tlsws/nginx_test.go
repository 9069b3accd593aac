package tlsws

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/nginxtest"
	"github.com/magpie-im/magpie/transport/transporttest"
)

// startNginx runs Debian's nginx as a TLS-terminating reverse proxy in front
// of backend (a BehindProxy listener), configured from
// testdata/nginx.conf.tmpl, and returns its address.
func startNginx(t *testing.T, backend string, c *testCert) string {
	return runNginx(t, "testdata/nginx.conf.tmpl", c, map[string]string{"Backend": backend})
}

// runNginx runs Debian's nginx configured from the template tmplFile, with
// c's certificate and key, and returns its address.
func runNginx(t *testing.T, tmplFile string, c *testCert, vars map[string]string) string {
	t.Helper()
	return nginxtest.Start(t, tmplFile, c.certPEM, c.keyPEM, testName, vars)
}

func TestBehindNginx(t *testing.T) {
	c := newCert(t, nil, false)
	cfg := ServerConfig{BehindProxy: true, Secret: testSecret(4), Decoy: GeneratedSite(testSeed)}
	backend := serve(t, cfg)
	front := startNginx(t, backend.Addr().String(), c)

	// Magpie's client, pinned to nginx's certificate.
	cc := ClientConfig{ServerName: testName, PinSHA256: SPKIPin(c.x509), Secret: cfg.Secret}
	conn := dial(t, front, cc)
	for _, n := range []int{1, 1000, 70000, 1 << 20} {
		transporttest.Echo(t, conn, randBytes(n))
	}

	// A browser gets the decoy, served through nginx.
	pool := x509.NewCertPool()
	pool.AddCert(c.x509)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: testName}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + front + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != string(decoyFile(t, "index.html")) {
		t.Fatalf("GET / through nginx: %d %q", resp.StatusCode, body)
	}
	if s := resp.Header.Get("Server"); !strings.HasPrefix(s, "nginx") {
		t.Errorf("Server header %q: not nginx's", s)
	}
	checkDecoySite(t, hc, "https://"+front)

	// The wrong secret through nginx gets the decoy's 404, not an error.
	bad := cc
	bad.Secret = testSecret(5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "tcp", front, bad); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("Dial through nginx with the wrong secret: %v", err)
	}
}
