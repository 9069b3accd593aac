package link

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
	"time"
)

// Config tunes a link. The zero value gives the defaults noted per field.
type Config struct {
	// HandshakeTimeoutMin and HandshakeTimeoutMax: the server draws each
	// connection's handshake deadline uniformly (crypto/rand) in [Min, Max]
	// when it starts the handshake, so that the moment it closes a probe
	// says nothing about the server (see doc.go). The client uses Max as its
	// handshake timeout. Defaults 10s and 30s; Min is lowered to Max if
	// larger.
	HandshakeTimeoutMin, HandshakeTimeoutMax time.Duration

	// IdleTimeout makes ReadMessage fail with ErrIdleTimeout (and close the
	// connection) when nothing at all has been received for this long. 0 =
	// no limit.
	IdleTimeout time.Duration

	// KeepaliveInterval makes the link send a ping after about this long
	// without writing anything: each wait is drawn from 3/4 to 5/4 of it,
	// so that pings keep no fixed period. 0 = never (the server's usual
	// setting; clients ping).
	KeepaliveInterval time.Duration

	// PongTimeout: once a ping is sent, ReadMessage fails with
	// ErrIdleTimeout unless something arrives within this long. Rare pings
	// then still notice a dead path quickly: a ping written into a black
	// hole stays unacknowledged, which also stops TCP keepalive probes, so
	// without it only IdleTimeout would end the link. 0 = rely on
	// IdleTimeout alone.
	PongTimeout time.Duration

	// WriteTimeout bounds each write to the transport. Default 30s.
	WriteTimeout time.Duration

	// MaxMessageSize is the largest reassembled application message accepted
	// or sent. Default 1 MiB + 64 KiB.
	MaxMessageSize int

	// MaxHelloSize is the largest handshake payload (hello or reply).
	// Default 4 KiB; capped so the first message fits one Noise message.
	MaxHelloSize int

	// Replay, on a server, refuses first messages whose timestamp is out of
	// its window or that were seen before (replay.go). Nil accepts them.
	Replay *ReplayCache
}

const (
	defaultHandshakeMin   = 10 * time.Second
	defaultHandshakeMax   = 30 * time.Second
	defaultWriteTimeout   = 30 * time.Second
	defaultMaxMessageSize = 1<<20 + 64<<10
	defaultMaxHelloSize   = 4 << 10
)

func (c Config) withDefaults() Config {
	if c.HandshakeTimeoutMax <= 0 {
		c.HandshakeTimeoutMax = defaultHandshakeMax
	}
	if c.HandshakeTimeoutMin <= 0 {
		c.HandshakeTimeoutMin = defaultHandshakeMin
	}
	if c.HandshakeTimeoutMin > c.HandshakeTimeoutMax {
		c.HandshakeTimeoutMin = c.HandshakeTimeoutMax
	}
	if c.IdleTimeout < 0 {
		c.IdleTimeout = 0
	}
	if c.KeepaliveInterval < 0 {
		c.KeepaliveInterval = 0
	}
	if c.PongTimeout < 0 {
		c.PongTimeout = 0
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = defaultMaxMessageSize
	}
	if c.MaxHelloSize <= 0 {
		c.MaxHelloSize = defaultMaxHelloSize
	}
	if c.MaxHelloSize > maxNoiseMsg-ikMsg1Overhead-timestampSize {
		c.MaxHelloSize = maxNoiseMsg - ikMsg1Overhead - timestampSize
	}
	return c
}

// handshakeWindow draws the server's per-connection handshake duration
// uniformly from [min, max] using crypto/rand, so the close time of a probe is
// unpredictable and independent of anything the probe sent.
func handshakeWindow(min, max time.Duration) time.Duration {
	span := uint64(max-min) + 1
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; fall back to
		// the longest window, which is still data-independent.
		return max
	}
	// Lemire's multiply-shift: bias is at most span/2^64, negligible here.
	hi, _ := bits.Mul64(binary.LittleEndian.Uint64(b[:]), span)
	return min + time.Duration(hi)
}
