package client_test

import (
	"context"
	"net"
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

// blackHole accepts connections and never answers, as a censor's
// black hole does.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// publishing makes s serve a signed endpoint list that the test can change.
type publishing struct {
	mu   sync.Mutex
	list *wire.SignedEndpointList
	key  curve.PrivateKey
	ver  uint64
}

func (p *publishing) set(t *testing.T, eps ...endpoints.Endpoint) {
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

func TestEndpointListInBandAndFailover(t *testing.T) {
	pub := &publishing{}
	s := servertest.Start(t, server.Config{Endpoints: pub.current})
	pub.key = curve.PrivateKey(s.Key.Private)
	second := s.AddListener(t)
	pub.set(t, endpoints.Endpoint{Transport: "tcp", Address: s.Addr, Priority: 1})

	// The invite names only the first address.
	alice := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")

	// The operator adds the second endpoint; clients learn it in band.
	pub.set(t, endpoints.Endpoint{Transport: "tcp", Address: s.Addr, Priority: 1},
		endpoints.Endpoint{Transport: "tcp", Address: second, Priority: 2})
	if _, err := alice.SendText(testCtx(t), "bob", "one"); err != nil {
		t.Fatal(err)
	}
	eps, err := alice.Endpoints(testCtx(t))
	if err != nil || len(eps) != 2 {
		t.Fatalf("alice knows %+v (%v)", eps, err)
	}

	if evs, err := collect(t, bob); err != nil || len(texts(evs)) != 1 {
		t.Fatalf("bob: %v %+v", err, evs)
	}

	// A client whose preferred endpoint is black-holed by a censor gets
	// through another one, after one stagger rather than a timeout.
	hole := blackHole(t)
	pub.set(t, endpoints.Endpoint{Transport: "tcp", Address: hole, Priority: 0},
		endpoints.Endpoint{Transport: "tcp", Address: second, Priority: 2})
	blocked := invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: []string{hole}, Endpoints: mustMarshal(t, pub.current())}
	carol := newClient(t, blocked, client.Options{})
	start := time.Now()
	register(t, carol, "carol")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failover past a black hole took %v", d)
	}
	if _, err := carol.SendText(testCtx(t), "bob", "through the second door"); err != nil {
		t.Fatal(err)
	}
	if evs, err := collect(t, bob); err != nil || len(texts(evs)) != 1 {
		t.Fatalf("bob: %v %+v", err, evs)
	}
	// The endpoint that worked is remembered and tried first.
	eps, _ = carol.Endpoints(testCtx(t))
	if eps[0].Address != second {
		t.Fatalf("dial order %+v", eps)
	}
}

func TestInviteWithTamperedEndpointListRefused(t *testing.T) {
	pub := &publishing{}
	s := servertest.Start(t, server.Config{Endpoints: pub.current})
	impostor := servertest.NewKey(t)
	pub.key = curve.PrivateKey(impostor.Private) // signed by the wrong key
	pub.set(t, endpoints.Endpoint{Transport: "tcp", Address: "127.0.0.1:1"})
	raw := mustMarshal(t, pub.current())
	inv := invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: s.Invite.Addrs, Endpoints: raw}
	if _, err := client.Dial(context.Background(), inv, servertest.NewKey(t), client.DialOptions{}); err == nil {
		t.Fatal("dialed with an invite whose endpoint list another key signed")
	}
	// In band, such a list is ignored and the client keeps what it has.
	c := newClient(t, s.Invite, client.Options{})
	register(t, c, "carol")
	eps, err := c.Endpoints(testCtx(t))
	if err != nil || len(eps) != 1 || eps[0].Address != s.Addr {
		t.Fatalf("endpoints after a forged list: %+v %v", eps, err)
	}
}

func mustMarshal(t *testing.T, m *wire.SignedEndpointList) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
