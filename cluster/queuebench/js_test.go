package queuebench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/magpie-im/magpie/cluster/natstest"
)

// jsQueues are the queues as JetStream would keep them: one stream of
// every device's messages (subject q.<device>), replicated on 3 servers,
// and one durable consumer per device, also replicated on 3, as its
// cursor. Interest retention deletes a message once its device's
// consumer has acknowledged it, as the store deletes an acknowledged row;
// it also means a device's consumer must exist before its messages
// arrive, or they are dropped.
type jsQueues struct {
	srvs []*server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	s    jetstream.Stream
	cons map[device]jetstream.Consumer
}

const (
	streamName = "QUEUES"
	fromHeader = "Magpie-From" // the sender, for the receipt
)

// newJS starts a 3-server JetStream cluster (syncAlways: every write
// fsynced before it is acknowledged) and creates the stream and the
// consumers of devs.
func newJS(t testing.TB, syncAlways bool, devs []device) *jsQueues {
	t.Helper()
	srvs := natstest.ClusterOpts(t, 3, natstest.Options{JetStream: true, SyncAlways: syncAlways})
	// One connection, as a node would have; the client spreads over the
	// servers, so it is often not on the stream's leader, as in a cluster.
	nc, err := nats.Connect(natstest.URLs(srvs...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       streamName,
		Subjects:   []string{"q.*"},
		Retention:  jetstream.InterestPolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   3,
		MaxAge:     expiry,
		Duplicates: 2 * time.Minute, // the server's default, said: the window of Nats-Msg-Id
		// A cursor per device: past the server's default of 1,000
		// consumers a stream (jetstream.default_max_consumers).
		MaxConsumers: 1 << 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	q := &jsQueues{srvs: srvs, nc: nc, js: js, s: s, cons: map[device]jetstream.Consumer{}}
	if err := q.addConsumers(ctx, devs); err != nil {
		t.Fatal(err)
	}
	return q
}

// addConsumers creates the cursors of devs, 8 at a time: a JetStream
// server creates one in several round trips and fsyncs.
func (q *jsQueues) addConsumers(ctx context.Context, devs []device) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(devs)); i = next.Add(1) - 1 {
				c, err := q.addConsumer(ctx, devs[i])
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					q.cons[devs[i]] = c
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// addConsumer creates dev's cursor: a durable consumer of its subject,
// with the stream's 3 replicas, acknowledged up to a point (AckAll: one
// acknowledgement per page, as the store takes one Ack of many seqs).
func (q *jsQueues) addConsumer(ctx context.Context, dev device) (jetstream.Consumer, error) {
	c, err := q.s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       dev.String(),
		FilterSubject: "q." + dev.String(),
		AckPolicy:     jetstream.AckAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", dev, err)
	}
	return c, nil
}

func (q *jsQueues) enqueue(ctx context.Context, from int, first uint64, to []int) error {
	msgs := make([]*nats.Msg, len(to))
	for i, d := range to {
		msgs[i] = &nats.Msg{Subject: "q." + recipient(d).String(), Data: payload,
			Header: nats.Header{fromHeader: {sender(from).String()}}}
	}
	return q.publish(ctx, msgs, func(i int) string { return fmt.Sprintf("%s-%d", sender(from), first+uint64(i)) })
}

// publish stores msgs with ids id(0), id(1), … and waits for every
// acknowledgement: one message is a synchronous publish, more are
// published asynchronously (all in flight at once) and then awaited.
func (q *jsQueues) publish(ctx context.Context, msgs []*nats.Msg, id func(int) string) error {
	if len(msgs) == 1 {
		ack, err := q.js.PublishMsg(ctx, msgs[0], jetstream.WithMsgID(id(0)))
		return checkAck(ack, err)
	}
	fs := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		f, err := q.js.PublishMsgAsync(m, jetstream.WithMsgID(id(i)))
		if err != nil {
			return err
		}
		fs[i] = f
	}
	for _, f := range fs {
		select {
		case ack := <-f.Ok():
			if err := checkAck(ack, nil); err != nil {
				return err
			}
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func checkAck(ack *jetstream.PubAck, err error) error {
	if err == nil && ack.Duplicate {
		err = errors.New("publish: a duplicate")
	}
	return err
}

func (q *jsQueues) take(ctx context.Context, dev device, page int) (int, error) {
	c := q.cons[dev]
	if c == nil {
		return 0, fmt.Errorf("no consumer for %s", dev)
	}
	batch, err := c.FetchNoWait(page)
	if err != nil {
		return 0, err
	}
	var (
		last     jetstream.Msg
		receipts []*nats.Msg
		seqs     []uint64
		n        int
	)
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			return 0, err
		}
		last, n = m, n+1
		if from := m.Headers().Get(fromHeader); from != "" { // receipts have none, and get none
			seqs = append(seqs, md.Sequence.Stream)
			receipts = append(receipts, &nats.Msg{Subject: "q." + from, Data: make([]byte, 8)})
		}
	}
	if err := batch.Error(); err != nil {
		return 0, err
	}
	if last == nil {
		return 0, nil
	}
	// The receipts first: acknowledged messages must have theirs.
	if len(receipts) > 0 {
		if err := q.publish(ctx, receipts, func(i int) string { return fmt.Sprintf("r%d", seqs[i]) }); err != nil {
			return 0, err
		}
	}
	// AckAll: the last message's acknowledgement covers the page. Its
	// answer comes once the consumer's replicas have applied it.
	if err := last.DoubleAck(ctx); err != nil {
		return 0, err
	}
	return n, nil
}

// otherCPU is 0: the NATS servers run in this process.
func (q *jsQueues) otherCPU() time.Duration { return 0 }
