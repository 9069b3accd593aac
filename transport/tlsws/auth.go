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

// maxNonces bounds a replay cache. Only requests with a valid MAC (that
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

// replayCache remembers the nonces of accepted authenticators for as long
// as their timestamps stay inside the window, so each is accepted once.
type replayCache struct {
	window time.Duration
	now    func() time.Time

	mu        sync.Mutex
	seen      map[[nonceLen]byte]int64 // nonce → Unix time after which it may be forgotten
	lastSweep int64
}

func newReplayCache(window time.Duration) *replayCache {
	if window <= 0 {
		window = DefaultAuthWindow
	}
	return &replayCache{window: window, now: time.Now, seen: make(map[[nonceLen]byte]int64)}
}

// fresh reports whether a timestamp ts (Unix seconds) is inside the window
// and nonce was never accepted, and if so records nonce. Call it only after
// the MAC was checked.
func (c *replayCache) fresh(nonce [nonceLen]byte, ts int64) bool {
	now := c.now().Unix()
	win := int64(c.window / time.Second)
	if ts < now-win || ts > now+win {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if now-c.lastSweep >= win/4 || len(c.seen) >= maxNonces {
		for k, exp := range c.seen {
			if exp < now {
				delete(c.seen, k)
			}
		}
		c.lastSweep = now
	}
	if _, dup := c.seen[nonce]; dup || len(c.seen) >= maxNonces {
		return false
	}
	// After ts+window the timestamp check refuses it anyway.
	c.seen[nonce] = ts + win
	return true
}

// verifier checks upgrade-request authenticators.
type verifier struct {
	secret [32]byte
	*replayCache
}

func newVerifier(secret [32]byte, window time.Duration) *verifier {
	return &verifier{secret: secret, replayCache: newReplayCache(window)}
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
	return v.fresh([nonceLen]byte(b[tsLen:tsLen+nonceLen]), int64(binary.BigEndian.Uint64(b[:tsLen])))
}

// The ClientHello authenticator. A Magpie client's ClientHello looks like
// Chrome's, whose legacy_session_id is 32 random bytes (RFC 8446 §4.1.2,
// middlebox compatibility mode). Magpie's client fills it with
//
//	sid[0:4]  = ts ⊕ HMAC-SHA256(secret, maskLabel ‖ random)[0:4]
//	sid[4:32] = HMAC-SHA256(secret, helloLabel ‖ ts ‖ hello₀)[0:28]
//
// where ts is the 4-byte big-endian Unix time, random the ClientHello's
// 32-byte random and hello₀ the whole ClientHello handshake message with
// the session id zeroed. To anyone without the secret the field stays 32
// uniformly random bytes. The MAC covers every other byte of the
// ClientHello (key shares included), so a prober cannot reuse a genuine
// session id with a ClientHello of its own, and the random is the nonce of
// a replay cache, so a replayed ClientHello is not accepted twice. Every
// ClientHello that fails goes to the fallback web server untouched.
const (
	helloMaskLabel = "magpie tlsws hello mask v1\x00"
	helloAuthLabel = "magpie tlsws hello auth v1\x00"
	helloSIDOffset = 4 + 2 + 32 + 1 // handshake header, legacy_version, random, session id length
	helloSIDLen    = 32
	helloTSLen     = 4
)

func helloMask(secret *[32]byte, random []byte) []byte {
	m := hmac.New(sha256.New, secret[:])
	m.Write([]byte(helloMaskLabel))
	m.Write(random)
	return m.Sum(nil)[:helloTSLen]
}

func helloMAC(secret *[32]byte, ts []byte, zeroed []byte) []byte {
	m := hmac.New(sha256.New, secret[:])
	m.Write([]byte(helloAuthLabel))
	m.Write(ts)
	m.Write(zeroed)
	return m.Sum(nil)[:helloSIDLen-helloTSLen]
}

// helloParts returns the random and the session id of a ClientHello
// handshake message, or ok false if it has no 32-byte session id.
func helloParts(msg []byte) (random, sid []byte, ok bool) {
	if len(msg) < helloSIDOffset+helloSIDLen || msg[0] != 1 || msg[helloSIDOffset-1] != helloSIDLen {
		return nil, nil, false
	}
	return msg[6:38], msg[helloSIDOffset : helloSIDOffset+helloSIDLen], true
}

// sealHello writes the authenticator into the session id of msg, a
// ClientHello handshake message, in place.
func sealHello(secret *[32]byte, msg []byte, now time.Time) bool {
	random, sid, ok := helloParts(msg)
	if !ok {
		return false
	}
	clear(sid)
	var ts [helloTSLen]byte
	binary.BigEndian.PutUint32(ts[:], uint32(now.Unix()))
	mac := helloMAC(secret, ts[:], msg)
	mask := helloMask(secret, random)
	for i := range ts {
		sid[i] = ts[i] ^ mask[i]
	}
	copy(sid[helloTSLen:], mac)
	return true
}

// helloVerifier checks ClientHello authenticators.
type helloVerifier struct {
	secret [32]byte
	*replayCache
}

func newHelloVerifier(secret [32]byte, window time.Duration) *helloVerifier {
	return &helloVerifier{secret: secret, replayCache: newReplayCache(window)}
}

// check reports whether msg, a ClientHello handshake message, carries a
// fresh, valid authenticator, and if so records its random so that it is
// never accepted again.
func (v *helloVerifier) check(msg []byte) bool {
	random, sid, ok := helloParts(msg)
	if !ok {
		return false
	}
	mask := helloMask(&v.secret, random)
	var ts [helloTSLen]byte
	for i := range ts {
		ts[i] = sid[i] ^ mask[i]
	}
	zeroed := append([]byte(nil), msg...)
	clear(zeroed[helloSIDOffset : helloSIDOffset+helloSIDLen])
	if !hmac.Equal(helloMAC(&v.secret, ts[:], zeroed), sid[helloTSLen:]) {
		return false
	}
	return v.fresh([nonceLen]byte(random[:nonceLen]), int64(binary.BigEndian.Uint32(ts[:])))
}
