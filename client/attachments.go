package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/attach"
	"github.com/magpie-im/magpie/attach/media"
	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/internal/bytesize"
	"github.com/magpie-im/magpie/internal/clientstore"
)

// Attachment transfers move end-to-end ciphertext (package attach) over the
// client's own connection, in chunks the server confirms once durable, so
// they travel whatever transport the text does and resume after a dropped
// connection, a server restart or a crawl.

// Progress reports a transfer: done of total bytes.
type Progress func(done, total int64)

// transferChunk is the unit of uploads and downloads: one encrypted chunk
// of package attach, so a resumed download restarts on a chunk boundary.
const transferChunk = attach.ChunkSize + attach.Overhead

// maxTransferTries bounds reconnections during one transfer.
const maxTransferTries = 30

const nsUploads = "client.uploads" // KV: upload state by file identity

// uploadState is what resuming an upload needs; kept sealed in the KV.
type uploadState struct {
	BlobID []byte   `json:"blob_id"`
	Key    [32]byte `json:"key"`
	ID     [16]byte `json:"id"`
}

// retryable reports whether a transfer error is worth reconnecting for.
func retryable(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// SendFile sends the file at path to user to as an attachment: it reads what
// kind of file it is (a thumbnail for images, the duration of voice notes
// and videos), encrypts it under a fresh key, uploads the ciphertext
// resumably, then sends the key, digest and description in an end-to-end
// message (through the outbox, like text). Interrupted, it resumes where the
// server's confirmed length ends, even after a restart of this program.
func (c *Client) SendFile(ctx context.Context, to, path, caption string, progress Progress) (Sent, error) {
	if _, ok := c.Account(); !ok {
		return Sent{}, ErrNotRegistered
	}
	f, err := os.Open(path)
	if err != nil {
		return Sent{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Sent{}, err
	}
	info, err := media.Inspect(filepath.Base(path), f, fi.Size())
	if err != nil {
		return Sent{}, fmt.Errorf("reading %s: %w", path, err)
	}
	// The same file, unchanged, resumes the same upload.
	fileKey := fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d", to, path, fi.Size(), fi.ModTime().UnixNano())))
	kv := c.st.KV(ctx)
	var st uploadState
	if raw, err := kv.Get(nsUploads, fileKey); err != nil {
		return Sent{}, err
	} else if raw == nil || json.Unmarshal(raw, &st) != nil {
		if st.Key, err = attach.NewKey(); err != nil {
			return Sent{}, err
		}
		st.ID = NewMessageID()
	}
	blobSize := attach.EncryptedSize(fi.Size())
	var digest [32]byte
	for try := 0; ; try++ {
		digest, err = c.upload(ctx, f, &st, blobSize, to, fileKey, progress)
		if err == nil {
			break
		}
		if try >= maxTransferTries || !retryable(err) {
			return Sent{}, fmt.Errorf("uploading %s: %w", filepath.Base(path), err)
		}
		c.opts.Logger.Warn("upload interrupted; resuming", "err", err)
		select {
		case <-ctx.Done():
			return Sent{}, ctx.Err()
		case <-time.After(jitter(min(time.Duration(try+1)*500*time.Millisecond, 5*time.Second))):
		}
	}
	att := &content.Attachment{
		BlobId: st.BlobID, Key: st.Key[:], Digest: digest[:], Size: uint64(fi.Size()), BlobSize: uint64(blobSize),
		Mime: info.MIME, Kind: info.Kind, FileName: filepath.Base(path), Width: uint32(info.Width), Height: uint32(info.Height),
		DurationMs: uint64(info.Duration.Milliseconds()), Thumbnail: info.Thumbnail, Caption: caption,
	}
	payload, err := proto.Marshal(&content.Content{Body: &content.Content_Attachment{Attachment: att}})
	if err != nil {
		return Sent{}, err
	}
	if err := c.st.Update(ctx, func(tx *clientstore.Tx) error {
		if err := tx.AddOutgoingContent(ctx, to, st.ID, describe(att), payload, c.opts.Now()); err != nil {
			return err
		}
		return tx.KV(ctx).Delete(nsUploads, fileKey)
	}); err != nil {
		return Sent{}, err
	}
	return c.flushOne(ctx, st.ID)
}

// upload sends the ciphertext from where the server's confirmed length
// ends, and completes it. It re-encrypts from the start (the ciphertext is
// a function of the key and the file) to compute the digest.
func (c *Client) upload(ctx context.Context, f *os.File, st *uploadState, blobSize int64, to, fileKey string, progress Progress) ([32]byte, error) {
	conn, err := c.connected(ctx)
	if err != nil {
		return [32]byte{}, err
	}
	defer conn.Close()
	var confirmed int64
	if st.BlobID != nil {
		us, err := conn.UploadState(ctx, st.BlobID)
		switch {
		case errors.Is(err, ErrNotFound):
			st.BlobID = nil // expired on the server: start over
		case err != nil:
			return [32]byte{}, err
		default:
			confirmed = int64(us.Confirmed)
		}
	}
	if st.BlobID == nil {
		us, err := conn.UploadStart(ctx, uint64(blobSize))
		if err != nil {
			return [32]byte{}, err
		}
		st.BlobID = us.BlobID
		raw, _ := json.Marshal(st)
		if err := c.st.KV(ctx).Put(nsUploads, fileKey, raw); err != nil {
			return [32]byte{}, err
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return [32]byte{}, err
	}
	enc := attach.NewEncryptReader(st.Key, f)
	h := sha256.New()
	buf := make([]byte, transferChunk)
	var off int64
	for {
		n, rerr := io.ReadFull(enc, buf)
		if n > 0 {
			h.Write(buf[:n])
			if end := off + int64(n); end > confirmed {
				part := buf[max(confirmed-off, 0):n]
				us, err := conn.UploadChunk(ctx, st.BlobID, uint64(confirmed), part)
				if err != nil {
					return [32]byte{}, err
				}
				confirmed = int64(us.Confirmed)
			}
			off += int64(n)
			if progress != nil {
				progress(min(confirmed, off), blobSize)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return [32]byte{}, rerr
		}
	}
	var digest [32]byte
	copy(digest[:], h.Sum(nil))
	fetches, err := c.deviceCount(ctx, conn, to)
	if err != nil {
		return [32]byte{}, err
	}
	if _, err := conn.UploadComplete(ctx, st.BlobID, digest, fetches); err != nil {
		return [32]byte{}, err
	}
	return digest, nil
}

// deviceCount is how many devices will fetch an attachment sent to user to:
// theirs with keys, and this account's other devices.
func (c *Client) deviceCount(ctx context.Context, conn *Conn, to string) (int, error) {
	me, _ := c.Account()
	n := 0
	for _, user := range []string{to, me.User} {
		u, err := conn.Lookup(ctx, user)
		if err != nil {
			return 0, err
		}
		for _, d := range u.Devices {
			if d.RegistrationID != 0 && !(user == me.User && d.Device == me.Device) {
				n++
			}
		}
		if to == me.User {
			break
		}
	}
	return max(n, 1), nil
}

// describe is what history shows for an attachment.
func describe(a *content.Attachment) string {
	s := fmt.Sprintf("[%s %s, %s]", a.GetKind(), a.GetFileName(), bytesize.Format(int64(a.GetSize())))
	if a.GetCaption() != "" {
		s += " " + a.GetCaption()
	}
	return s
}

// AttachmentInfo describes a received attachment.
type AttachmentInfo = content.Attachment

// ErrAttachmentDigest: the downloaded bytes are not what the sender
// uploaded (tampered with, or corrupted).
var ErrAttachmentDigest = errors.New("attachment does not match the sender's digest")

// Download fetches, verifies and decrypts an attachment into dir, resuming
// a partial download (kept beside it as .part) from where it stopped, and
// returns the path of the file. Nothing is written under its final name
// unless the whole ciphertext matches the sender's digest and every chunk
// authenticates.
func (c *Client) Download(ctx context.Context, a *AttachmentInfo, dir string, progress Progress) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	name := safeName(a.GetFileName(), a.GetBlobId())
	final := filepath.Join(dir, name)
	part := filepath.Join(dir, "."+name+"."+hex.EncodeToString(a.GetBlobId()[:6])+".part")
	for try := 0; ; try++ {
		err := c.fetch(ctx, a, part, progress)
		if err == nil {
			break
		}
		if try >= maxTransferTries || !retryable(err) {
			return "", fmt.Errorf("downloading %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(jitter(min(time.Duration(try+1)*500*time.Millisecond, 5*time.Second))):
		}
	}
	// Verify the whole, then decrypt (each chunk authenticates too).
	in, err := os.Open(part)
	if err != nil {
		return "", err
	}
	defer in.Close()
	h := sha256.New()
	if _, err := io.Copy(h, in); err != nil {
		return "", err
	}
	if [32]byte(h.Sum(nil)) != [32]byte(a.GetDigest()) {
		os.Remove(part)
		return "", ErrAttachmentDigest
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	dec := attach.NewDecryptWriter([32]byte(a.GetKey()), tmp)
	if _, err := io.Copy(dec, in); err != nil {
		tmp.Close()
		return "", err
	}
	if err := dec.Close(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	final = unusedName(final)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	os.Remove(part)
	return final, nil
}

// fetch appends the missing ciphertext to part, chunk by chunk.
func (c *Client) fetch(ctx context.Context, a *AttachmentInfo, part string, progress Progress) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := int64(a.GetBlobSize())
	// Resume on a chunk boundary (a chunk cut short is fetched again).
	off := fi.Size() / transferChunk * transferChunk
	if err := f.Truncate(off); err != nil {
		return err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	if off >= size {
		return nil
	}
	conn, err := c.connected(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for off < size {
		data, total, err := conn.Download(ctx, a.GetBlobId(), uint64(off), transferChunk)
		if err != nil {
			return err
		}
		if int64(total) != size || len(data) == 0 {
			return fmt.Errorf("%w: the server's blob is %d bytes, the message says %d", ErrAttachmentDigest, total, size)
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		off += int64(len(data))
		if progress != nil {
			progress(off, size)
		}
	}
	return f.Sync()
}

// safeName makes a received file name safe to create: no directories, no
// hidden or empty names.
func safeName(name string, blob []byte) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	name = strings.TrimLeft(name, ".")
	if name == "" || name == "/" {
		name = "attachment-" + hex.EncodeToString(blob[:6])
	}
	return name
}

// unusedName appends " (2)", " (3)"… before the extension while path exists.
func unusedName(path string) string {
	ext := filepath.Ext(path)
	base := strings.TrimSuffix(path, ext)
	for i := 2; ; i++ {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return path
		}
		path = fmt.Sprintf("%s (%d)%s", base, i, ext)
	}
}
