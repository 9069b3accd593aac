// Package invite encodes what a client needs to reach a Magpie server: the
// server's Noise static public key and the addresses it listens on.
//
// Format, one line, safe to paste into chats and QR codes:
//
//	magpie://<key>@<addr>[,<addr>...][?e=<endpoints>][&s=<code>]
//
// where <key> is the 32-byte X25519 public key in unpadded base64url, each
// <addr> is a host:port (IPv6 in brackets) reachable over the plain tcp
// transport, and <endpoints> is the server's signed endpoint list (package
// endpoints; a serialized wire.SignedEndpointList in unpadded base64url),
// which names every transport and address, signed by <key>. <code> is a
// sign-up code (SignupCodeSize bytes in unpadded base64url), which a server
// that takes new accounts by invitation only asks for at registration. Other
// parameters are ignored, for later versions. Holding an invite lets a client
// open an encrypted link to the server; the key in it is what stops a man in
// the middle, so invites should travel over a channel the user trusts.
package invite

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Scheme prefixes every invite.
const Scheme = "magpie://"

// Limits on what Parse accepts: invites come from untrusted places.
const (
	MaxLen   = 16384
	MaxAddrs = 32
)

// SignupCodeSize is the size of a sign-up code.
const SignupCodeSize = 16

// ErrInvalid is wrapped by every parse failure.
var ErrInvalid = errors.New("invalid invite")

// Invite is a parsed invite.
type Invite struct {
	ServerKey [32]byte
	Addrs     []string // host:port over tcp, in the order clients should try them
	// Endpoints is the signed endpoint list (a serialized
	// wire.SignedEndpointList), or nil. Parse does not verify it: the
	// client does, against ServerKey.
	Endpoints []byte
	// SignupCode lets its holder open an account on a server that takes
	// new accounts by invitation only; nil in an invite without one.
	SignupCode []byte
}

var b64 = base64.RawURLEncoding

// String encodes inv in the version 1 format.
func (inv Invite) String() string {
	s := Scheme + b64.EncodeToString(inv.ServerKey[:]) + "@" + strings.Join(inv.Addrs, ",")
	sep := "?"
	if len(inv.Endpoints) > 0 {
		s += sep + "e=" + b64.EncodeToString(inv.Endpoints)
		sep = "&"
	}
	if len(inv.SignupCode) > 0 {
		s += sep + "s=" + b64.EncodeToString(inv.SignupCode)
	}
	return s
}

// Fingerprint is a short, human-comparable digest of the server key: the
// first 16 bytes of its SHA-256, in groups of four hex digits.
func (inv Invite) Fingerprint() string { return Fingerprint(inv.ServerKey) }

// Fingerprint formats the fingerprint of a server key.
func Fingerprint(key [32]byte) string {
	sum := sha256.Sum256(key[:])
	h := hex.EncodeToString(sum[:16])
	var b strings.Builder
	for i := 0; i < len(h); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(h[i : i+4])
	}
	return b.String()
}

// Parse decodes an invite. Surrounding white space is ignored.
func Parse(s string) (Invite, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxLen {
		return Invite{}, fmt.Errorf("%w: longer than %d characters", ErrInvalid, MaxLen)
	}
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return Invite{}, fmt.Errorf("%w: it must start with %q; ask the server operator for the line `magpie serve` prints", ErrInvalid, Scheme)
	}
	rest, query, _ := strings.Cut(rest, "?")
	keyText, addrText, ok := strings.Cut(rest, "@")
	if !ok {
		return Invite{}, fmt.Errorf("%w: missing '@' between key and addresses", ErrInvalid)
	}
	var inv Invite
	key, err := b64.DecodeString(keyText)
	if err != nil || len(key) != len(inv.ServerKey) {
		return Invite{}, fmt.Errorf("%w: the server key is not 32 bytes of base64url; the invite may be cut short", ErrInvalid)
	}
	copy(inv.ServerKey[:], key)
	seenE := false
	for _, kv := range strings.Split(query, "&") {
		if v, ok := strings.CutPrefix(kv, "s="); ok {
			code, err := b64.DecodeString(v)
			if err != nil || len(code) != SignupCodeSize || inv.SignupCode != nil {
				return Invite{}, fmt.Errorf("%w: the sign-up code is damaged: ask for a new invite", ErrInvalid)
			}
			inv.SignupCode = code
			continue
		}
		if v, ok := strings.CutPrefix(kv, "e="); ok {
			// An empty or second list is not something a server writes:
			// dropping or choosing one would hide an edited invite.
			if seenE {
				return Invite{}, fmt.Errorf("%w: two endpoint lists; the invite was damaged or tampered with: ask for a new invite", ErrInvalid)
			}
			seenE = true
			if inv.Endpoints, err = b64.DecodeString(v); err != nil || len(inv.Endpoints) == 0 {
				return Invite{}, fmt.Errorf("%w: the endpoint list is not base64url; the invite may be cut short or damaged: ask for a new invite", ErrInvalid)
			}
		}
	}
	if addrText == "" {
		// Servers reachable only through other transports list them in the
		// signed endpoint list alone.
		if len(inv.Endpoints) == 0 {
			return Invite{}, fmt.Errorf("%w: no server address", ErrInvalid)
		}
		return inv, nil
	}
	addrs := strings.Split(addrText, ",")
	if len(addrs) > MaxAddrs {
		return Invite{}, fmt.Errorf("%w: more than %d addresses", ErrInvalid, MaxAddrs)
	}
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return Invite{}, fmt.Errorf("%w: address %q: %v", ErrInvalid, a, err)
		}
		inv.Addrs = append(inv.Addrs, a)
	}
	return inv, nil
}

func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("empty host")
	}
	if strings.ContainsAny(host, "/@?,# ") {
		return errors.New("bad character in host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return errors.New("port must be 1-65535")
	}
	return nil
}
