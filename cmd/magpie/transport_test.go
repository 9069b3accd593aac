package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEverythingOverTLSTransport: with the tcp endpoint retired, sign-up,
// key upload, messages and the probe all travel over the TLS-shaped
// transport (sign-up too: breaking it means breaking the whole link).
func TestEverythingOverTLSTransport(t *testing.T) {
	data := t.TempDir()
	tcpAddr, tlsAddr := freeAddr(t), freeAddr(t)
	srv, err := startServe(t, data, tcpAddr, "tls://"+tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(srv.stdout.String(), "listening:   tls "+tlsAddr) {
		t.Fatalf("banner does not list the tls listener:\n%s", srv.stdout.String())
	}
	mustRun(t, "endpoints", "retire", "--data", data, "tcp://"+tcpAddr)
	// The running server republishes within about a second.
	var inv string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(data, "invite.txt"))
		inv = strings.TrimSpace(string(b))
		if inv != "" && !strings.Contains(inv, "@"+tcpAddr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("invite still names the retired endpoint: %s", inv)
		}
	}
	if got := strings.TrimSpace(mustRun(t, "invite", "--data", data).stdout); got != inv {
		t.Fatalf("magpie invite = %q, invite.txt = %q", got, inv)
	}
	srv.invite = inv
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	mustRun(t, "--home", alice, "send", "bob", "over tls")
	evs := decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)
	if m := messages(evs); len(m) != 1 || m[0].Text != "over tls" {
		t.Fatalf("bob's inbox: %+v", evs)
	}
	var probes []struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
		Verdict   string `json:"verdict"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "--home", alice, "probe", "--json").stdout), &probes); err != nil {
		t.Fatal(err)
	}
	sawTLS := false
	for _, p := range probes {
		if p.Transport == "tcp" && p.Address == tcpAddr {
			t.Fatalf("the retired endpoint is still probed: %+v", probes)
		}
		if p.Transport == "tls" && p.Verdict == "ok" {
			sawTLS = true
		}
	}
	if !sawTLS {
		t.Fatalf("probe: %+v", probes)
	}
	srv.stop(t)
}
