package client_test

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/magpie-im/magpie/attach/media"
	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// withBlobs starts a server that takes attachments.
func withBlobs(t testing.TB, opts blobstore.Options) *servertest.Server {
	t.Helper()
	return servertest.Start(t, server.Config{Blobs: servertest.Blobs(t, opts)})
}

// sendFile sends data from c to peer as a file called name.
func sendFile(t testing.TB, c *client.Client, to, name string, data []byte, caption string) *client.Message {
	t.Helper()
	m, err := c.SendFile(testCtx(t), to, bytes.NewReader(data), name, client.FileOptions{Caption: caption})
	if err != nil {
		t.Fatalf("SendFile %s: %v", name, err)
	}
	return m
}

// waitAttachment waits until a received attachment reaches state.
func waitAttachment(t testing.TB, sub *client.Subscription, state client.TransferState) *client.Message {
	t.Helper()
	return waitEvent(t, sub, "a received attachment "+string(state), func(ev client.Event) bool {
		return ev.Kind == client.EventUpdate && !ev.Message.Outgoing && ev.Message.Attachment != nil && ev.Message.Attachment.State == state
	}).Message
}

// waitSaved waits until a received attachment is saved, and checks that
// its file holds data.
func waitSaved(t testing.TB, sub *client.Subscription, data []byte) *client.Message {
	t.Helper()
	m := waitAttachment(t, sub, client.TransferSaved)
	if got, err := os.ReadFile(m.Attachment.Path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the saved file %s differs from what was sent (%d bytes of %d, %v)", m.Attachment.Path, len(got), len(data), err)
	}
	return m
}

// waitProgress waits until a transfer of message seq has moved at least
// done bytes.
func waitProgress(t testing.TB, sub *client.Subscription, seq uint64, upload bool, done int64) client.Progress {
	t.Helper()
	return waitEvent(t, sub, "transfer progress", func(ev client.Event) bool {
		p := ev.Progress
		return ev.Kind == client.EventProgress && (seq == 0 || p.Seq == seq) && p.Upload == upload && p.Done >= done
	}).Progress
}

// readAll reads the attachment of message seq through OpenAttachment.
func readAll(t testing.TB, c *client.Client, seq uint64) []byte {
	t.Helper()
	f, err := c.OpenAttachment(testCtx(t), seq)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil || int64(len(b)) != f.Size {
		t.Fatalf("OpenAttachment read %d of %d bytes: %v", len(b), f.Size, err)
	}
	return b
}

func TestAttachmentRoundTrip(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	alice, bob, asub, bsub := onlinePair(t, s.Invite)

	// A 5 MB document.
	data := randomBytes(5 << 20)
	m := sendFile(t, alice, "bob", "report.bin", data, "the report")
	if m.State != client.StateUploading || m.Attachment == nil || m.Attachment.Size != int64(len(data)) {
		t.Fatalf("SendFile returned %+v", m)
	}
	waitProgress(t, asub, m.Seq, true, m.Attachment.Total)
	got := waitSaved(t, bsub, data)
	a := got.Attachment
	if a.Kind != media.KindDocument || a.Size != int64(len(data)) || a.Name != "report.bin" || got.Text != "the report" ||
		filepath.Base(a.Path) != "report.bin" || filepath.Dir(a.Path) != filepath.Join(bob.Home(), "downloads") {
		t.Fatalf("received %+v, attachment %+v", got, a)
	}
	waitState(t, asub, m.Seq, client.StateDelivered)
	// Both ends open it: alice from her sealed copy, bob from his file.
	if !bytes.Equal(readAll(t, alice, m.Seq), data) || !bytes.Equal(readAll(t, bob, got.Seq), data) {
		t.Fatal("OpenAttachment does not give back the file")
	}

	// An image gets a thumbnail and its size.
	img := image.NewRGBA(image.Rect(0, 0, 800, 600))
	for x := range 800 {
		img.Set(x, x%600, color.RGBA{R: byte(x), G: 100, B: 200, A: 255})
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	sendFile(t, alice, "bob", "harbour.png", buf.Bytes(), "")
	got = waitSaved(t, bsub, buf.Bytes())
	a = got.Attachment
	if a.Kind != media.KindImage || a.Width != 800 || a.Height != 600 || !a.HasThumbnail || a.MIME != "image/png" {
		t.Fatalf("image attachment %+v", a)
	}
	thumb, err := bob.Thumbnail(testCtx(t), got.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jpeg.Decode(bytes.NewReader(thumb)); err != nil {
		t.Fatalf("the thumbnail is not a JPEG: %v", err)
	}
	if h := history(t, alice, "bob"); len(h) != 2 || h[0].Attachment == nil || h[1].Attachment.Kind != media.KindImage {
		t.Fatalf("alice's history: %+v", h)
	}
}

// Connections cut at random points during the upload, then during the
// download: the file arrives whole.
func TestTransfersResumeAcrossCuts(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	p := newProxy(t, s.Addr)
	alice := newUser(t, via(s, p.Addr()), "alice", client.Options{})
	bob := newUser(t, via(s, p.Addr()), "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)
	data := randomBytes(3 << 20)
	m := sendFile(t, alice, "bob", "cut.bin", data, "")
	p.cuts.Store(3) // alice's next three connections are cut at random points
	run(t, alice)
	waitState(t, asub, m.Seq, client.StateSent)
	if n := p.cuts.Load(); n > 0 {
		t.Fatalf("the upload was done after %d of the 3 connections to cut", 3-n)
	}
	p.cuts.Store(2) // and bob's next two
	run(t, bob)
	waitSaved(t, bsub, data)
	if n := p.cuts.Load(); n > 0 {
		t.Fatalf("the download was done after %d of the 2 connections to cut", 2-n)
	}
}

// Through a 20 KB/s path (sign-up too) and a cut, an attachment still goes.
func TestThrottledTransferResumes(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	p := newProxy(t, s.Addr)
	p.bps.Store(20 << 10)
	alice := newUser(t, via(s, p.Addr()), "alice", client.Options{}) // ~160 KB of prekeys
	bob := newUser(t, s.Invite, "bob", client.Options{})
	bsub := subscribe(t, bob)
	p.cuts.Store(1) // and the upload is cut once
	data := randomBytes(100 << 10)
	sendFile(t, alice, "bob", "slow.bin", data, "")
	run(t, alice)
	run(t, bob)
	waitSaved(t, bsub, data)
}

// A server that changes one byte of an attachment is caught: the download
// fails, and leaves nothing in the downloads folder.
func TestTamperedAttachmentRejected(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)
	run(t, alice)
	m := sendFile(t, alice, "bob", "x.bin", randomBytes(300<<10), "")
	waitState(t, asub, m.Seq, client.StateSent)

	// Flip one byte of the stored ciphertext (the server's blobs are in this
	// test's temporary directories, beside the clients' homes).
	var blobs []string
	filepath.WalkDir(filepath.Dir(t.TempDir()), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, string(filepath.Separator)+"blobs"+string(filepath.Separator)) {
			return err
		}
		if fi, err := d.Info(); err == nil && fi.Size() > 200<<10 {
			blobs = append(blobs, p)
		}
		return err
	})
	if len(blobs) != 1 {
		t.Fatalf("blob files %v", blobs)
	}
	raw, err := os.ReadFile(blobs[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(blobs[0], raw, 0o600); err != nil {
		t.Fatal(err)
	}

	run(t, bob)
	got := waitAttachment(t, bsub, client.TransferFailed)
	if !strings.Contains(got.Attachment.Err, client.ErrAttachmentDigest.Error()) {
		t.Fatalf("tampered attachment: %q", got.Attachment.Err)
	}
	if _, err := bob.OpenAttachment(testCtx(t), got.Seq); !errors.Is(err, client.ErrNotSaved) {
		t.Fatalf("OpenAttachment of a rejected attachment: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(bob.Home(), "downloads")); len(entries) != 0 {
		t.Fatalf("a tampered attachment left files behind: %v", entries)
	}
}

// Over the server's size limit or the sender's quota, an attachment fails
// for good, with the reason; one within both goes through.
func TestAttachmentLimits(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{MaxSize: 1 << 20, Quota: 1500 << 10})
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	bsub := subscribe(t, bob)
	big := sendFile(t, alice, "bob", "big.bin", randomBytes(2<<20), "")
	a := randomBytes(900 << 10)
	first := sendFile(t, alice, "bob", "a.bin", a, "")
	second := sendFile(t, alice, "bob", "b.bin", randomBytes(900<<10), "")
	run(t, alice)
	waitFor(t, "the three attachments settled", func() bool {
		return message(t, alice, second.Seq).State == client.StateFailed && message(t, alice, first.Seq).State == client.StateSent
	})
	for _, c := range []struct {
		m    *client.Message
		code string
	}{{big, "too_large"}, {second, "quota"}} {
		got := message(t, alice, c.m.Seq)
		if got.State != client.StateFailed || got.ErrCode != c.code || got.Attachment.State != client.TransferFailed {
			t.Fatalf("%s: %s with %q (%s), want failed with %s", got.Attachment.Name, got.State, got.ErrCode, got.Err, c.code)
		}
	}
	run(t, bob)
	waitSaved(t, bsub, a)
	if out, err := alice.Outbox(testCtx(t)); err != nil || len(out) != 0 {
		t.Fatalf("alice's outbox: %+v %v", out, err)
	}
}

// A text sent while an attachment uploads goes between the upload's
// chunks, on the same connection, not after the upload.
func TestTextInterleavesWithUpload(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	p := newProxy(t, s.Addr)
	p.bps.Store(1 << 20) // 4 MB take four seconds
	alice := newUser(t, via(s, p.Addr()), "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)
	runOnline(t, alice)
	runOnline(t, bob)
	file := sendFile(t, alice, "bob", "big.bin", randomBytes(4<<20), "")
	waitProgress(t, asub, file.Seq, true, 1)
	before := p.accepted.Load()
	send(t, alice, "bob", "meanwhile")
	waitMessage(t, bsub, "alice", "meanwhile")
	if got := message(t, alice, file.Seq); got.State != client.StateUploading {
		t.Fatalf("the text arrived only once the upload was %s", got.State)
	}
	if p.accepted.Load() != before {
		t.Fatal("the text went on a connection of its own")
	}
}

// The engine stops in the middle of a download; run again, it fetches only
// the rest, and saves the file once.
func TestDownloadResumesAfterTheEngineStops(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	p := newProxy(t, s.Addr)
	p.bps.Store(2 << 20)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, via(s, p.Addr()), "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)
	data := randomBytes(3 << 20)
	m := sendFile(t, alice, "bob", "big.bin", data, "")
	run(t, alice)
	waitState(t, asub, m.Seq, client.StateSent)

	stop := run(t, bob)
	waitProgress(t, bsub, 0, false, 1<<20)
	stop()
	downloads := filepath.Join(bob.Home(), "downloads")
	if names := dirNames(t, downloads); len(names) != 1 || !strings.HasSuffix(names[0], ".part") {
		t.Fatalf("stopped mid-download, the downloads folder holds %q", names)
	}
	run(t, bob)
	got := waitSaved(t, bsub, data)
	if names := dirNames(t, downloads); !slices.Equal(names, []string{"big.bin"}) || got.Attachment.Path != filepath.Join(downloads, "big.bin") {
		t.Fatalf("after the download, the folder holds %q and the message says %s", names, got.Attachment.Path)
	}
	if n := p.toClient.Load(); n > int64(len(data))+512<<10 {
		t.Fatalf("bob fetched %d bytes for a %d-byte file: the download started over", n, len(data))
	}
}

// SendFile reads any io.Reader into a sealed copy in the home (the file's
// bytes are nowhere there in clear); the engine stops in the middle of the
// upload and, run again, sends only the rest.
func TestUploadResumesAfterTheEngineStops(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	p := newProxy(t, s.Addr)
	p.bps.Store(2 << 20)
	alice := newUser(t, via(s, p.Addr()), "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)
	data := randomBytes(3 << 20)
	m, err := alice.SendFile(testCtx(t), "bob", struct{ io.Reader }{bytes.NewReader(data)}, "upload.bin", client.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if staged := filesUnder(t, filepath.Join(alice.Home(), "files")); len(staged) != 1 || staged[0].size < int64(len(data)) {
		t.Fatalf("the staged copies: %+v", staged)
	}
	if leaks := plaintextIn(t, alice.Home(), data); len(leaks) > 0 {
		t.Fatalf("the file is in clear in alice's home: %q", leaks)
	}

	stop := run(t, alice)
	waitProgress(t, asub, m.Seq, true, 1<<20)
	stop()
	if got := message(t, alice, m.Seq); got.State != client.StateUploading {
		t.Fatalf("stopped mid-upload, the message is %s", got.State)
	}
	run(t, alice)
	waitState(t, asub, m.Seq, client.StateSent)
	if n := p.toServer.Load(); n > int64(len(data))+512<<10 {
		t.Fatalf("alice sent %d bytes for a %d-byte file: the upload started over", n, len(data))
	}
	run(t, bob)
	waitSaved(t, bsub, data)
	// The search that found nothing in alice's home finds the file in bob's.
	if leaks := plaintextIn(t, bob.Home(), data); len(leaks) != 1 {
		t.Fatalf("the file's bytes found in %q of bob's home, want his saved copy", leaks)
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	for _, f := range filesUnder(t, dir) {
		names = append(names, filepath.Base(f.path))
	}
	return names
}

type fileInfo struct {
	path string
	size int64
}

// filesUnder lists the regular files below dir.
func filesUnder(t testing.TB, dir string) []fileInfo {
	t.Helper()
	var out []fileInfo
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		out = append(out, fileInfo{p, fi.Size()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// plaintextIn lists the files below dir that hold any 32-byte run of data
// (sampled every 64 KiB).
func plaintextIn(t testing.TB, dir string, data []byte) []string {
	t.Helper()
	var out []string
	for _, f := range filesUnder(t, dir) {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+32 <= len(data); off += 64 << 10 {
			if bytes.Contains(b, data[off:off+32]) {
				out = append(out, f.path)
				break
			}
		}
	}
	return out
}
