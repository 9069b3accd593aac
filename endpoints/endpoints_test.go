package endpoints

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/wire"
)

func TestSignVerify(t *testing.T) {
	kp, _ := curve.GenerateKeyPair(rand.Reader)
	now := time.Now()
	l := List{Version: 7, Issued: now, Endpoints: []Endpoint{
		{Transport: "tcp", Address: "127.0.0.1:7443", Priority: 10},
		{Transport: "obfs", Address: "127.0.0.1:7444", Cert: "abc", Priority: 5},
		{Transport: "tls", Address: "127.0.0.1:8443", SNI: "chat.example.org", Secret: []byte{1, 2}, Path: "/ws", Expires: now.Add(time.Hour)},
		{Transport: "tcp", Address: "10.0.0.1:1", Expires: now.Add(-time.Minute)}, // already expired
	}}
	s, err := Sign(l, kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(s, kp.Public, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 7 || len(got.Endpoints) != 3 || got.Endpoints[2].SNI != "chat.example.org" || got.Endpoints[1].Cert != "abc" {
		t.Fatalf("verified list %+v", got)
	}
	// Later, the tls endpoint expires too.
	if got, _ := Verify(s, kp.Public, now.Add(2*time.Hour)); len(got.Endpoints) != 2 {
		t.Fatalf("after expiry: %+v", got.Endpoints)
	}
	other, _ := curve.GenerateKeyPair(rand.Reader)
	if _, err := Verify(s, other.Public, now); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another server's key: %v", err)
	}
	tampered := proto.Clone(s).(*wire.SignedEndpointList)
	tampered.List[len(tampered.List)-1] ^= 1
	if _, err := Verify(tampered, kp.Public, now); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered list: %v", err)
	}
	if _, err := Verify(&wire.SignedEndpointList{List: make([]byte, MaxSize+1), Signature: make([]byte, 64)}, kp.Public, now); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestOrder(t *testing.T) {
	eps := []Endpoint{
		{Transport: "tcp", Address: "a:1", Priority: 1},
		{Transport: "obfs", Address: "b:1", Priority: 2},
		{Transport: "tls", Address: "c:1", Priority: 0},
	}
	got := Order(eps, nil)
	if got[0].Address != "c:1" || got[1].Address != "a:1" {
		t.Fatalf("by priority: %+v", got)
	}
	got = Order(eps, map[string]time.Time{"obfs://b:1": time.Now()})
	if got[0].Address != "b:1" {
		t.Fatalf("what worked comes first: %+v", got)
	}
}

func FuzzVerify(f *testing.F) {
	kp, _ := curve.GenerateKeyPair(rand.Reader)
	s, _ := Sign(List{Version: 1, Endpoints: []Endpoint{{Transport: "tcp", Address: "h:1"}}}, kp.Private)
	b, _ := proto.Marshal(s)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var s wire.SignedEndpointList
		if proto.Unmarshal(b, &s) != nil {
			return
		}
		Verify(&s, kp.Public, time.Now()) // must not panic
	})
}

func TestLink(t *testing.T) {
	e := Endpoint{Transport: "tls", Address: "[2001:db8::1]:443", SNI: "cdn.example.com", Cert: "pinpin", Secret: []byte{1, 2, 3}, Path: "/ws", Priority: -5}
	got, err := ParseLink(FormatLink(e))
	if err != nil || got.Key() != e.Key() || got.SNI != e.SNI || string(got.Secret) != string(e.Secret) || got.Path != "/ws" || got.Priority != -5 || got.Cert != "pinpin" {
		t.Fatalf("round trip: %+v %v (%s)", got, err, FormatLink(e))
	}
	for _, bad := range []string{"", "magpie://x", "magpie-relay://host:1", "magpie-relay://tls@host", "magpie-relay://tls@h:1?secret=%%%"} {
		if _, err := ParseLink(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseLink(%q) = %v", bad, err)
		}
	}
}

// The limits are inclusive: a signed list of exactly MaxSize bytes and
// MaxEndpoints endpoints verifies, one more of either does not; a link of
// 4,096 characters parses, 4,097 do not; a link names only what its
// endpoint has.
func TestLimitsAreInclusive(t *testing.T) {
	kp, _ := curve.GenerateKeyPair(rand.Reader)
	now := time.Now()
	sized := func(n int) *wire.SignedEndpointList { // a signed list of n bytes
		t.Helper()
		for pad := n; pad > 0; pad-- {
			s, err := Sign(List{Version: 1, Issued: now, Endpoints: []Endpoint{{Transport: "tcp", Address: "h:1", Path: string(make([]byte, pad))}}}, kp.Private)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.List) == n {
				return s
			}
		}
		t.Fatalf("no list of %d bytes", n)
		return nil
	}
	if _, err := Verify(sized(MaxSize), kp.Public, now); err != nil {
		t.Errorf("a list of MaxSize bytes: %v", err)
	}
	if _, err := Verify(sized(MaxSize+1), kp.Public, now); !errors.Is(err, ErrMalformed) {
		t.Errorf("a list of MaxSize+1 bytes: %v, want ErrMalformed", err)
	}
	many := func(n int) *wire.SignedEndpointList {
		l := List{Version: 1, Issued: now}
		for i := range n {
			l.Endpoints = append(l.Endpoints, Endpoint{Transport: "tcp", Address: "h:" + string(rune('0'+i%10))})
		}
		s, err := Sign(l, kp.Private)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got, err := Verify(many(MaxEndpoints), kp.Public, now); err != nil || len(got.Endpoints) != MaxEndpoints {
		t.Errorf("a list of MaxEndpoints endpoints: %d, %v", len(got.Endpoints), err)
	}
	if _, err := Verify(many(MaxEndpoints+1), kp.Public, now); !errors.Is(err, ErrMalformed) {
		t.Errorf("a list of MaxEndpoints+1 endpoints: %v, want ErrMalformed", err)
	}

	plain := FormatLink(Endpoint{Transport: "tcp", Address: "h:1"})
	if strings.Contains(plain, "secret") {
		t.Errorf("a link without a secret names one: %s", plain)
	}
	link := func(n int) string { // a link of n characters
		e := Endpoint{Transport: "tcp", Address: "h:1", Path: "/"}
		e.Path += strings.Repeat("p", n-len(FormatLink(e)))
		return FormatLink(e)
	}
	if l := link(4096); len(l) != 4096 {
		t.Fatalf("made a link of %d characters", len(l))
	} else if _, err := ParseLink(l); err != nil {
		t.Errorf("a link of 4,096 characters: %v", err)
	}
	if _, err := ParseLink(link(4097)); !errors.Is(err, ErrMalformed) {
		t.Errorf("a link of 4,097 characters: %v, want ErrMalformed", err)
	}
}
