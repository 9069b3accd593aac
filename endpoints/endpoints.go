// Package endpoints is the signed list of where and how clients reach a
// Magpie server: transport, address, TLS name and front, priority, expiry.
// The operator's long-term key (the server's Noise static key, which every
// invite names) signs it with XEdDSA, so clients accept endpoints learned
// from anywhere (the invite, the server itself, a friend) only if the
// operator issued them. Operators add and retire endpoints without any
// client update: clients refresh the list in band and keep the newest
// version they verified.
package endpoints

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/wire"
)

// Domain separates these signatures from any other use of the key.
const domain = "magpie endpoint list v1\x00"

// Limits on lists from untrusted sources.
const (
	MaxEndpoints = 64
	MaxSize      = 16 << 10
)

// Errors.
var (
	ErrBadSignature = errors.New("endpoints: list not signed by this server's key")
	ErrMalformed    = errors.New("endpoints: malformed list")
)

// Endpoint is one way to reach the server.
type Endpoint struct {
	Transport string
	Address   string
	SNI       string
	Front     string
	Cert      string
	Secret    []byte
	Path      string
	Priority  int
	Expires   time.Time // zero: no expiry
	// Safe: the operator vouches that this plain tcp endpoint is safe to
	// use (Order leaves plain tcp out otherwise, when anything stealthier
	// is offered).
	Safe bool
}

// Stealthy reports whether e disguises what it carries: every transport
// but plain tcp, whose first packet a censor can fingerprint.
func (e Endpoint) Stealthy() bool { return e.Transport != "" && e.Transport != "tcp" }

// Key identifies an endpoint for memory of what worked.
func (e Endpoint) Key() string { return e.Transport + "://" + e.Address }

// List is a versioned set of endpoints.
type List struct {
	Version   uint64
	Issued    time.Time
	Endpoints []Endpoint
}

// Sign serializes and signs l with the server's private key.
func Sign(l List, key curve.PrivateKey) (*wire.SignedEndpointList, error) {
	pl := &wire.EndpointList{Version: l.Version, IssuedMs: l.Issued.UnixMilli()}
	for _, e := range l.Endpoints {
		we := &wire.Endpoint{Transport: e.Transport, Address: e.Address, Sni: e.SNI, Front: e.Front,
			Cert: e.Cert, Secret: e.Secret, Path: e.Path, Priority: int32(e.Priority), Safe: e.Safe}
		if !e.Expires.IsZero() {
			we.ExpiresMs = e.Expires.UnixMilli()
		}
		pl.Endpoints = append(pl.Endpoints, we)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pl)
	if err != nil {
		return nil, err
	}
	var r [64]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, err
	}
	sig := xeddsa.Sign(key, append([]byte(domain), b...), r)
	return &wire.SignedEndpointList{List: b, Signature: sig[:]}, nil
}

// Verify checks s against the server's public key (from the invite) and
// returns the list, with expired endpoints (at now) removed.
func Verify(s *wire.SignedEndpointList, serverKey [32]byte, now time.Time) (List, error) {
	if len(s.GetList()) > MaxSize || len(s.GetSignature()) != 64 {
		return List{}, ErrMalformed
	}
	if !xeddsa.Verify(curve.PublicKey(serverKey), append([]byte(domain), s.GetList()...), [64]byte(s.GetSignature())) {
		return List{}, ErrBadSignature
	}
	var pl wire.EndpointList
	if err := proto.Unmarshal(s.GetList(), &pl); err != nil {
		return List{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(pl.GetEndpoints()) > MaxEndpoints {
		return List{}, fmt.Errorf("%w: %d endpoints", ErrMalformed, len(pl.GetEndpoints()))
	}
	l := List{Version: pl.GetVersion(), Issued: time.UnixMilli(pl.GetIssuedMs())}
	for _, we := range pl.GetEndpoints() {
		e := Endpoint{Transport: we.GetTransport(), Address: we.GetAddress(), SNI: we.GetSni(), Front: we.GetFront(),
			Cert: we.GetCert(), Secret: we.GetSecret(), Path: we.GetPath(), Priority: int(we.GetPriority()), Safe: we.GetSafe()}
		if we.GetExpiresMs() != 0 {
			e.Expires = time.UnixMilli(we.GetExpiresMs())
			if !now.Before(e.Expires) {
				continue
			}
		}
		l.Endpoints = append(l.Endpoints, e)
	}
	return l, nil
}

// Memory is what a client remembers of its endpoints, by Endpoint.Key:
// when each last worked, and when each was last found blocked (refused,
// reset, silent, or too slow for the conversation).
type Memory struct {
	Good    map[string]time.Time
	Blocked map[string]time.Time
	// Spread, when set, orders endpoints that are otherwise equal (same
	// kind, same priority, never worked) by a hash of Spread and their
	// key instead of by the list's order, so that clients with different
	// Spread values (their device keys) share out the nodes of a cluster
	// listed at one priority, each client always in the same order
	// (rendezvous hashing: when a node is added or removed, only its
	// share of clients moves).
	Spread []byte
}

// rank is e's place for this Memory's Spread among equals: lower first.
func (m Memory) rank(e Endpoint) uint64 {
	h := sha256.New()
	h.Write(m.Spread)
	h.Write([]byte{0})
	h.Write([]byte(e.Key()))
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// suspect reports whether e was found blocked after it last worked, and
// since when.
func (m Memory) suspect(e Endpoint) (time.Time, bool) {
	b, ok := m.Blocked[e.Key()]
	return b, ok && b.After(m.Good[e.Key()])
}

// Order returns the endpoints to dial, in order, stealth first:
//
//   - Plain tcp is left out when anything stealthier is offered, unless the
//     operator marked it Safe or plainTCP (the user asked for it) is set.
//   - Endpoints found blocked since they last worked go last, the one
//     found blocked longest ago first, so a path blocked a moment ago is
//     tried last of all.
//   - Otherwise stealthy endpoints (obfs, tls, relays) come before plain
//     tcp, then the most recently working first, then by priority,
//     then by Memory.Spread if set, keeping the list's order among
//     equals.
func Order(eps []Endpoint, m Memory, plainTCP bool) []Endpoint {
	stealthy := slices.ContainsFunc(eps, Endpoint.Stealthy)
	out := slices.DeleteFunc(slices.Clone(eps), func(e Endpoint) bool {
		return stealthy && !e.Stealthy() && !e.Safe && !plainTCP
	})
	slices.SortStableFunc(out, func(a, b Endpoint) int {
		ba, sa := m.suspect(a)
		bb, sb := m.suspect(b)
		switch {
		case sa != sb:
			if sa {
				return 1
			}
			return -1
		case sa:
			return ba.Compare(bb)
		case a.Stealthy() != b.Stealthy():
			if a.Stealthy() {
				return -1
			}
			return 1
		}
		if c := m.Good[b.Key()].Compare(m.Good[a.Key()]); c != 0 {
			return c
		}
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		if m.Spread != nil {
			return cmp.Compare(m.rank(a), m.rank(b))
		}
		return 0
	})
	return out
}
