package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestAdminListener: serve exposes Prometheus metrics and pprof on its
// admin listener, apart from client traffic.
func TestAdminListener(t *testing.T) {
	admin := freeAddr(t)
	srv := start(t, nil, "serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--admin", admin)
	inv, ok := srv.waitLine("magpie://")
	if !ok {
		t.Fatalf("no invite:\n%s", srv)
	}
	if !strings.Contains(srv.stdout.String(), "admin:       http://"+admin+"/metrics") {
		t.Fatalf("banner does not name the admin listener:\n%s", srv.stdout.String())
	}
	s := &server{proc: srv, invite: inv}
	alice := newUser(t, s, "alice")
	newUser(t, s, "bob")
	mustRun(t, "--home", alice, "send", "bob", "hello")
	get := func(path string) string {
		t.Helper()
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b)
	}
	metrics := get("/metrics")
	for _, want := range []string{"magpie_messages_in_total 1", "magpie_queue_depth 1", "magpie_handshakes_total{result=\"ok\"}", "magpie_store_commit_seconds_bucket", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(get("/debug/pprof/"), "goroutine") {
		t.Error("/debug/pprof/ is not the pprof index")
	}
	srv.signal(os.Interrupt)
	srv.waitExit(10 * time.Second)
}

// --memory-limit sets the Go runtime's soft memory limit (visible in the
// Go collector's go_gc_gomemlimit_bytes); a limit too small to run in is
// refused with the flag's name.
func TestServeMemoryLimit(t *testing.T) {
	mustFail(t, []string{"--memory-limit", "64 MiB"}, "serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--memory-limit", "1000")
	admin := freeAddr(t)
	srv := start(t, nil, "serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--admin", admin, "--memory-limit", "268435456")
	if _, ok := srv.waitLine("magpie://"); !ok {
		t.Fatalf("no invite:\n%s", srv)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "go_gc_gomemlimit_bytes 2.68435456e+08") {
		t.Errorf("/metrics does not show the 256 MiB limit:\n%s", grepLines(string(b), "gomemlimit"))
	}
	srv.signal(os.Interrupt)
	srv.waitExit(10 * time.Second)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}
