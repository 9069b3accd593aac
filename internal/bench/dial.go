package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"slices"
	"time"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/transport"
)

// The server allows a few sign-ups per source network (a /24: a burst of
// 5, then one per 10 s). Against a server on loopback, the tool spreads
// its connections over source addresses in 127.0.0.0/8 (all of which are
// local on Linux), each in a /24 of its own, signupsPerIP connections per
// address, so that every user can register; this also multiplies the
// ephemeral ports available.
const signupsPerIP = 5

// loopbackServer reports whether every address of inv is on loopback.
func loopbackServer(inv invite.Invite) bool {
	if len(inv.Addrs) == 0 {
		return false
	}
	for _, a := range inv.Addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return false
		}
		ip := net.ParseIP(host)
		if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// sourcePlan spreads connections over loopback source addresses,
// signupsPerIP each, from a random base so that successive runs use fresh
// addresses (the server remembers each address's sign-ups).
type sourcePlan struct {
	on   bool
	base int
}

func newSourcePlan(inv invite.Invite) sourcePlan {
	if !loopbackServer(inv) {
		return sourcePlan{}
	}
	// One address in each /24 from 127.1.0.0/24 to 127.239.255.0/24:
	// clear of 127.0.0.x and of the broadcast address.
	return sourcePlan{on: true, base: 1<<8 + mrand.IntN(238<<8)}
}

// ip is the source address for connection i, nil for the default.
func (p sourcePlan) ip(i int) net.IP {
	if !p.on {
		return nil
	}
	n := p.base + i/signupsPerIP
	return net.IPv4(127, byte(n>>8), byte(n), 1)
}

// dialOptions returns the options for connection i.
func dialOptions(p sourcePlan, i int) clientconn.DialOptions {
	opts := clientconn.DialOptions{UserAgent: "magpie-bench", StallTimeout: 30 * time.Second}
	if ip := p.ip(i); ip != nil {
		opts.Dialer = &net.Dialer{KeepAliveConfig: transport.ClientKeepAlive, LocalAddr: &net.TCPAddr{IP: ip}}
	}
	return opts
}

// runID is a random tag for user names, so that runs do not collide.
func runID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// userName is bench_<run>_<i>.
func userName(run string, i int) string { return fmt.Sprintf("bench_%s_%d", run, i) }

// registerAll registers n users with conc dials at a time, closing them all
// on failure.
func registerAll(ctx context.Context, inv invite.Invite, transport, run string, n, conc int) ([]*clientconn.Conn, error) {
	conns, _, err := registerUsers(ctx, inv, transport, run, 0, n, conc)
	return conns, err
}

// registerUsers is registerAll for users first to first+n-1 that also
// returns each user's device key, to connect again as the same device
// (connectAll).
func registerUsers(ctx context.Context, inv invite.Invite, transport, run string, first, n, conc int) ([]*clientconn.Conn, []link.KeyPair, error) {
	keys := make([]link.KeyPair, n)
	for i := range keys {
		k, err := link.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		keys[i] = k
	}
	conns, err := dialAll(ctx, inv, transport, keys, conc, 0, func(c *clientconn.Conn, i int) error {
		// With the invite's sign-up code, if it has one: a server that
		// opens accounts by invitation only takes no other, and counts
		// no sign-ups per network (tls dials from one address).
		if _, err := c.RegisterWithCode(ctx, userName(run, first+i), inv.SignupCode); err != nil {
			return fmt.Errorf("register %s: %w", userName(run, first+i), err)
		}
		return nil
	})
	return conns, keys, err
}

// connectAll connects the devices of keys, already registered, conc at a
// time.
// keepalive, if not zero, replaces the client's default ping interval.
func connectAll(ctx context.Context, inv invite.Invite, transport string, keys []link.KeyPair, conc int, keepalive time.Duration) ([]*clientconn.Conn, error) {
	return dialAll(ctx, inv, transport, keys, conc, keepalive, func(c *clientconn.Conn, i int) error {
		if _, ok := c.Device(); !ok {
			return errors.New("the server does not know this device")
		}
		return nil
	})
}

// target is the server of an invite with its endpoints verified once.
// clientconn.Dial verifies the invite's signed endpoint list on every call: an
// XEdDSA verification, 12% of the load tool's CPU in a handshake storm,
// which the tool would otherwise charge to the server's rate.
type target struct {
	key [32]byte
	eps []endpoints.Endpoint
}

func newTarget(inv invite.Invite, transport string) (target, error) {
	eps, err := clientconn.InviteEndpoints(inv, time.Now())
	if err != nil {
		return target{}, err
	}
	if transport != "" {
		eps = slices.DeleteFunc(eps, func(e endpoints.Endpoint) bool {
			return e.Transport != transport && !(e.Transport == "" && transport == "tcp")
		})
		if len(eps) == 0 {
			return target{}, fmt.Errorf("the invite offers no %s endpoint: run the server with --listen %s://HOST:PORT and use its current invite (magpie invite)", transport, transport)
		}
	}
	return target{key: inv.ServerKey, eps: eps}, nil
}

// dial is clientconn.Dial without the verification.
func (t target) dial(ctx context.Context, key link.KeyPair, opts clientconn.DialOptions) (*clientconn.Conn, error) {
	c, _, err := clientconn.DialEndpoints(ctx, t.key, spread(t.eps, key.Public[:]), key, opts)
	return c, err
}

// dialAll dials one connection per key, conc at a time, each from its
// source address (sourcePlan), and runs then on each; on any failure it
// closes them all and returns the first error.
func dialAll(ctx context.Context, inv invite.Invite, transport string, keys []link.KeyPair, conc int, keepalive time.Duration, then func(c *clientconn.Conn, i int) error) ([]*clientconn.Conn, error) {
	t, err := newTarget(inv, transport)
	if err != nil {
		return nil, err
	}
	plan := newSourcePlan(inv)
	n := len(keys)
	conns := make([]*clientconn.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, max(1, conc))
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			opts := dialOptions(plan, i)
			if keepalive != 0 {
				opts.Link.KeepaliveInterval = keepalive
			}
			c, err := t.dial(ctx, keys[i], opts)
			if err != nil {
				errs <- fmt.Errorf("dial: %w", err)
				return
			}
			conns[i] = c
			errs <- then(c, i)
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, first
	}
	return conns, nil
}

// spread orders the endpoints that share the first one's transport and
// priority (a cluster's nodes) by the device key, as a client does
// (endpoints.Memory.Spread), so that the load spreads over the nodes as
// real devices do; the others keep the invite's order, after them.
func spread(eps []endpoints.Endpoint, key []byte) []endpoints.Endpoint {
	if len(eps) < 2 {
		return eps
	}
	var same, rest []endpoints.Endpoint
	for _, e := range eps {
		if e.Transport == eps[0].Transport && e.Priority == eps[0].Priority {
			same = append(same, e)
		} else {
			rest = append(rest, e)
		}
	}
	return append(endpoints.Order(same, endpoints.Memory{Spread: key}, true), rest...)
}
