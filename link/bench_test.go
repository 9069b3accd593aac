package link

import (
	"crypto/ecdh"
	"crypto/rand"
	"net"
	"testing"

	"github.com/flynn/noise"
)

// BenchmarkHandshake: one full IK handshake (both sides) over net.Pipe.
func BenchmarkHandshake(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		a, s := net.Pipe()
		done := make(chan error, 1)
		go func() {
			c, err := Server(s, testServerKey, Config{}, acceptAll([]byte("welcome")))
			if err == nil {
				c.Close()
			}
			done <- err
		}()
		c, _, err := Client(a, testClientKey, testServerKey.Public, []byte("hello"), Config{})
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkX25519: the unit a handshake's cost is counted in. "keygen" is
// ecdh.NewPrivateKey, which derives the public key (a full scalar
// multiplication, paid by every ephemeral key and every key parse); "DH" is
// one ECDH with a parsed key. Each side of an IK handshake does one keygen
// and four DHs (BENCHMARKS.md, "Where the handshake time goes").
func BenchmarkX25519(b *testing.B) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		b.Fatal(err)
	}
	b.Run("keygen", func(b *testing.B) {
		for b.Loop() {
			if _, err := ecdh.X25519().NewPrivateKey(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DH", func(b *testing.B) {
		k, err := ecdh.X25519().NewPrivateKey(raw)
		if err != nil {
			b.Fatal(err)
		}
		peer := testServerKey.Public
		pub, err := ecdh.X25519().NewPublicKey(peer[:])
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := k.ECDH(pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFrameCodec: encrypt + decrypt + reassemble one application
// message, frame by frame in pooled buffers as the Conn does it (a 64 KiB
// message takes two frames).
func BenchmarkFrameCodec(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		b.Run(byteSize(size), func(b *testing.B) {
			suite, _ := newSuite()
			var key [32]byte
			tx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
			rx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
			r := reassembler{max: defaultMaxMessageSize}
			msg := pattern(size, 1)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				for p := msg; ; {
					n := min(len(p), maxFrameBody)
					typ := frameDataLast
					if n < len(p) {
						typ = frameDataMore
					}
					bp := getBuf(hdrSize + 1 + n + tagSize)
					out, err := sealFrame(tx, (*bp)[:0], typ, p[:n])
					if err != nil {
						b.Fatal(err)
					}
					t, body, err := openFrame(rx, out[hdrSize:])
					if err != nil {
						b.Fatal(err)
					}
					act, m, _, err := r.feed(t, body)
					putBuf(bp)
					if err != nil {
						b.Fatal(err)
					}
					if p = p[n:]; act == actMessage {
						if len(m) != size {
							b.Fatal(len(m))
						}
						break
					}
				}
			}
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

// BenchmarkConnRoundTrip: client sends 1 KiB, server echoes it, over
// loopback TCP.
func BenchmarkConnRoundTrip(b *testing.B) {
	cli, srv := linkPair(b, Config{}, Config{})
	go func() {
		for {
			m, err := srv.ReadMessage()
			if err != nil {
				return
			}
			if srv.WriteMessage(m) != nil {
				return
			}
		}
	}()
	msg := pattern(1<<10, 3)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := cli.WriteMessage(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := cli.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
}
