package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// BenchmarkHandshake measures a full connection through a real server: TCP
// connect, Noise IK handshake, device lookup, hello.
func BenchmarkHandshake(b *testing.B) {
	s := servertest.Start(b, server.Config{})
	key := servertest.NewKey(b)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		c, err := clientconn.Dial(ctx, s.Invite, key, clientconn.DialOptions{})
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkRelay measures one message from alice to bob through a real
// server: send, durable commit, ack to alice, push to bob, bob's ack.
//
// sequential: one message in flight (latency-bound: every message waits for
// its own commit). pipelined: 64 in flight from one connection, so group
// commit shares one sync among many messages.
func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{1 << 10} {
		b.Run(fmt.Sprintf("sequential/%dB", size), func(b *testing.B) { relay(b, size, 1) })
		b.Run(fmt.Sprintf("pipelined/%dB", size), func(b *testing.B) { relay(b, size, 64) })
	}
}

func relay(b *testing.B, size, inflight int) {
	// One connection here carries what thousands of users would: lift the
	// per-connection abuse limit.
	s := servertest.Start(b, server.Config{QueueLimit: 1 << 30, RequestRate: rate.Inf})
	alice := s.Register(b, "alice")
	bob := s.Register(b, "bob")
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()

	received := make(chan error, 1)
	errs := make(chan error, inflight)
	n := b.N
	go func() {
		got := 0
		var seqs []uint64
		for got < n {
			select {
			case p, ok := <-bob.Pushes():
				if !ok {
					received <- bob.Err()
					return
				}
				if p.Envelope == nil {
					continue
				}
				got++
				seqs = append(seqs, p.Envelope.Seq)
				if len(seqs) >= 32 || got == n {
					if err := bob.Ack(seqs...); err != nil {
						received <- err
						return
					}
					seqs = seqs[:0]
				}
			case err := <-errs:
				received <- err
				return
			case <-time.After(30 * time.Second):
				received <- fmt.Errorf("stalled after %d of %d", got, n)
				return
			}
		}
		received <- nil
	}()

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := (n + inflight - 1) / inflight
	for w := range inflight {
		lo, hi := w*per, min((w+1)*per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				if _, err := alice.Send(context.Background(), "bob", clientconn.NewMessageID(), payload); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	if err := <-received; err != nil {
		b.Fatal(err)
	}
	wg.Wait()
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
}
