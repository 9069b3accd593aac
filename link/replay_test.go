package link

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// captureFirst records the first message a client sends (header and body).
func captureFirst(t *testing.T, serverKey [32]byte) []byte {
	t.Helper()
	a, b := net.Pipe()
	go Client(a, testClientKey, serverKey, []byte("hi"), Config{HandshakeTimeoutMax: time.Second})
	hdr := make([]byte, 2)
	io.ReadFull(b, hdr)
	msg := make([]byte, 2+int(binary.BigEndian.Uint16(hdr)))
	copy(msg, hdr)
	io.ReadFull(b, msg[2:])
	b.Close()
	return msg
}

// serveOnce runs one server handshake on a pipe fed with first and reports
// whether the server answered anything.
func serveOnce(t *testing.T, cache *ReplayCache, first []byte) bool {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	cfg := Config{Replay: cache, HandshakeTimeoutMin: 200 * time.Millisecond, HandshakeTimeoutMax: 300 * time.Millisecond}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Server(a, testServerKey, cfg, func(peer [32]byte, hello []byte) ([]byte, error) { return []byte("ok"), nil })
	}()
	go b.Write(first)
	b.SetReadDeadline(time.Now().Add(time.Second))
	n, _ := b.Read(make([]byte, 1))
	<-done
	return n > 0
}

func TestReplayCache(t *testing.T) {
	cache := NewReplayCache(time.Minute)
	first := captureFirst(t, testServerKey.Public)
	if !serveOnce(t, cache, first) {
		t.Fatal("a fresh first message got no answer")
	}
	if serveOnce(t, cache, first) {
		t.Fatal("an exact replay of a first message was answered")
	}
	// Without a cache (as before), the replay would be answered: the test
	// above can fail.
	if !serveOnce(t, nil, first) {
		t.Fatal("replay without a cache not answered: the test proves nothing")
	}
	for name, skew := range map[string]time.Duration{"stale": -2 * time.Minute, "future": 2 * time.Minute} {
		clientNow = func() time.Time { return time.Now().Add(skew) }
		msg := captureFirst(t, testServerKey.Public)
		clientNow = time.Now
		if serveOnce(t, cache, msg) {
			t.Errorf("%s clock (%v) accepted", name, skew)
		}
	}
	// Generations rotate: a key older than two windows is forgotten, but by
	// then its timestamp is refused anyway.
	c := NewReplayCache(time.Second)
	now := time.Now()
	c.now = func() time.Time { return now }
	k := [32]byte{1}
	if !c.fresh(now, k) || c.fresh(now, k) {
		t.Fatal("fresh/seen")
	}
	now = now.Add(5 * time.Second)
	if c.fresh(now.Add(-5*time.Second), k) {
		t.Fatal("a stale timestamp accepted after rotation")
	}
}
