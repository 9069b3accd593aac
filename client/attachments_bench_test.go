package client_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// benchPair starts a server for benchmarks (no rate limits, no quota) and
// two running clients, alice and bob, and returns them with bob's events.
func benchPair(b *testing.B) (alice, bob *client.Client, bsub *client.Subscription) {
	b.Helper()
	s := servertest.Start(b, server.Config{Blobs: servertest.Blobs(b, blobstore.Options{Quota: 1 << 40}),
		RequestRate: 1e9, RequestBurst: 1 << 30})
	alice, bob, _, bsub = onlinePair(b, s.Invite)
	return alice, bob, bsub
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// BenchmarkTextDuringUpload measures how long a text takes from alice's
// Send to bob's event stream while alice's engine uploads attachments (64
// MB each, one after another) on the same connection: the text must go
// between the upload's chunks, not after them. ns/op is the mean; p50 and
// max are reported as metrics.
func BenchmarkTextDuringUpload(b *testing.B) {
	alice, _, bsub := benchPair(b)
	asub := subscribe(b, alice)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stage := func() {
		alice.SendFile(ctx, "bob", io.LimitReader(zeros{}, 64<<20), "upload.bin", client.FileOptions{})
	}
	stage()
	stage() // one waits while the other uploads
	started, done := make(chan struct{}), make(chan struct{})
	start := sync.OnceFunc(func() { close(started) })
	go func() { // when an upload is done, stage another
		defer close(done)
		for ev := range asub.Events() {
			switch {
			case ev.Kind == client.EventProgress && ev.Progress.Upload:
				start()
			case ev.Kind == client.EventUpdate && ev.Message.Attachment != nil && ev.Message.State == client.StateQueued && ctx.Err() == nil:
				stage()
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(eventTimeout):
		b.Fatal("the upload did not start")
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		text := fmt.Sprintf("meanwhile %d", i)
		start := time.Now()
		send(b, alice, "bob", text)
		waitMessage(b, bsub, "alice", text)
		lat = append(lat, time.Since(start))
	}
	out, err := alice.Outbox(ctx)
	if err != nil || !slices.ContainsFunc(out, func(m client.Message) bool { return m.State == client.StateUploading }) {
		b.Fatalf("no upload was left at the end (%v): the texts did not all meet one", err)
	}
	cancel()
	asub.Close()
	<-done
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkAttachment measures a whole 32 MiB attachment through a real
// server: alice's SendFile (encrypt into the sealed copy) and upload, then
// bob's download, verification and decryption, until his event says it is
// saved.
func BenchmarkAttachment(b *testing.B) {
	alice, bob, bsub := benchPair(b)
	data := randomBytes(32 << 20)
	b.SetBytes(int64(len(data)))
	var last *client.Message
	for b.Loop() {
		sendFile(b, alice, "bob", "file.bin", data, "")
		last = waitAttachment(b, bsub, client.TransferSaved)
	}
	b.StopTimer()
	if got := readAll(b, bob, last.Seq); len(got) != len(data) || string(got) != string(data) {
		b.Fatal("the received file differs")
	}
}
