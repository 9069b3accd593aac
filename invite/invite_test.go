package invite

import (
	"errors"
	"strings"
	"testing"
)

func sampleKey() (k [32]byte) {
	for i := range k {
		k[i] = byte(i * 7)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	in := Invite{ServerKey: sampleKey(), Addrs: []string{"127.0.0.1:7443", "[::1]:7443", "chat.example.org:443"}}
	s := in.String()
	if !strings.HasPrefix(s, Scheme) {
		t.Fatalf("String() = %q lacks scheme", s)
	}
	out, err := Parse("  " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if out.ServerKey != in.ServerKey || strings.Join(out.Addrs, ",") != strings.Join(in.Addrs, ",") {
		t.Fatalf("round trip: got %+v want %+v", out, in)
	}
	// Unknown parameters are ignored.
	if _, err := Parse(s + "?v=2&x=y"); err != nil {
		t.Fatalf("parameters: %v", err)
	}
	// The endpoint list survives a round trip.
	in.Endpoints = []byte{1, 2, 3, 250, 251}
	out, err = Parse(in.String())
	if err != nil || string(out.Endpoints) != string(in.Endpoints) {
		t.Fatalf("endpoints: %v %v", out.Endpoints, err)
	}
	// A server reachable only through other transports: no plain address,
	// only the list.
	bare := Invite{ServerKey: sampleKey(), Endpoints: []byte{9, 9}}
	if out, err := Parse(bare.String()); err != nil || len(out.Addrs) != 0 || string(out.Endpoints) != string(bare.Endpoints) {
		t.Fatalf("list-only invite: %+v %v", out, err)
	}
	if _, err := Parse(Scheme + strings.TrimPrefix(in.String(), Scheme) + "!!"); err == nil {
		t.Fatal("corrupt endpoint list accepted")
	}
	// A sign-up code, with and without a list.
	code := []byte("0123456789abcdef")
	for _, inv := range []Invite{{ServerKey: sampleKey(), Addrs: in.Addrs, SignupCode: code}, {ServerKey: sampleKey(), Addrs: in.Addrs, Endpoints: in.Endpoints, SignupCode: code}} {
		out, err := Parse(inv.String())
		if err != nil || string(out.SignupCode) != string(code) || string(out.Endpoints) != string(inv.Endpoints) {
			t.Fatalf("sign-up code round trip of %q: %+v %v", inv.String(), out, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	good := Invite{ServerKey: sampleKey(), Addrs: []string{"127.0.0.1:7443"}}.String()
	key := strings.TrimPrefix(strings.Split(good, "@")[0], Scheme)
	cases := map[string]string{
		"":                                    "must start with",
		"http://x":                            "must start with",
		Scheme + key:                          "missing '@'",
		Scheme + key[:10] + "@127.0.0.1:1":    "32 bytes",
		Scheme + key + "@":                    "no server address",
		Scheme + key + "@127.0.0.1":           "missing port",
		Scheme + key + "@127.0.0.1:0":         "port must be",
		Scheme + key + "@127.0.0.1:70000":     "port must be",
		Scheme + key + "@:7443":               "empty host",
		Scheme + key + "@a b:1":               "bad character",
		Scheme + key + strings.Repeat("@", 5): "",
		strings.Repeat("x", MaxLen+1):         "longer than",
		Scheme + key + "@" + strings.Repeat("h:1,", MaxAddrs) + "h:1": "more than",
		// An emptied or doubled endpoint list is an edited invite.
		good + "?e=":                "endpoint list",
		Scheme + key + "@?e=":       "endpoint list",
		good + "?e=AAAA&e=AAAA":     "two endpoint lists",
		good + "?x=1&e=AAAA&e=AAAB": "tampered",
		// A sign-up code is 16 bytes, once.
		good + "?s=AAAA": "sign-up code",
		good + "?s=MDEyMzQ1Njc4OWFiY2RlZg&s=MDEyMzQ1Njc4OWFiY2RlZg": "sign-up code",
	}
	for in, msg := range cases {
		_, err := Parse(in)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%.60q) = %v; want ErrInvalid", in, err)
			continue
		}
		if !strings.Contains(err.Error(), msg) {
			t.Errorf("Parse(%.60q) = %q; want it to mention %q", in, err, msg)
		}
	}
}

func TestFingerprint(t *testing.T) {
	var zero [32]byte
	// SHA-256 of 32 zero bytes begins 66687aadf862bd776c8fc18b8e9f8e20.
	if got, want := Fingerprint(zero), "6668 7aad f862 bd77 6c8f c18b 8e9f 8e20"; got != want {
		t.Fatalf("Fingerprint = %q, want %q", got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Invite{ServerKey: sampleKey(), Addrs: []string{"127.0.0.1:7443", "[::1]:1"}}.String())
	f.Add("magpie://@")
	f.Add("magpie://AAAA@h:1?x")
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must re-encode to something that parses the same.
		again, err := Parse(inv.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", inv.String(), err)
		}
		if again.ServerKey != inv.ServerKey || strings.Join(again.Addrs, ",") != strings.Join(inv.Addrs, ",") || string(again.Endpoints) != string(inv.Endpoints) {
			t.Fatalf("re-parse differs: %+v vs %+v", again, inv)
		}
	})
}

// The limits are inclusive: what is at a limit parses, one past it does not
// (TestParseErrors).
func TestLimitsAreInclusive(t *testing.T) {
	key := sampleKey()
	addrs := make([]string, MaxAddrs)
	for i := range addrs {
		addrs[i] = "h:1"
	}
	short := len(Invite{ServerKey: key, Addrs: []string{"h:1"}}.String())
	long := Invite{ServerKey: key, Addrs: []string{strings.Repeat("h", 1+MaxLen-short) + ":1"}} // MaxLen characters
	if n := len(long.String()); n != MaxLen {
		t.Fatalf("made an invite of %d characters, want %d", n, MaxLen)
	}
	for _, inv := range []Invite{
		{ServerKey: key, Addrs: addrs},
		{ServerKey: key, Addrs: []string{"127.0.0.1:1", "127.0.0.1:65535"}},
		long,
	} {
		out, err := Parse(inv.String())
		if err != nil || len(out.Addrs) != len(inv.Addrs) {
			t.Errorf("Parse(%.80q) = %+v, %v; want its %d addresses", inv.String(), out, err, len(inv.Addrs))
		}
	}
}
