package server_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/wire"
)

// Short handshake windows keep the probe tests quick; the behaviour is the
// same at production values.
var probeLink = link.Config{HandshakeTimeoutMin: 300 * time.Millisecond, HandshakeTimeoutMax: 600 * time.Millisecond}

// rawLink completes a real handshake with key and returns the bare link, so
// that a test can send whatever it likes after it.
func rawLink(t *testing.T, s *servertest.Server, key link.KeyPair, cfg link.Config) *link.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	hello, _ := proto.Marshal(&wire.ClientHello{MinVersion: wire.Version, MaxVersion: wire.Version})
	lc, _, err := link.Client(nc, key, s.Invite.ServerKey, hello, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	return lc
}

// assertSilentClose checks that the server sends nothing on nc and closes
// it no earlier than the handshake window's minimum after start, which
// must be taken before the connection was dialled.
func assertSilentClose(t *testing.T, nc net.Conn, start time.Time) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	elapsed := time.Since(start)
	if n != 0 {
		t.Fatalf("server answered a probe with %d bytes", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("server never closed the probe connection")
	}
	if elapsed < probeLink.HandshakeTimeoutMin {
		t.Fatalf("server closed after %v, before its handshake window (%v): a data-dependent reaction", elapsed, probeLink.HandshakeTimeoutMin)
	}
}

// healthy checks that the server still serves a full conversation.
func healthy(t *testing.T, alice, bob *servertest.User) {
	t.Helper()
	id := clientconn.NewMessageID()
	mustSend(t, alice, bob.Name, id, "still here")
	for {
		env := servertest.NextEnvelope(t, bob.Conn, wait)
		if env.ID == id {
			if err := bob.Ack(env.Seq); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

func TestProbesGetSilence(t *testing.T) {
	s := servertest.Start(t, server.Config{Link: probeLink})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")

	// A real first message, to truncate and to corrupt.
	var first []byte
	{
		c1, c2 := net.Pipe()
		go func() {
			hello, _ := proto.Marshal(&wire.ClientHello{MinVersion: 1, MaxVersion: 1})
			link.Client(c1, servertest.NewKey(t), s.Invite.ServerKey, hello, link.Config{HandshakeTimeoutMax: time.Second})
		}()
		hdr := make([]byte, 2)
		io.ReadFull(c2, hdr)
		first = make([]byte, 2+int(binary.BigEndian.Uint16(hdr)))
		copy(first, hdr)
		io.ReadFull(c2, first[2:])
		c2.Close()
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	flipped := bytes.Clone(first)
	flipped[len(flipped)-1] ^= 1
	probes := map[string][]byte{
		"nothing":            nil,
		"one byte":           {0x16},
		"random 64":          random(64),
		"random 4096":        random(4096),
		"random 70000":       random(70000),
		"http":               []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"truncated first":    first[:len(first)/2],
		"first, bit flipped": flipped,
		"huge length":        {0xff, 0xff, 1, 2, 3},
	}
	done := make(chan struct{})
	for name, probe := range probes {
		go func() {
			defer func() { done <- struct{}{} }()
			t.Run(name, func(t *testing.T) {
				// Before the dial: the server's window cannot start
				// earlier, however late this goroutine runs after it.
				start := time.Now()
				nc, err := net.Dial("tcp", s.Addr)
				if err != nil {
					t.Error(err)
					return
				}
				defer nc.Close()
				nc.Write(probe)
				assertSilentClose(t, nc, start)
			})
		}()
	}
	// While the probes hang on, real users carry on.
	healthy(t, alice, bob)
	for range probes {
		<-done
	}
	healthy(t, alice, bob)
}

func TestGarbageAfterHandshake(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")

	// Not protobuf: the server says so (request id 0) and hangs up.
	lc := rawLink(t, s, servertest.NewKey(t), link.Config{IdleTimeout: wait})
	if err := lc.WriteMessage([]byte{0xff, 0xff, 0xff, 0x01}); err != nil {
		t.Fatal(err)
	}
	msg, err := lc.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.DecodeServerFrame(msg)
	if err != nil || f.GetResponse().GetError().GetCode() != wire.ErrorCode_ERROR_CODE_BAD_REQUEST || f.GetResponse().GetId() != 0 {
		t.Fatalf("answer to garbage: %v %v", f, err)
	}
	if _, err := lc.ReadMessage(); err == nil {
		t.Fatal("connection still open after garbage")
	}

	// Valid protobuf, unknown request kind: an error for that request id,
	// and the connection stays.
	lc = rawLink(t, s, servertest.NewKey(t), link.Config{IdleTimeout: wait})
	b, _ := proto.Marshal(&wire.ClientFrame{Body: &wire.ClientFrame_Request{Request: &wire.Request{Id: 42}}})
	lc.WriteMessage(b)
	msg, err = lc.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	f, _ = wire.DecodeServerFrame(msg)
	if f.GetResponse().GetId() != 42 || f.GetResponse().GetError().GetCode() != wire.ErrorCode_ERROR_CODE_BAD_REQUEST {
		t.Fatalf("answer to empty request: %v", f)
	}
	b, _ = proto.Marshal(&wire.ClientFrame{Body: &wire.ClientFrame_Request{Request: &wire.Request{Id: 43, Body: &wire.Request_Ping{Ping: &wire.PingRequest{}}}}})
	lc.WriteMessage(b)
	if msg, err = lc.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if f, _ = wire.DecodeServerFrame(msg); f.GetResponse().GetId() != 43 || f.GetResponse().GetPing() == nil {
		t.Fatalf("ping after bad request: %v", f)
	}

	// An oversized message (beyond the link's limit) closes the connection.
	lc = rawLink(t, s, servertest.NewKey(t), link.Config{IdleTimeout: wait, MaxMessageSize: 4 << 20})
	go lc.WriteMessage(make([]byte, 2<<20)) // may fail midway once the server hangs up
	if _, err := lc.ReadMessage(); err == nil || errors.Is(err, link.ErrIdleTimeout) {
		t.Fatalf("oversized message: connection not closed by the server (%v)", err)
	}

	// A frame that does not decrypt closes the connection too.
	nc, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hello, _ := proto.Marshal(&wire.ClientHello{MinVersion: 1, MaxVersion: 1})
	lc2, _, err := link.Client(nc, servertest.NewKey(t), s.Invite.ServerKey, hello, link.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer lc2.Close()
	nc.Write([]byte{0x00, 0x20})
	nc.Write(make([]byte, 0x20))
	nc.SetReadDeadline(time.Now().Add(wait))
	if n, _ := io.Copy(io.Discard, nc); n != 0 {
		t.Fatalf("server wrote %d bytes after a forged frame", n)
	}

	healthy(t, alice, bob)
}

// A client that stops reading costs the server a bounded window of pushes,
// is dropped (write timeout, or idle timeout since it sends nothing), and
// loses nothing; everyone else carries on.
func TestClientThatStopsReading(t *testing.T) {
	s := servertest.Start(t, server.Config{MaxOutbox: 1 << 20, Link: link.Config{WriteTimeout: time.Second, IdleTimeout: 2 * time.Second}})
	// Well-behaved clients ping often enough for the short idle timeout.
	s.DialOptions.Link.KeepaliveInterval = 300 * time.Millisecond
	alice := s.Register(t, "alice")
	carol := s.Register(t, "carol")
	dave := s.Register(t, "dave")

	// bob registers, then never reads again.
	bobKey := servertest.NewKey(t)
	bob := rawLink(t, s, bobKey, link.Config{IdleTimeout: wait})
	b, _ := proto.Marshal(&wire.ClientFrame{Body: &wire.ClientFrame_Request{Request: &wire.Request{Id: 1, Body: &wire.Request_Register{Register: &wire.RegisterRequest{Username: "bob"}}}}})
	bob.WriteMessage(b)
	time.Sleep(100 * time.Millisecond)

	// 40 messages of 200 KiB: 8 MiB, eight times the outbox the server
	// allows him and sixteen times his push window.
	payload := bytes.Repeat([]byte{'z'}, 200<<10)
	var ids []clientconn.MessageID
	for range 40 {
		id := clientconn.NewMessageID()
		ids = append(ids, id)
		mustSend(t, alice, "bob", id, string(payload))
		// Others are unaffected meanwhile.
	}
	healthy(t, carol, dave)

	// The server has hung up on bob: what he reads now ends in EOF, well
	// before his own idle timeout.
	for {
		_, err := bob.ReadMessage()
		if errors.Is(err, link.ErrIdleTimeout) {
			t.Fatal("server kept a client that stopped reading")
		}
		if err != nil {
			break
		}
	}

	// bob comes back as a well-behaved client and gets every message.
	bob2 := s.Dial(t, bobKey)
	got := map[clientconn.MessageID]bool{}
	for len(got) < len(ids) {
		env := servertest.NextEnvelope(t, bob2, wait)
		if !bytes.Equal(env.Payload, payload) {
			t.Fatal("payload damaged")
		}
		got[env.ID] = true
		if err := bob2.Ack(env.Seq); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if !got[id] {
			t.Fatalf("message %x lost", id)
		}
	}
}

// TestReplayedFirstMessageGetsSilence: a censor that recorded a client's
// first message and replays it (identical or altered) learns nothing.
func TestReplayedFirstMessageGetsSilence(t *testing.T) {
	s := servertest.Start(t, server.Config{Link: probeLink})
	// Record a real first message by relaying one real handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	recorded := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		up, err := net.Dial("tcp", s.Addr)
		if err != nil {
			return
		}
		defer up.Close()
		hdr := make([]byte, 2)
		io.ReadFull(c, hdr)
		first := make([]byte, 2+int(binary.BigEndian.Uint16(hdr)))
		copy(first, hdr)
		io.ReadFull(c, first[2:])
		recorded <- first
		up.Write(first)
		go io.Copy(up, c)
		io.Copy(c, up)
	}()
	inv := s.Invite
	inv.Addrs = []string{ln.Addr().String()}
	c, err := clientconn.Dial(ctx(t), inv, servertest.NewKey(t), clientconn.DialOptions{})
	if err != nil {
		t.Fatalf("the original handshake failed: %v", err)
	}
	c.Close()
	first := <-recorded
	flipped := bytes.Clone(first)
	flipped[40] ^= 0x80
	for name, probe := range map[string][]byte{"identical": first, "altered": flipped} {
		t.Run(name, func(t *testing.T) {
			start := time.Now() // before the dial, as above
			nc, err := net.Dial("tcp", s.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.Write(probe)
			assertSilentClose(t, nc, start)
		})
	}
}
