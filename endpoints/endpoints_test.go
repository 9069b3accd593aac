package endpoints

import (
	"crypto/rand"
	"errors"
	"slices"
	"strconv"
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
		{Transport: "tcp", Address: "d:1", Priority: 3, Safe: true},
	}
	addrs := func(eps []Endpoint) (s []string) {
		for _, e := range eps {
			s = append(s, e.Address)
		}
		return s
	}
	check := func(what string, got []Endpoint, want ...string) {
		t.Helper()
		if !slices.Equal(addrs(got), want) {
			t.Fatalf("%s: %v, want %v", what, addrs(got), want)
		}
	}
	now := time.Now()
	// Stealth first, by priority; unsafe plain tcp left out.
	check("stealth first", Order(eps, Memory{}, false), "c:1", "b:1", "d:1")
	// Plain tcp that worked last still comes after stealth.
	check("tcp that worked", Order(eps, Memory{Good: map[string]time.Time{"tcp://d:1": now}}, false), "c:1", "b:1", "d:1")
	// The user asked for plain tcp: it is there, after stealth.
	check("plain tcp asked for", Order(eps, Memory{}, true), "c:1", "b:1", "a:1", "d:1")
	// A list of nothing but plain tcp is used as it is.
	check("only tcp", Order([]Endpoint{eps[0], eps[3]}, Memory{}, false), "a:1", "d:1")
	// What worked comes first within its kind.
	m := Memory{Good: map[string]time.Time{"obfs://b:1": now}, Blocked: map[string]time.Time{}}
	check("what worked", Order(eps, m, false), "b:1", "c:1", "d:1")
	// Found blocked after it worked: tried after the others, plain tcp
	// included.
	m.Blocked["obfs://b:1"] = now.Add(time.Second)
	check("blocked since it worked", Order(eps, m, false), "c:1", "d:1", "b:1")
	// Two suspects: the one blocked longest ago first.
	m.Blocked["tls://c:1"] = now.Add(2 * time.Second)
	check("two blocked", Order(eps, m, false), "d:1", "b:1", "c:1")
	// Working again after the block: no longer suspect.
	m.Good["tls://c:1"] = now.Add(3 * time.Second)
	check("worked again", Order(eps, m, false), "c:1", "d:1", "b:1")
}

func TestSafeIsSigned(t *testing.T) {
	kp, _ := curve.GenerateKeyPair(rand.Reader)
	s, err := Sign(List{Version: 1, Endpoints: []Endpoint{{Transport: "tcp", Address: "h:1", Safe: true}, {Transport: "tcp", Address: "h:2"}}}, kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Verify(s, kp.Public, time.Now())
	if err != nil || !l.Endpoints[0].Safe || l.Endpoints[1].Safe {
		t.Fatalf("safe marks after a round trip: %+v %v", l.Endpoints, err)
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

// The nodes of a cluster, listed at one priority, share out new clients:
// each client (its Spread) always puts them in the same order, different
// clients in different orders, and a node leaving the list moves only its
// own clients. Priority and what worked still come first.
func TestOrderSpread(t *testing.T) {
	nodes := []Endpoint{
		{Transport: "tcp", Address: "n1:7443", Priority: 100},
		{Transport: "tcp", Address: "n2:7443", Priority: 100},
		{Transport: "tcp", Address: "n3:7443", Priority: 100},
	}
	if got := Order(nodes, Memory{}, false); !slices.Equal(addrsOf(got), addrsOf(nodes)) {
		t.Fatalf("without Spread the list's order is kept: %v", got)
	}
	first := map[string]int{}
	const clients = 600
	for i := range clients {
		spread := []byte("device key " + strconv.Itoa(i))
		got := Order(nodes, Memory{Spread: spread}, false)
		if again := Order(slices.Clone(nodes), Memory{Spread: spread}, false); !slices.Equal(addrsOf(got), addrsOf(again)) {
			t.Fatalf("client %d: %v, then %v", i, got, again)
		}
		first[got[0].Address]++
		// n2 leaves: whoever did not start with it keeps its first node.
		without := Order([]Endpoint{nodes[0], nodes[2]}, Memory{Spread: spread}, false)
		if got[0].Address != "n2:7443" && without[0].Address != got[0].Address {
			t.Fatalf("client %d moved from %s to %s when n2 left", i, got[0].Address, without[0].Address)
		}
	}
	for _, n := range nodes {
		if c := first[n.Address]; c < clients/3-clients/10 || c > clients/3+clients/10 {
			t.Errorf("%s is first for %d of %d clients, want about a third: %v", n.Address, c, clients, first)
		}
	}
	// A lower priority number still comes first, and so does what worked.
	pref := append(slices.Clone(nodes), Endpoint{Transport: "tcp", Address: "n0:7443", Priority: 50})
	worked := Memory{Spread: []byte("x"), Good: map[string]time.Time{"tcp://n3:7443": time.Now()}}
	for i := range 50 {
		if got := Order(pref, Memory{Spread: []byte{byte(i)}}, false); got[0].Address != "n0:7443" {
			t.Fatalf("priority 50 after priority 100: %v", got)
		}
	}
	if got := Order(nodes, worked, false); got[0].Address != "n3:7443" {
		t.Fatalf("the node that worked is not first: %v", got)
	}
}

func addrsOf(eps []Endpoint) (s []string) {
	for _, e := range eps {
		s = append(s, e.Address)
	}
	return s
}
