package censor

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

// filler returns n non-printable bytes of exactly 4 set bits each (0x0f,
// 0xf0, …): the popcount of random data, with no printable byte.
func filler(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if i%2 == 0 {
			b[i] = 0x0f
		} else {
			b[i] = 0xf0
		}
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func repeat(pattern []byte, n int) []byte { return bytes.Repeat(pattern, n) }

func TestFETExemptRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name   string
		in     []byte
		exempt bool
		rule   string // prefix of the reason when exempt
	}{
		{"random 1000", randBytes(rng, 1000), false, ""},
		{"random 100", randBytes(rng, 100), false, ""},
		{"filler (4 bits, unprintable)", filler(300), false, ""},
		{"empty", nil, true, "empty"},

		// Ex1: popcount per byte <= 3.4 or >= 4.6, boundaries included.
		{"ex1 zeros", make([]byte, 100), true, "ex1"},
		{"ex1 0xff", repeat([]byte{0xff}, 100), true, "ex1"},
		{"ex1 exactly 3.4", repeat([]byte{0x0f, 0x0f, 0x0f, 0x07, 0x03}, 20), true, "ex1"},
		{"ex1 3.6 not exempt", repeat([]byte{0x0f, 0x0f, 0x0f, 0x0f, 0x03}, 20), false, ""},
		{"ex1 exactly 4.6", repeat([]byte{0xf8, 0xf8, 0xf8, 0xf0, 0xf0}, 20), true, "ex1"},
		{"ex1 4.4 not exempt", repeat([]byte{0xf8, 0xf8, 0xf0, 0xf0, 0xf0}, 20), false, ""},

		// Ex2: the first six bytes printable.
		{"ex2 six printable", cat([]byte("ABCDEF"), filler(200)), true, "ex2"},
		{"ex2 five printable only", cat([]byte("ABCDE"), filler(200)), false, ""},

		// Ex3: more than half printable ('3' and '5' have 4 set bits).
		{"ex3 two thirds printable", repeat([]byte{0x0f, '3', '5'}, 100), true, "ex3"},
		{"ex3 exactly half not exempt", repeat([]byte{0x0f, '3'}, 100), false, ""},

		// Ex4: more than 20 contiguous printable bytes.
		{"ex4 run of 21", cat(filler(100), repeat([]byte("3"), 21), filler(100)), true, "ex4"},
		{"ex4 run of 20 not exempt", cat(filler(100), repeat([]byte("3"), 20), filler(100)), false, ""},

		// Ex5: TLS or HTTP prefixes.
		{"ex5 TLS handshake 1.0", cat([]byte{0x16, 0x03, 0x01}, filler(200)), true, "ex5"},
		{"ex5 TLS appdata 1.2", cat([]byte{0x17, 0x03, 0x03}, filler(200)), true, "ex5"},
		{"ex5 TLS minor 9", cat([]byte{0x16, 0x03, 0x09}, filler(200)), true, "ex5"},
		{"TLS-like minor 10 not exempt", cat([]byte{0x16, 0x03, 0x0a}, filler(200)), false, ""},
		{"TLS-like alert not exempt", cat([]byte{0x15, 0x03, 0x01}, filler(200)), false, ""},
		{"ex5 POST", cat([]byte("POST"), filler(200)), true, "ex5"},
		{"ex5 GET", cat([]byte("GET "), filler(200)), true, "ex5"},
		{"ex5 HEAD", cat([]byte("HEAD"), filler(200)), true, "ex5"},
		{"GETX not exempt", cat([]byte("GETX"), filler(200)), false, ""},

		// Real protocols.
		{"HTTP request", []byte("GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n"), true, ""},
		{"magpie tcp first message", magpieFrame(rng, 96+40+16), false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exempt, why := FETExempt(tc.in)
			if exempt != tc.exempt {
				t.Fatalf("FETExempt = %v (%s), want %v", exempt, why, tc.exempt)
			}
			if tc.rule != "" && !strings.HasPrefix(why, tc.rule) {
				t.Fatalf("reason %q, want rule %s", why, tc.rule)
			}
			if !exempt && !strings.HasPrefix(why, "not exempt") {
				t.Fatalf("reason %q", why)
			}
		})
	}
}

func TestFETExemptRealClientHello(t *testing.T) {
	ch := captureClientHello(t, "example.com")
	if exempt, why := FETExempt(ch); !exempt {
		t.Fatalf("a TLS ClientHello is not exempt: %s", why)
	}
}

// Random data is the case the rule exists for: almost none is exempt. The
// chance that uniformly random bytes are exempt is about 0.26% (Ex2, six
// printable bytes: (95/256)^6); Ex1, Ex3 and Ex4 are far rarer at these
// lengths.
func TestFETExemptRandomRarelyExempt(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const samples = 2000
	exempt := 0
	for i := range samples {
		n := 100 + i%3900
		if ok, _ := FETExempt(randBytes(rng, n)); ok {
			exempt++
		}
	}
	if exempt > samples/50 {
		t.Fatalf("%d of %d random packets exempt, want about 0.3%%", exempt, samples)
	}
}

// magpieFrame returns a plain-tcp link frame of a random n-byte message.
func magpieFrame(rng *rand.Rand, n int) []byte {
	b := make([]byte, 2, 2+n)
	binary.BigEndian.PutUint16(b, uint16(n))
	return append(b, randBytes(rng, n)...)
}

func TestLooksLikeMagpieTCP(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	if !LooksLikeMagpieTCP(magpieFrame(rng, 96)) {
		t.Fatal("smallest IK message 1 not flagged")
	}
	if !LooksLikeMagpieTCP(magpieFrame(rng, 96+4096)) {
		t.Fatal("largest IK message 1 not flagged")
	}
	if LooksLikeMagpieTCP(magpieFrame(rng, 95)) {
		t.Fatal("95-byte frame flagged (shorter than any IK message 1)")
	}
	f := magpieFrame(rng, 200)
	if LooksLikeMagpieTCP(f[:len(f)-1]) || LooksLikeMagpieTCP(append(f, 0)) {
		t.Fatal("frame whose length does not match the packet flagged")
	}
	if LooksLikeMagpieTCP(captureClientHello(t, "example.com")) {
		t.Fatal("TLS ClientHello flagged")
	}
	// A TLS-looking record whose length happens to fit is still not Magpie.
	tlsish := make([]byte, 0x1603+2)
	tlsish[0], tlsish[1] = 0x16, 0x03
	if LooksLikeMagpieTCP(tlsish) {
		t.Fatal("TLS record prefix flagged")
	}
	if LooksLikeMagpieTCP([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n" + strings.Repeat("x", 200))) {
		t.Fatal("HTTP flagged")
	}
	// Random data: a false match needs the first two bytes to equal the
	// length, 1 in 65536 per packet; the seeded samples have none.
	for i := range 5000 {
		n := 98 + i%4000
		if p := randBytes(rng, n); LooksLikeMagpieTCP(p) {
			t.Fatalf("random packet of %d bytes flagged", n)
		}
	}
}
