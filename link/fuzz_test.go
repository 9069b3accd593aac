package link

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/flynn/noise"
)

// parseFrames splits fuzz input into (type, body) records: type byte, uint16
// body length (clipped to what is left), body.
func parseFrames(data []byte, fn func(typ byte, body []byte) bool) {
	for len(data) >= 3 {
		typ := data[0]
		n := min(int(binary.BigEndian.Uint16(data[1:])), len(data)-3)
		if !fn(typ, data[3:3+n]) {
			return
		}
		data = data[3+n:]
	}
}

// FuzzReassembler checks the frame-type dispatch and reassembly against a
// trivial model, without crypto or I/O.
func FuzzReassembler(f *testing.F) {
	f.Fuzz(func(t *testing.T, max uint16, data []byte) {
		r := reassembler{max: int(max)}
		var model []byte
		parseFrames(data, func(typ byte, body []byte) bool {
			act, msg, aliased, err := r.feed(typ, body)
			if typ > frameDataMore {
				if err == nil {
					t.Fatalf("type %d accepted", typ)
				}
				return false
			}
			if typ <= framePong {
				if err != nil || (act == actPong) != (typ == framePing) || msg != nil {
					t.Fatalf("control frame %d: act %d err %v", typ, act, err)
				}
				return true
			}
			if len(model)+len(body) > int(max) {
				if err == nil {
					t.Fatalf("message of %d > %d accepted", len(model)+len(body), max)
				}
				return false
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			model = append(model, body...)
			if typ == frameDataMore {
				if act != actNone {
					t.Fatal("message before last fragment")
				}
				return true
			}
			if act != actMessage || !bytes.Equal(msg, model) || len(msg) > int(max) {
				t.Fatalf("reassembled %d bytes, want %d", len(msg), len(model))
			}
			if aliased && len(body) > 0 && &msg[0] != &body[0] {
				t.Fatal("aliased message does not alias body")
			}
			model = model[:0]
			return true
		})
	})
}

// FuzzServerFirstMessage feeds arbitrary bytes to the server's handshake
// read path (length check, body read, IK message 1 processing) and, if that
// succeeds, completes the handshake.
func FuzzServerFirstMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, dh, err := newHandshake(testServerKey, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dh.forget()
		peer, hello, err := readFirst(bytes.NewReader(data), hs, defaultMaxHelloSize)
		if err != nil {
			return
		}
		if len(data) < hdrSize+ikMsg1Overhead || len(hello) > defaultMaxHelloSize || hello == nil {
			t.Fatalf("accepted %d-byte input with %d-byte hello", len(data), len(hello))
		}
		if peer == ([32]byte{}) {
			t.Fatal("zero peer key")
		}
		if _, cs1, cs2, err := hs.WriteMessage(nil, []byte("reply")); err != nil || cs1 == nil || cs2 == nil {
			t.Fatalf("reply: %v", err)
		}
	})
}

// FuzzReadMessage runs arbitrary (type, body) frames, correctly encrypted,
// through the real ReadMessage path (headers, pooling, decryption,
// reassembly, pong replies) over an in-memory connection.
func FuzzReadMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var key [32]byte
		suite, _ := newSuite()
		tx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
		rx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
		var wire []byte
		parseFrames(data, func(typ byte, body []byte) bool {
			body = body[:min(len(body), maxFrameBody)]
			buf := make([]byte, 0, hdrSize+1+len(body)+tagSize)
			out, err := sealFrame(tx, buf, typ, body)
			if err != nil {
				t.Fatal(err)
			}
			wire = append(wire, out...)
			return true
		})
		const max = 100000
		c := newConn(&memConn{r: bytes.NewReader(wire)}, tx, rx, [32]byte{}, Config{MaxMessageSize: max}.withDefaults())
		defer c.Close()
		for {
			msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if len(msg) > max {
				t.Fatalf("%d-byte message", len(msg))
			}
		}
	})
}

// memConn is a net.Conn reading from r and discarding writes.
type memConn struct {
	net.Conn
	r io.Reader
}

func (m *memConn) Read(p []byte) (int, error)       { return m.r.Read(p) }
func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) LocalAddr() net.Addr              { return nil }
func (m *memConn) RemoteAddr() net.Addr             { return nil }

// TestWriteFuzzSeeds regenerates the committed seed corpora under
// testdata/fuzz: LINK_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./link/
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("LINK_WRITE_SEEDS") == "" {
		t.Skip("set LINK_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	rec := func(typ byte, body []byte) []byte {
		return append([]byte{typ, byte(len(body) >> 8), byte(len(body))}, body...)
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	frames := map[string][]byte{
		"single":     rec(frameDataLast, []byte("hello")),
		"empty":      rec(frameDataLast, nil),
		"fragmented": cat(rec(frameDataMore, []byte("abc")), rec(framePing, nil), rec(frameDataMore, []byte("def")), rec(frameDataLast, []byte("g"))),
		"control":    cat(rec(framePing, []byte("pad")), rec(framePong, nil), rec(frameDataLast, []byte("x"))),
		"unknown":    cat(rec(frameDataLast, []byte("ok")), rec(7, []byte("??"))),
		"toolarge":   cat(rec(frameDataMore, bytes.Repeat([]byte{1}, 60000)), rec(frameDataLast, bytes.Repeat([]byte{2}, 60000))),
	}
	for name, b := range frames {
		writeSeed(t, "FuzzReassembler", name, uint16(1000), b)
		writeSeed(t, "FuzzReassembler", name+"-big", uint16(65535), b)
		writeSeed(t, "FuzzReadMessage", name, b)
	}
	valid := firstMessage(t, testClientKey, testServerKey.Public, []byte("hello"))
	first := map[string][]byte{
		"valid":       valid,
		"valid-empty": firstMessage(t, testClientKey, testServerKey.Public, nil),
		"wrongkey":    firstMessage(t, testClientKey, fixedKey(50).Public, []byte("hello")),
		"truncated":   valid[:len(valid)-1],
		"short":       append([]byte{0, 95}, make([]byte, 95)...),
		"oversized":   []byte{0xff, 0xff, 1, 2, 3},
		"empty":       {},
	}
	for name, b := range first {
		writeSeed(t, "FuzzServerFirstMessage", name, b)
	}
}

func writeSeed(t *testing.T, fuzz, name string, args ...any) {
	var buf bytes.Buffer
	buf.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&buf, "[]byte(%s)\n", strconv.Quote(string(v)))
		case uint16:
			fmt.Fprintf(&buf, "uint16(%d)\n", v)
		}
	}
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The committed "valid" seed must really be accepted, or the fuzzer never
// starts from the success path.
func TestValidFirstMessageSeed(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzServerFirstMessage", "valid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(raw, []byte("\n"))
	lit := bytes.TrimSuffix(bytes.TrimPrefix(lines[1], []byte("[]byte(")), []byte(")"))
	s, err := strconv.Unquote(string(lit))
	if err != nil {
		t.Fatal(err)
	}
	hs, _, _ := newHandshake(testServerKey, false, nil)
	peer, hello, err := readFirst(bytes.NewReader([]byte(s)), hs, defaultMaxHelloSize)
	if err != nil || peer != testClientKey.Public || string(hello) != "hello" {
		t.Fatalf("seed rejected: %v", err)
	}
}
