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
}

// A key is remembered for as long as its timestamp could still be accepted,
// across the cache's rotations: replays are refused by the key, at moments
// when the timestamp alone would pass.
func TestReplayCacheRemembersAcrossRotation(t *testing.T) {
	const w = time.Second
	c := NewReplayCache(w)
	t0 := time.Now()
	now := t0
	c.now = func() time.Time { return now }
	at := func(d time.Duration) { now = t0.Add(d) }
	if !c.fresh(t0, [32]byte{9}) { // the first generation starts at t0
		t.Fatal("a fresh key refused")
	}
	k := [32]byte{1}
	ts := t0.Add(1900 * time.Millisecond) // a client clock 1 s ahead, accepted at 0.9 s
	at(900 * time.Millisecond)
	if !c.fresh(ts, k) {
		t.Fatal("a fresh key with a timestamp within the window refused")
	}
	for _, d := range []time.Duration{1100 * time.Millisecond, 2200 * time.Millisecond, 2800 * time.Millisecond} {
		at(d)
		if now.Sub(ts) > w || ts.Sub(now) > w {
			t.Fatalf("at %v the timestamp is out of the window: the replay would be refused anyway", d)
		}
		if c.fresh(ts, k) {
			t.Fatalf("a replay at %v accepted (the generations rotated at 2 s)", d)
		}
		if !c.fresh(ts, [32]byte{byte(d / time.Millisecond)}) {
			t.Fatalf("a fresh key at %v refused", d)
		}
	}
	// Once its timestamp is out of the window, the key may be forgotten.
	at(5 * time.Second)
	if c.fresh(ts, k) {
		t.Fatal("a timestamp 3.1 s old accepted")
	}
}
