package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"image"
	"image/color"
	"image/png"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
)

// withBlobs starts a server with an attachment store in dir/blobs.
func withBlobs(t *testing.T, opts blobstore.Options, cfg server.Config) *servertest.Server {
	t.Helper()
	b, err := blobstore.Open(filepath.Join(t.TempDir(), "blobs"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cfg.Blobs = b
	return servertest.Start(t, cfg)
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// receiveAttachment syncs c and downloads the attachments it got.
func receiveAttachment(t *testing.T, c *client.Client) (client.Event, string) {
	t.Helper()
	evs, err := collect(t, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Attachment != nil {
			path, err := c.Download(testCtx(t), ev.Attachment, t.TempDir(), nil)
			if err != nil {
				t.Fatalf("download: %v", err)
			}
			return ev, path
		}
	}
	t.Fatalf("no attachment among %+v", evs)
	return client.Event{}, ""
}

func TestAttachmentRoundTrip(t *testing.T) {
	s := withBlobs(t, blobstore.Options{}, server.Config{})
	alice := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")

	// A 5 MB document.
	data := randomBytes(5 << 20)
	var calls atomic.Int32
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "report.bin", data), "the report", func(done, total int64) {
		calls.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 10 {
		t.Fatalf("progress reported %d times for a 5 MB upload", calls.Load())
	}
	ev, path := receiveAttachment(t, bob)
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, data) {
		t.Fatal("the downloaded file differs")
	}
	a := ev.Attachment
	if a.GetKind() != "document" || a.GetSize() != uint64(len(data)) || a.GetCaption() != "the report" || filepath.Base(path) != "report.bin" {
		t.Fatalf("attachment %+v saved as %s", a, path)
	}

	// An image gets a thumbnail and its size.
	img := image.NewRGBA(image.Rect(0, 0, 800, 600))
	for x := range 800 {
		img.Set(x, x%600, color.RGBA{R: byte(x), G: 100, B: 200, A: 255})
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "harbour.png", buf.Bytes()), "", nil); err != nil {
		t.Fatal(err)
	}
	ev, path = receiveAttachment(t, bob)
	a = ev.Attachment
	if a.GetKind() != "image" || a.GetWidth() != 800 || a.GetHeight() != 600 || len(a.GetThumbnail()) == 0 || a.GetMime() != "image/png" {
		t.Fatalf("image attachment kind %q %dx%d thumbnail %d bytes mime %q", a.GetKind(), a.GetWidth(), a.GetHeight(), len(a.GetThumbnail()), a.GetMime())
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, buf.Bytes()) {
		t.Fatal("the image differs")
	}
	// The server never saw the plaintext or the key.
	h, _ := alice.History(testCtx(t), "bob", 10)
	if len(h) != 2 || h[0].Content == nil {
		t.Fatalf("sender's history %+v", h)
	}
}

// flaky forwards to upstream but cuts each of its first cuts connections
// after a random number of bytes in either direction.
type flaky struct {
	ln   net.Listener
	cuts atomic.Int32
	bps  int // bytes per second per direction; 0 is unlimited
	mu   sync.Mutex
	all  []net.Conn
}

func newFlaky(t *testing.T, upstream string, cuts int, bps int) *flaky {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{ln: ln, bps: bps}
	f.cuts.Store(int32(cuts))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.all = append(f.all, c, up)
			f.mu.Unlock()
			budget := int64(-1)
			if f.cuts.Add(-1) >= 0 {
				budget = 64<<10 + mrand.Int64N(1<<20) // cut somewhere in the first ~1 MB
			}
			var left atomic.Int64
			left.Store(budget)
			for _, pair := range [][2]net.Conn{{up, c}, {c, up}} {
				go func(dst, src net.Conn) {
					buf := make([]byte, 16<<10)
					for {
						n, err := src.Read(buf)
						if err != nil {
							dst.Close()
							return
						}
						if budget >= 0 && left.Add(-int64(n)) < 0 {
							c.Close()
							up.Close()
							return
						}
						if f.bps > 0 {
							time.Sleep(time.Duration(n) * time.Second / time.Duration(f.bps))
						}
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
				}(pair[0], pair[1])
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.all {
			c.Close()
		}
		f.mu.Unlock()
	})
	return f
}

// viaOnly gives a client an invite whose only endpoint is addr.
func viaOnly(t *testing.T, s *servertest.Server, addr string) invite.Invite {
	t.Helper()
	return invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: []string{addr}}
}

func TestTransfersResumeAcrossCuts(t *testing.T) {
	s := withBlobs(t, blobstore.Options{}, server.Config{})
	f := newFlaky(t, s.Addr, 0, 0)
	alice := newClient(t, viaOnly(t, s, f.ln.Addr().String()), client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, viaOnly(t, s, f.ln.Addr().String()), client.Options{})
	register(t, bob, "bob")
	f.cuts.Store(3) // the next three connections are cut at random points
	data := randomBytes(3 << 20)
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "cut.bin", data), "", nil); err != nil {
		t.Fatal(err)
	}
	f.cuts.Store(2) // and the download is cut too
	_, path := receiveAttachment(t, bob)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Fatal("the file differs after resumed transfers")
	}
}

func TestThrottledTransferResumes(t *testing.T) {
	s := withBlobs(t, blobstore.Options{}, server.Config{})
	f := newFlaky(t, s.Addr, 0, 20<<10) // 20 KB/s
	alice := newClient(t, viaOnly(t, s, f.ln.Addr().String()), client.Options{})
	register(t, alice, "alice") // sign-up works at 20 KB/s too (~160 KB of prekeys)
	f.cuts.Store(1)             // and the upload is cut once
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")
	data := randomBytes(100 << 10)
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "slow.bin", data), "", nil); err != nil {
		t.Fatal(err)
	}
	_, path := receiveAttachment(t, bob)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Fatal("the file differs")
	}
}

func TestTamperedAttachmentRejected(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	b, err := blobstore.Open(dir, blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s := servertest.Start(t, server.Config{Blobs: b})
	alice := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "x.bin", randomBytes(300<<10)), "", nil); err != nil {
		t.Fatal(err)
	}
	// Flip one byte of the stored ciphertext (a malicious or broken server).
	var blobs []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() > 200<<10 {
			blobs = append(blobs, p)
		}
		return nil
	})
	if len(blobs) != 1 {
		t.Fatalf("blob files %v", blobs)
	}
	raw, _ := os.ReadFile(blobs[0])
	raw[len(raw)/2] ^= 1
	os.WriteFile(blobs[0], raw, 0o600)

	evs, err := collect(t, bob)
	if err != nil {
		t.Fatal(err)
	}
	dl := t.TempDir()
	for _, ev := range evs {
		if ev.Attachment != nil {
			if _, err := bob.Download(testCtx(t), ev.Attachment, dl, nil); !errors.Is(err, client.ErrAttachmentDigest) {
				t.Fatalf("tampered attachment: %v", err)
			}
		}
	}
	if entries, _ := os.ReadDir(dl); len(entries) != 0 {
		t.Fatalf("a tampered attachment left files behind: %v", entries)
	}
}

func TestAttachmentLimits(t *testing.T) {
	s := withBlobs(t, blobstore.Options{MaxSize: 1 << 20, Quota: 1500 << 10}, server.Config{})
	alice := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "big.bin", randomBytes(2<<20)), "", nil); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("over the size limit: %v", err)
	}
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "a.bin", randomBytes(900<<10)), "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "b.bin", randomBytes(900<<10)), "", nil); !errors.Is(err, client.ErrQuota) {
		t.Fatalf("over the quota: %v", err)
	}
	// bob fetches the first: its space comes back after garbage collection.
	receiveAttachment(t, bob)
}

// TestTextInterleavesWithUpload: on one connection, a text sent while an
// upload runs is answered between the upload's chunks, not after them.
func TestTextInterleavesWithUpload(t *testing.T) {
	s := withBlobs(t, blobstore.Options{}, server.Config{})
	alice := s.Register(t, "alice")
	s.Register(t, "bob")
	const chunks = 200
	st, err := alice.UploadStart(testCtx(t), chunks*(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	var done atomic.Int32
	started := make(chan struct{})
	go func() {
		chunk := randomBytes(64 << 10)
		for i := range chunks {
			if i == 5 {
				close(started)
			}
			if _, err := alice.UploadChunk(context.Background(), st.BlobID, uint64(i*len(chunk)), chunk); err != nil {
				return
			}
			done.Add(1)
		}
	}()
	<-started
	if _, err := alice.Send(testCtx(t), "bob", client.NewMessageID(), []byte("meanwhile")); err != nil {
		t.Fatal(err)
	}
	if n := done.Load(); n >= chunks-10 {
		t.Fatalf("the text was acknowledged only after %d of %d chunks", n, chunks)
	}
}

func newBenchClient(b *testing.B, s *servertest.Server) *client.Client {
	b.Helper()
	home := b.TempDir()
	if err := client.Init(context.Background(), home, s.Invite, testKey); err != nil {
		b.Fatal(err)
	}
	c, err := client.Open(context.Background(), home, client.Options{Unlocker: testKey})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func writeRandomFile(tb testing.TB, path string, n int) {
	tb.Helper()
	if err := os.WriteFile(path, randomBytes(n), 0o600); err != nil {
		tb.Fatal(err)
	}
}
