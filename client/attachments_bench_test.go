package client_test

import (
	"context"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// BenchmarkTextDuringUpload measures how long a text takes from alice's
// send to bob's screen while a 200 MB upload runs on alice's same
// connection: the text must go between the upload's chunks, not after
// them. ns/op is the mean; p50 and max are reported as metrics.
func BenchmarkTextDuringUpload(b *testing.B) {
	bs, err := blobstore.Open(filepath.Join(b.TempDir(), "blobs"), blobstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	s := servertest.Start(b, server.Config{Blobs: bs, RequestRate: 1e9, RequestBurst: 1 << 30})
	alice := s.Register(b, "alice")
	bob := s.Register(b, "bob")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the upload: 200 MB in 64 KiB chunks, repeated while the benchmark runs
		chunk := make([]byte, 64<<10)
		for ctx.Err() == nil {
			st, err := alice.UploadStart(ctx, 200<<20)
			if err != nil {
				return
			}
			for off := 0; off < 200<<20 && ctx.Err() == nil; off += len(chunk) {
				if _, err := alice.UploadChunk(ctx, st.BlobID, uint64(off), chunk); err != nil {
					return
				}
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // let the upload get going
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := alice.Send(context.Background(), "bob", client.NewMessageID(), []byte("meanwhile")); err != nil {
			b.Fatal(err)
		}
		e := servertest.NextEnvelope(b, bob.Conn, 10*time.Second)
		lat = append(lat, time.Since(start))
		bob.Ack(e.Seq)
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkAttachment measures a whole 32 MiB attachment through a real
// server: encrypt and upload (SendFile), then download, verify and decrypt.
func BenchmarkAttachment(b *testing.B) {
	bs, err := blobstore.Open(filepath.Join(b.TempDir(), "blobs"), blobstore.Options{Quota: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	s := servertest.Start(b, server.Config{Blobs: bs, RequestRate: 1e9, RequestBurst: 1 << 30})
	alice := newBenchClient(b, s)
	bob := newBenchClient(b, s)
	if _, err := alice.Register(context.Background(), "alice"); err != nil {
		b.Fatal(err)
	}
	if _, err := bob.Register(context.Background(), "bob"); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "file.bin")
	writeRandomFile(b, path, 32<<20)
	b.SetBytes(32 << 20)
	b.ResetTimer()
	for range b.N {
		if _, err := alice.SendFile(context.Background(), "bob", path, "", nil); err != nil {
			b.Fatal(err)
		}
		var att *client.AttachmentInfo
		if err := bob.Sync(context.Background(), func(ev client.Event) {
			if ev.Attachment != nil {
				att = ev.Attachment
			}
		}); err != nil || att == nil {
			b.Fatalf("sync: %v", err)
		}
		if _, err := bob.Download(context.Background(), att, b.TempDir(), nil); err != nil {
			b.Fatal(err)
		}
	}
}
