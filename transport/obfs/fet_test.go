package obfs

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// filler is non-printable with exactly four set bits per byte, so it
// triggers no exemption by itself.
func filler(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if i%2 == 0 {
			b[i] = 0xf0
		} else {
			b[i] = 0x0f
		}
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestFETExemptRules(t *testing.T) {
	ex3 := func(printablePerUnit int) []byte { // 0xf0 then printable pop-4 bytes
		var b []byte
		for range 60 {
			b = append(b, 0xf0)
			b = append(b, []byte("3569")[:printablePerUnit]...)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		rule string
	}{
		{"filler", filler(200), ""},
		{"empty", nil, ""},
		{"Ex1 low", bytes.Repeat([]byte{0x01, 0x80, 0x03}, 100), "Ex1"},
		{"Ex1 exactly 3.4", []byte{0x0f, 0x0f, 0x0f, 0x0f, 0x01}, "Ex1"},
		{"Ex1 just above 3.4", []byte{0x0f, 0x0f, 0x0f, 0x0f, 0x03}, ""},
		{"Ex1 exactly 4.6", []byte{0x1f, 0x1f, 0x1f, 0x1f, 0x07}, "Ex1"},
		{"Ex1 just below 4.6", []byte{0x1f, 0x1f, 0x1f, 0x1f, 0x03}, ""},
		{"Ex1 high", bytes.Repeat([]byte{0xff, 0xfe}, 100), "Ex1"},
		{"Ex2", cat([]byte("ABCDEF"), filler(200)), "Ex2"},
		{"Ex2 five only", cat([]byte("ABCDE"), filler(200)), ""},
		{"Ex3", ex3(4), "Ex3"},
		{"Ex3 exactly half", cat(bytes.Repeat([]byte{0xf0, '3'}, 100)), ""},
		{"Ex4 21", cat(filler(100), []byte("356935693569356935693"), filler(100)), "Ex4"},
		{"Ex4 20", cat(filler(100), []byte("35693569356935693569"), filler(100)), ""},
		{"Ex5 TLS handshake", cat([]byte{0x16, 0x03, 0x01}, filler(200)), "Ex5"},
		{"Ex5 TLS data", cat([]byte{0x17, 0x03, 0x09}, filler(200)), "Ex5"},
		{"Ex5 TLS bad version", cat([]byte{0x16, 0x03, 0x0a}, filler(200)), ""},
		{"Ex5 TLS bad type", cat([]byte{0x18, 0x03, 0x01}, filler(200)), ""},
		{"Ex5 GET", cat([]byte("GET "), filler(200)), "Ex5"},
		{"Ex5 get", cat([]byte("get "), filler(200)), "Ex5"},
		{"Ex5 POST", cat([]byte("POST "), filler(200)), "Ex5"},
		{"Ex5 HEAD", cat([]byte("HEAD "), filler(200)), "Ex5"},
		{"Ex5 PUT", cat([]byte("PUT "), filler(200)), "Ex5"},
		{"Ex5 GETX", cat([]byte("GETX"), filler(200)), ""},
	} {
		exempt, rule := FETExempt(tc.in)
		if rule != tc.rule || exempt != (tc.rule != "") {
			t.Errorf("%s: got (%v, %q), want %q", tc.name, exempt, rule, tc.rule)
		}
	}
}

func TestFETRandomNotExempt(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	exempt := 0
	buf := make([]byte, 1000)
	for range 1000 {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if ok, rule := FETExempt(buf); ok {
			exempt++
			// Only Ex2 (six printable bytes up front, p ≈ 0.26%) is
			// plausible for random data.
			if rule != "Ex2" {
				t.Fatalf("random buffer exempt by %s", rule)
			}
		}
	}
	if exempt > 10 {
		t.Fatalf("%d of 1000 random buffers exempt", exempt)
	}
}

// TestFirstPacketsExempt dials a real server 1000 times and checks every
// first packet: one write, at most 1400 bytes, exempt, with a mix of rules.
func TestFirstPacketsExempt(t *testing.T) {
	s := startEcho(t, Config{})
	rules := map[string]int{}
	lengths := map[int]bool{}
	const n = 1000
	for range n {
		raw, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		rc := &recConn{Conn: raw}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := Client(ctx, rc, s.cert)
		cancel()
		if err != nil {
			raw.Close()
			t.Fatal(err)
		}
		c.Close()
		if len(rc.writes) != 1 {
			t.Fatalf("handshake made %d writes", len(rc.writes))
		}
		first := rc.writes[0]
		if len(first) > maxFirstPacket {
			t.Fatalf("first packet of %d bytes", len(first))
		}
		ok, rule := FETExempt(first)
		if !ok {
			t.Fatalf("first packet not exempt: %x", first)
		}
		rules[rule]++
		lengths[len(first)] = true
	}
	t.Logf("rules: %v, distinct lengths: %d", rules, len(lengths))
	for _, r := range []string{"Ex1", "Ex2", "Ex4"} {
		if rules[r] < n/10 {
			t.Errorf("rule %s used %d times of %d: strategies not mixed", r, rules[r], n)
		}
	}
	if len(lengths) < n/4 {
		t.Errorf("only %d distinct first-packet lengths", len(lengths))
	}
}
