package tlsws

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/magpie-im/magpie/transport/transporttest"
)

// startNginx runs Debian's nginx as a TLS-terminating reverse proxy in front
// of backend (a BehindProxy listener), configured from
// testdata/nginx.conf.tmpl, and returns its address.
func startNginx(t *testing.T, backend string, c *testCert) string {
	return runNginx(t, "testdata/nginx.conf.tmpl", c, map[string]string{"Backend": backend})
}

// runNginx runs Debian's nginx configured from the template tmplFile, with
// c's certificate and key in its directory, and returns its address. The
// template gets vars plus Dir, Listen and ServerName.
func runNginx(t *testing.T, tmplFile string, c *testCert, vars map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err2 := os.Stat(p); err2 == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		if os.Getenv("MAGPIE_REQUIRE_NGINX") == "1" {
			t.Fatal("nginx not found; install it with: apt-get install -y nginx")
		}
		t.Skip("nginx not found (apt-get install -y nginx); set MAGPIE_REQUIRE_NGINX=1 to make this a failure")
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// A free port: nginx cannot report the one it bound.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := probe.Addr().String()
	probe.Close()

	tmpl, err := template.ParseFiles(tmplFile)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.Create(filepath.Join(dir, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]string{"Dir": dir, "Listen": listen, "ServerName": testName}
	for k, v := range vars {
		all[k] = v
	}
	err = tmpl.Execute(conf, all)
	conf.Close()
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf.Name(), "-g", "daemon off;")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return listen
		}
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %v\n%s\n%s", err, out.String(), log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s: %s", listen, out.String())
		}
	}
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
