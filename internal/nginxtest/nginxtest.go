// Package nginxtest runs Debian's nginx for tests: a real web server on
// loopback, as a reverse proxy in front of a Magpie listener, as the
// fallback of one, or as the reference a listener is compared with.
package nginxtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// Start runs Debian's nginx configured from the template tmplFile, with
// certPEM and keyPEM as cert.pem and key.pem in its directory, and returns
// its address; it is stopped when the test ends. The template gets vars
// plus Dir (its directory, for those files, logs and temporary files),
// Listen (a free loopback address) and ServerName.
//
// Without nginx the test is skipped, unless MAGPIE_REQUIRE_NGINX=1 (CI).
func Start(t testing.TB, tmplFile string, certPEM, keyPEM []byte, serverName string, vars map[string]string) string {
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
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
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
	all := map[string]string{"Dir": dir, "Listen": listen, "ServerName": serverName}
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
