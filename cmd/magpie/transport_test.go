package main

import (
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
	probes := decodeLines[struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
		Verdict   string `json:"verdict"`
	}](t, mustRun(t, "--home", alice, "probe", "--json").stdout)
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

// TestObfsAndRelay: clients reach the server over obfs only; a client whose
// every known endpoint is dead gets through a friend's relay, added by link.
func TestObfsAndRelay(t *testing.T) {
	data := t.TempDir()
	tcpAddr, obfsAddr := freeAddr(t), freeAddr(t)
	srv, err := startServe(t, data, tcpAddr, "obfs://"+obfsAddr)
	if err != nil {
		t.Fatal(err)
	}
	original := srv.invite
	mustRun(t, "endpoints", "retire", "--data", data, "tcp://"+tcpAddr)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		inv := strings.TrimSpace(mustRun(t, "invite", "--data", data).stdout)
		if !strings.Contains(inv, "@"+tcpAddr) {
			srv.invite = inv
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("invite never dropped the retired endpoint")
		}
	}
	alice := newUser(t, srv, "alice")
	mustRun(t, "--home", alice, "send", "alice", "note to self over obfs")

	// A relay run by a friend, in front of the server's tcp endpoint.
	relayAddr := freeAddr(t)
	rel := start(t, nil, "relay", "--upstream", tcpAddr, "--listen", "tls://"+relayAddr, "--data", filepath.Join(t.TempDir(), "relay"))
	link, ok := rel.waitLine("magpie-relay://")
	if !ok {
		t.Fatalf("relay printed no link:\n%s", rel)
	}
	// bob's invite names only an address that is now dead.
	dead := freeAddr(t)
	bobInvite := strings.Replace(strings.Split(original, "?")[0], "@"+tcpAddr, "@"+dead, 1)
	bob := filepath.Join(t.TempDir(), "bob")
	mustRun(t, "--home", bob, "init", "--invite", bobInvite)
	mustRun(t, "--home", bob, "relays", "add", link)
	mustRun(t, "--home", bob, "register", "bob")
	mustRun(t, "--home", alice, "send", "bob", "through the relay")
	evs := decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)
	if m := messages(evs); len(m) != 1 || m[0].Text != "through the relay" {
		t.Fatalf("bob's inbox: %+v", evs)
	}
	rel.signal(os.Interrupt)
	if code, ok := rel.waitExit(10 * time.Second); !ok || code != 0 {
		t.Fatalf("relay did not stop cleanly: %d %v\n%s", code, ok, rel)
	}
	srv.stop(t)
}

// TestStealthFirst: a server on plain tcp and obfs. Its clients never dial
// plain tcp, which is not marked safe: probe reports only obfs (ranked,
// stealthy), until the user allows plain tcp or the operator marks the
// endpoint safe; and the probe reorders the client only when asked.
func TestStealthFirst(t *testing.T) {
	data := t.TempDir()
	tcpAddr, obfsAddr := freeAddr(t), freeAddr(t)
	srv, err := startServe(t, data, tcpAddr, "obfs://"+obfsAddr)
	if err != nil {
		t.Fatal(err)
	}
	type probe struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
		Verdict   string `json:"verdict"`
		Stealthy  bool   `json:"stealthy"`
	}
	probed := func(home string) (got []string) {
		t.Helper()
		for _, p := range decodeLines[probe](t, mustRun(t, "--home", home, "probe", "--json", "--timeout", "3s").stdout) {
			if p.Verdict != "ok" || p.Stealthy != (p.Transport != "tcp") {
				t.Fatalf("probe: %+v", p)
			}
			got = append(got, p.Transport)
		}
		return got
	}
	alice := newUser(t, srv, "alice")
	if got := probed(alice); strings.Join(got, " ") != "obfs" {
		t.Fatalf("probed %v, want obfs only (plain tcp is not marked safe)", got)
	}
	if out := mustRun(t, "--home", alice, "probe").stdout; !strings.Contains(out, "probe --reorder") {
		t.Fatalf("probe without --reorder does not say the order is unchanged:\n%s", out)
	}
	mustRun(t, "--home", alice, "settings", "plain-tcp", "on")
	if got := probed(alice); strings.Join(got, " ") != "obfs tcp" {
		t.Fatalf("with plain-tcp on, probed %v, want obfs then tcp", got)
	}
	// The operator vouches for plain tcp: every client may use it.
	mustRun(t, "endpoints", "add", "--data", data, "--transport", "tcp", "--address", tcpAddr, "--safe")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if strings.Contains(mustRun(t, "endpoints", "list", "--data", data).stdout, "safe") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the safe mark was not recorded")
		}
	}
	// Marked safe, the listener is listed once, not beside its unmarked
	// self.
	type endpoint struct {
		Transport string `json:"transport"`
		Safe      bool   `json:"safe"`
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		mustRun(t, "--home", alice, "inbox") // connects, and so refreshes the list
		var tcps, safe int
		for _, e := range decodeLines[endpoint](t, mustRun(t, "--home", alice, "relays", "list", "--json").stdout) {
			if e.Transport == "tcp" {
				tcps++
				if e.Safe {
					safe++
				}
			}
		}
		if safe > 0 {
			if tcps != 1 {
				t.Fatalf("alice dials %d tcp endpoints, want the safe one alone", tcps)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alice never learned that plain tcp is safe")
		}
	}
	bob := newUser(t, srv, "bob") // learns the list in band
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if got := probed(bob); strings.Join(got, " ") == "obfs tcp" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with tcp marked safe, bob probed %v, want obfs then tcp", probed(bob))
		}
	}
	srv.stop(t)
}
