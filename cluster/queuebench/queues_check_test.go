package queuebench

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/magpie-im/magpie/cluster/natstest"
)

// TestQueues checks that both engines do what the benchmarks count on: a
// device takes its own messages only, each once; taking them queues the
// senders' receipts.
func TestQueues(t *testing.T) {
	engines := map[string]func(t *testing.T) queues{
		"pg": func(t *testing.T) queues { return newPG(t, false) },
		"js": func(t *testing.T) queues {
			return newJS(t, false, []device{recipient(1), recipient(2), sender(0), sender(1)})
		},
	}
	for name, open := range engines {
		t.Run(name, func(t *testing.T) {
			q := open(t)
			ctx := context.Background()
			if err := q.enqueue(ctx, 0, 1, []int{1, 2, 1}); err != nil {
				t.Fatal(err)
			}
			if err := q.enqueue(ctx, 1, 1, []int{1}); err != nil {
				t.Fatal(err)
			}
			for _, want := range []struct {
				dev  device
				page int
				n    int
			}{
				{recipient(1), 2, 2}, {recipient(1), 10, 1}, {recipient(1), 10, 0},
				{recipient(2), 10, 1}, {recipient(2), 10, 0},
				{sender(0), 10, 3}, {sender(1), 10, 1}, {sender(0), 10, 0},
			} {
				if n, err := takeWait(ctx, q, want.dev, want.page, want.n); err != nil || n != want.n {
					t.Fatalf("take(%s, %d) = %d, %v; want %d", want.dev, want.page, n, err, want.n)
				}
			}
		})
	}
}

// takeWait is q.take, tried again for up to 5 s while it takes nothing
// and want is more. A JetStream consumer sees an acknowledged message
// only once its server's replica of the stream has applied it, a moment
// after the acknowledgement if the two are on different servers; in
// PostgreSQL a committed message is there for the next read.
func takeWait(ctx context.Context, q queues, dev device, page, want int) (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := q.take(ctx, dev, page)
		if err != nil || n > 0 || want == 0 || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJetStreamDurability checks the JetStream set-up's promises: a
// repeated Nats-Msg-Id is stored once, an acknowledged message is
// deleted, and an acknowledged message survives the loss of the server
// that leads its stream.
func TestJetStreamDurability(t *testing.T) {
	q := newJS(t, false, []device{recipient(1), sender(0)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := &nats.Msg{Subject: "q.d1", Data: payload, Header: nats.Header{fromHeader: {"s0"}}}
	for i, want := range []bool{false, true} {
		ack, err := q.js.PublishMsg(ctx, m, jetstream.WithMsgID("s0-1"))
		if err != nil || ack.Duplicate != want {
			t.Fatalf("publish %d: %+v, %v; want Duplicate=%v", i, ack, err, want)
		}
	}
	if n := streamMsgs(ctx, t, q); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	if n, err := takeWait(ctx, q, recipient(1), 10, 1); n != 1 || err != nil {
		t.Fatalf("take = %d, %v; want 1", n, err)
	}
	// The receipt stays; the acknowledged message goes (the stream learns
	// of the acknowledgement after answering it).
	for n := streamMsgs(ctx, t, q); n != 1; n = streamMsgs(ctx, t, q) {
		if ctx.Err() != nil {
			t.Fatalf("%d messages stored after the take, want 1 (the receipt)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := q.enqueue(ctx, 0, 2, []int{1}); err != nil {
		t.Fatal(err)
	}
	info, err := q.s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range q.srvs {
		if s.Name() == info.Cluster.Leader {
			natstest.Stop(s)
		}
	}
	for {
		n, err := q.take(ctx, recipient(1), 10)
		if err == nil && n == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("after the leader's loss: take = %d, %v", n, err)
		}
		time.Sleep(100 * time.Millisecond) // a new leader is being elected
	}
}

func streamMsgs(ctx context.Context, t *testing.T, q *jsQueues) uint64 {
	t.Helper()
	info, err := q.s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
