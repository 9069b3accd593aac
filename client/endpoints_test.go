package client_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/wire"
)

// publishing makes a server serve a signed endpoint list that the test
// can change.
type publishing struct {
	mu   sync.Mutex
	list *wire.SignedEndpointList
	key  curve.PrivateKey
	ver  uint64
}

// publishingServer starts a server that publishes the list pub holds,
// signed with its own key.
func publishingServer(t testing.TB, cfg server.Config) (*servertest.Server, *publishing) {
	t.Helper()
	pub := &publishing{}
	cfg.Endpoints = pub.current
	s := servertest.Start(t, cfg)
	pub.key = curve.PrivateKey(s.Key.Private)
	return s, pub
}

func (p *publishing) set(t testing.TB, eps ...endpoints.Endpoint) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ver++
	l, err := endpoints.Sign(endpoints.List{Version: p.ver, Issued: time.Now(), Endpoints: eps}, p.key)
	if err != nil {
		t.Fatal(err)
	}
	p.list = l
}

func (p *publishing) current() *wire.SignedEndpointList {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.list
}

// invite is an invite for s that carries the current list, and addrs.
func (p *publishing) invite(t testing.TB, s *servertest.Server, addrs ...string) invite.Invite {
	t.Helper()
	b, err := proto.Marshal(p.current())
	if err != nil {
		t.Fatal(err)
	}
	return invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: addrs, Endpoints: b}
}

func tcp(addr string, priority int) endpoints.Endpoint {
	return endpoints.Endpoint{Transport: "tcp", Address: addr, Priority: priority}
}

// Clients learn a new endpoint from the server itself; a client whose
// first endpoint is black-holed gets through another at once, and then
// tries first the one that worked.
func TestEndpointListInBandAndFailover(t *testing.T) {
	t.Parallel()
	s, pub := publishingServer(t, server.Config{})
	second := s.AddListener(t)
	pub.set(t, tcp(s.Addr, 1))

	// The invite names only the first address.
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})

	// The operator adds the second endpoint; clients learn it in band.
	pub.set(t, tcp(s.Addr, 1), tcp(second, 2))
	send(t, alice, "bob", "one")
	syncOK(t, alice)
	if eps, err := alice.Endpoints(testCtx(t)); err != nil || len(eps) != 2 {
		t.Fatalf("alice knows %+v (%v)", eps, err)
	}
	bsub := subscribe(t, bob)
	syncOK(t, bob)
	if got := incoming(drain(bsub)); !slices.Equal(got, []string{"one"}) {
		t.Fatalf("bob got %q", got)
	}

	// A client whose preferred endpoint is black-holed by a censor gets
	// through another one, after one stagger rather than a timeout.
	hole := blackHole(t)
	pub.set(t, tcp(hole, 0), tcp(second, 2))
	carol := open(t, initHome(t, pub.invite(t, s, hole), client.Options{}))
	start := time.Now()
	if _, err := carol.Register(testCtx(t), "carol"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failover past a black hole took %v", d)
	}
	send(t, carol, "bob", "through the second door")
	syncOK(t, carol)
	syncOK(t, bob)
	if got := incoming(drain(bsub)); !slices.Equal(got, []string{"through the second door"}) {
		t.Fatalf("bob got %q", got)
	}
	// The endpoint that worked is remembered and tried first.
	if eps, _ := carol.Endpoints(testCtx(t)); len(eps) == 0 || eps[0].Address != second {
		t.Fatalf("dial order %+v", eps)
	}
}

// An invite whose endpoint list another key signed is refused; such a list
// served in band is ignored.
func TestInviteWithTamperedEndpointListRefused(t *testing.T) {
	t.Parallel()
	s, pub := publishingServer(t, server.Config{})
	pub.key = curve.PrivateKey(servertest.NewKey(t).Private) // signed by the wrong key
	pub.set(t, tcp("127.0.0.1:1", 0))
	opts := client.Options{Home: t.TempDir(), Unlocker: testKey}
	if err := client.Init(testCtx(t), opts, pub.invite(t, s, s.Addr)); err == nil {
		t.Fatal("Init accepted an invite whose endpoint list another key signed")
	}
	c := newUser(t, s.Invite, "carol", client.Options{})
	eps, err := c.Endpoints(testCtx(t))
	if err != nil || len(eps) != 1 || eps[0].Address != s.Addr {
		t.Fatalf("endpoints after a forged list: %+v %v", eps, err)
	}
}
