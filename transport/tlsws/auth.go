package tlsws

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"sync"
	"time"
)

// The authenticator travels as a cookie on the upgrade request; a session
// cookie on a WebSocket request is what a logged-in web app sends.
const (
	authCookie = "sid"
	authLabel  = "magpie tlsws auth v1\x00"
	tsLen      = 8
	nonceLen   = 16
	macLen     = sha256.Size
	authLen    = tsLen + nonceLen + macLen
)

// DefaultAuthWindow is how far an authenticator's timestamp may be from the
// server's clock, either way.
const DefaultAuthWindow = 5 * time.Minute

// maxNonces bounds the replay cache. Only requests with a valid MAC (that
// is, from someone holding the secret) add to it, so this is a bound on
// legitimate connection rate: about 437 connections a second over a 10-minute
// span. When full, new connections are refused (given the decoy) until
// entries expire, rather than forgetting nonces and allowing replays.
const maxNonces = 1 << 18

// authMAC computes HMAC-SHA256(secret, label ‖ ts ‖ nonce ‖ path).
func authMAC(secret *[32]byte, tsNonce []byte, path string) []byte {
	m := hmac.New(sha256.New, secret[:])
	m.Write([]byte(authLabel))
	m.Write(tsNonce)
	m.Write([]byte(path))
	return m.Sum(nil)
}

// makeAuth returns the cookie value for a request to path at time now.
func makeAuth(secret *[32]byte, path string, now time.Time) string {
	var b [authLen]byte
	binary.BigEndian.PutUint64(b[:tsLen], uint64(now.Unix()))
	rand.Read(b[tsLen : tsLen+nonceLen])
	copy(b[tsLen+nonceLen:], authMAC(secret, b[:tsLen+nonceLen], path))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// verifier checks authenticators and remembers the nonces it accepted.
type verifier struct {
	secret [32]byte
	window time.Duration
	now    func() time.Time

	mu        sync.Mutex
	seen      map[[nonceLen]byte]int64 // nonce → Unix time after which it may be forgotten
	lastSweep int64
}

func newVerifier(secret [32]byte, window time.Duration) *verifier {
	if window <= 0 {
		window = DefaultAuthWindow
	}
	return &verifier{secret: secret, window: window, now: time.Now, seen: make(map[[nonceLen]byte]int64)}
}

// check reports whether value is a fresh, valid authenticator for path, and
// if so records its nonce so that it is never accepted again.
func (v *verifier) check(value, path string) bool {
	if base64.RawURLEncoding.DecodedLen(len(value)) != authLen {
		return false
	}
	var b [authLen]byte
	n, err := base64.RawURLEncoding.Decode(b[:], []byte(value))
	if err != nil || n != authLen {
		return false
	}
	want := authMAC(&v.secret, b[:tsLen+nonceLen], path)
	if !hmac.Equal(want, b[tsLen+nonceLen:]) {
		return false
	}
	ts := int64(binary.BigEndian.Uint64(b[:tsLen]))
	now := v.now().Unix()
	win := int64(v.window / time.Second)
	if ts < now-win || ts > now+win {
		return false
	}
	var nonce [nonceLen]byte
	copy(nonce[:], b[tsLen:tsLen+nonceLen])

	v.mu.Lock()
	defer v.mu.Unlock()
	if now-v.lastSweep >= win/4 || len(v.seen) >= maxNonces {
		for k, exp := range v.seen {
			if exp < now {
				delete(v.seen, k)
			}
		}
		v.lastSweep = now
	}
	if _, dup := v.seen[nonce]; dup || len(v.seen) >= maxNonces {
		return false
	}
	// After ts+window the timestamp check refuses it anyway.
	v.seen[nonce] = ts + win
	return true
}
