package censor

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
)

// captureClientHello returns the first flight of a real crypto/tls client
// (the ClientHello record) for serverName ("" sends no SNI).
func captureClientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg := &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""}
		tls.Client(a, cfg).Handshake()
		a.Close()
	}()
	defer func() { b.Close(); <-done }()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, int(binary.BigEndian.Uint16(hdr[3:])))
	if _, err := io.ReadFull(b, rec); err != nil {
		t.Fatal(err)
	}
	return append(hdr, rec...)
}

// splitRecords re-frames a single-record ClientHello as records carrying at
// most size bytes of the handshake message each.
func splitRecords(ch []byte, size int) []byte {
	body := ch[5:]
	var out []byte
	for len(body) > 0 {
		n := min(size, len(body))
		out = append(out, ch[0], ch[1], ch[2], byte(n>>8), byte(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}

func TestParseClientHelloSNI(t *testing.T) {
	ch := captureClientHello(t, "Blocked.Example")
	for i := range len(ch) {
		if _, done, err := parseClientHelloSNI(ch[:i]); done || err != nil {
			t.Fatalf("prefix of %d of %d bytes: done %v, err %v; want need more", i, len(ch), done, err)
		}
	}
	sni, done, err := parseClientHelloSNI(ch)
	if err != nil || !done || sni != "Blocked.Example" {
		t.Fatalf("got %q %v %v", sni, done, err)
	}
	// The handshake message split across records (40 bytes each).
	split := splitRecords(ch, 40)
	for i := range len(split) {
		if _, done, err := parseClientHelloSNI(split[:i]); done || err != nil {
			t.Fatalf("split prefix %d: done %v, err %v", i, done, err)
		}
	}
	if sni, done, err := parseClientHelloSNI(split); err != nil || !done || sni != "Blocked.Example" {
		t.Fatalf("split: got %q %v %v", sni, done, err)
	}
	// No SNI.
	if sni, done, err := parseClientHelloSNI(captureClientHello(t, "")); err != nil || !done || sni != "" {
		t.Fatalf("no SNI: got %q %v %v", sni, done, err)
	}
	// Not a ClientHello.
	for _, bad := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0x16, 0x03, 0x01, 0x00, 0x00},                                                   // empty record
		{0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00},                           // ServerHello type
		{0x17, 0x03, 0x03, 0x00, 0x10},                                                   // application data
		append([]byte{0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04}, 1, 2, 3, 4), // truncated body
	} {
		if _, _, err := parseClientHelloSNI(bad); !errors.Is(err, errNotClientHello) {
			t.Fatalf("%x: err %v, want errNotClientHello", bad, err)
		}
	}
}

func TestMatchSNI(t *testing.T) {
	patterns := []string{"blocked.example", "*.wild.example", ".dot.example"}
	for name, want := range map[string]bool{
		"blocked.example":      true,
		"BLOCKED.example.":     true,
		"www.blocked.example":  false,
		"a.wild.example":       true,
		"wild.example":         false,
		"dot.example":          true,
		"x.y.dot.example":      true,
		"notdot.example":       false,
		"ok.example":           false,
		"":                     false,
		"blocked.example.evil": false,
	} {
		if _, got := matchSNI(name, patterns); got != want {
			t.Errorf("matchSNI(%q) = %v, want %v", name, got, want)
		}
	}
}
