package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/magpie-im/magpie/attach"
	"github.com/magpie-im/magpie/attach/media"
	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/internal/clientconn"
)

// Attachments move end-to-end ciphertext (package attach) over the
// engine's own connection, in chunks the server confirms once durable, so
// they travel whatever transport the text does and resume after a dropped
// connection, a restart or a crash.
//
// Sending: SendFile encrypts the file into a sealed copy in Home/files
// (which is also what this client shows of it), then a transfer job
// uploads it; the message that carries the key goes into the outbox once
// the server has the whole blob.
//
// Receiving: the message and a download job are stored together, before
// the envelope is acknowledged; the job fetches the ciphertext into a .part
// file beside its destination, checks the sender's digest, decrypts it and
// renames it into place.

// filesDir holds sealed copies of sent attachments.
const filesDir = "files"

// transferChunk is the unit of uploads and downloads: one encrypted chunk,
// so a resumed download restarts on a chunk boundary.
const transferChunk = attach.EncryptedChunkSize

// transferJob is an upload or download still to finish (sealed in
// nsTransfer, keyed by its message's Seq).
type transferJob struct {
	Upload bool   `json:"upload,omitempty"`
	Seq    uint64 `json:"seq"`
	// Upload: the sealed copy, its key and digest, and the server's blob
	// once started.
	Staged   string `json:"staged,omitempty"`
	Key      []byte `json:"key,omitempty"`
	Digest   []byte `json:"digest,omitempty"`
	BlobID   []byte `json:"blob,omitempty"`
	BlobSize int64  `json:"blob_size,omitempty"`
	// Download: the attachment (from the message's content), and the file
	// it was renamed to, recorded just before the rename.
	Final     string `json:"final,omitempty"`
	Tries     int    `json:"tries,omitempty"`
	NotBefore int64  `json:"not_before,omitempty"`
}

// FileOptions describe a file sent with SendFile.
type FileOptions struct {
	Caption string
}

// SendFile sends the bytes of r, a file called name, to user to as an
// attachment: a photo, video, voice note or any file. It reads r to the
// end, encrypting it under a fresh key into a sealed copy in the home, and
// returns the message (State uploading) once that copy and the message are
// stored: from then on the engine uploads it, resuming across restarts,
// then sends the message with its key, digest and description (kind,
// thumbnail, duration) through the outbox.
func (c *Client) SendFile(ctx context.Context, to string, r io.Reader, name string, opts FileOptions) (*Message, error) {
	to, err := c.checkRecipient(ctx, to)
	if err != nil {
		return nil, err
	}
	name = safeName(name, nil)
	if len(opts.Caption) > content.MaxText {
		return nil, ErrTextTooLong
	}
	key, err := attach.NewKey()
	if err != nil {
		return nil, err
	}
	staged, blobSize, digest, err := c.stage(ctx, key, r)
	if err != nil {
		return nil, err
	}
	info, err := c.inspect(key, staged, blobSize, name)
	if err != nil {
		c.removeStaged(staged)
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	id := NewMessageID()
	att := &content.Attachment{
		Key: key[:], Digest: digest[:], Size: uint64(attach.PlainSize(blobSize)), BlobSize: uint64(blobSize),
		Mime: info.MIME, Kind: info.Kind, FileName: name, Width: uint32(info.Width), Height: uint32(info.Height),
		DurationMs: uint64(info.Duration.Milliseconds()), Thumbnail: info.Thumbnail, Caption: opts.Caption,
	}
	now := c.opts.Now()
	payload, err := content.EncodeAttachment(att, now)
	if err != nil {
		c.removeStaged(staged)
		return nil, err
	}
	var m *Message
	err = c.update(ctx, func(t sealedTx) error {
		rec := &msgRecord{ID: id[:], Peer: to, Outgoing: true, Text: opts.Caption, Content: payload, State: StateUploading,
			Composed: unixMs(now), Stored: unixMs(now), Transfer: &xferState{State: TransferStaged, Total: blobSize, Staged: staged}}
		if err := addMessage(t, rec); err != nil {
			return err
		}
		job := transferJob{Upload: true, Seq: rec.Seq, Staged: staged, Key: key[:], Digest: digest[:], BlobSize: blobSize}
		if err := putJSON(t, nsTransfer, seqKey(rec.Seq), job); err != nil {
			return err
		}
		m, err = c.publicMessage(t, rec)
		return err
	})
	if err != nil {
		c.removeStaged(staged)
		return nil, err
	}
	c.publish(Event{Kind: EventMessage, Message: m})
	c.kick(workerUpload)
	return m, nil
}

// stage encrypts r into a new sealed copy in Home/files and returns its
// name, size and digest. Nothing is left behind if it fails.
func (c *Client) stage(ctx context.Context, key [32]byte, r io.Reader) (name string, size int64, digest [32]byte, err error) {
	dir := filepath.Join(c.opts.Home, filesDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, digest, storeFileErr(err)
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	name = hex.EncodeToString(rnd[:]) + ".sealed"
	f, err := os.CreateTemp(dir, ".staging-*")
	if err != nil {
		return "", 0, digest, storeFileErr(err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), attach.NewEncryptReader(key, ctxReader{ctx, r}))
	if err != nil {
		return "", 0, digest, storeFileErr(err)
	}
	if err = f.Sync(); err != nil {
		return "", 0, digest, storeFileErr(err)
	}
	if err = f.Close(); err != nil {
		return "", 0, digest, storeFileErr(err)
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return "", 0, digest, storeFileErr(err)
	}
	copy(digest[:], h.Sum(nil))
	return name, size, digest, nil
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func storeFileErr(err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: %w", ErrStorageFull, err)
	}
	return err
}

// inspect reads what kind of file a sealed copy holds, decrypting only
// what it looks at.
func (c *Client) inspect(key [32]byte, staged string, blobSize int64, name string) (media.Info, error) {
	f, err := os.Open(filepath.Join(c.opts.Home, filesDir, staged))
	if err != nil {
		return media.Info{}, err
	}
	defer f.Close()
	pr, err := attach.NewReader(key, f, blobSize)
	if err != nil {
		return media.Info{}, err
	}
	return media.Inspect(name, pr, pr.Size())
}

func (c *Client) removeStaged(name string) {
	if name != "" && !strings.ContainsAny(name, `/\`) {
		os.Remove(filepath.Join(c.opts.Home, filesDir, name))
	}
}

// jobs lists the transfer jobs of one direction.
func (c *Client) jobs(ctx context.Context, upload bool) ([]transferJob, error) {
	var out []transferJob
	err := c.view(ctx, func(t sealedTx) error {
		return t.Scan(nsTransfer, "", "", false, func(_ string, v []byte) (bool, error) {
			var j transferJob
			if err := jsonRecord(v, &j); err != nil {
				return false, err
			}
			if j.Upload == upload {
				out = append(out, j)
			}
			return true, nil
		})
	})
	return out, err
}

// transferLoop runs a transfer worker: each due job in turn, then sleep
// until kicked or until the earliest deferred job is due.
func (c *Client) transferLoop(ctx context.Context, conn *clientconn.Conn, worker int, upload bool, do func(context.Context, *clientconn.Conn, *transferJob) error) error {
	var retry time.Duration
	for c.sleep(ctx, worker, retry) {
		jobs, err := c.jobs(ctx, upload)
		if err != nil {
			return err
		}
		retry = 0
		for i := range jobs {
			j := &jobs[i]
			if wait := time.UnixMilli(j.NotBefore).Sub(c.opts.Now()); j.NotBefore != 0 && wait > 0 {
				if retry == 0 || wait < retry {
					retry = wait
				}
				continue
			}
			err := do(ctx, conn, j)
			var se *clientconn.ServerError
			switch {
			case err == nil, errors.Is(err, errSkipped):
			case errors.Is(err, ErrStorageFull) && !upload:
				// The download's disk is full: the message itself is safe.
				// Try again in a while, or at once in the next engine
				// (nothing is recorded against the job: space may be
				// back by then).
				c.setTransfer(ctx, j.Seq, TransferWaiting, 0, 0, "waiting for disk space: "+err.Error())
				retry = 30 * time.Second
			case errors.As(err, &se) && se.Temporary():
				if err := c.deferJob(ctx, j, err); err != nil {
					return err
				}
				retry = min(time.Second<<min(j.Tries, 8), 5*time.Minute)
			case errors.As(err, &se), errors.Is(err, attach.ErrTampered), errors.Is(err, ErrAttachmentDigest):
				if err := c.failJob(ctx, j, err); err != nil {
					return err
				}
			default:
				return err // the connection or the state: the session ends
			}
		}
	}
	return nil
}

func (c *Client) uploader(ctx context.Context, conn *clientconn.Conn) error {
	return c.transferLoop(ctx, conn, workerUpload, true, c.upload)
}

func (c *Client) downloader(ctx context.Context, conn *clientconn.Conn) error {
	return c.transferLoop(ctx, conn, workerDownload, false, c.download)
}

// cancelled reports whether Cancel is removing message seq.
func (c *Client) cancelled(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.cancelling[seq]
}

// saveJob writes j back unless its message was cancelled meanwhile.
func (c *Client) saveJob(ctx context.Context, j *transferJob) error {
	return c.update(ctx, func(t sealedTx) error {
		if v, err := t.Get(nsTransfer, seqKey(j.Seq)); err != nil || v == nil {
			return errors.Join(err, errSkipped)
		}
		return putJSON(t, nsTransfer, seqKey(j.Seq), j)
	})
}

// progressEvery is the most often a transfer publishes its progress.
const progressEvery = 200 * time.Millisecond

// upload sends a staged attachment from where the server's confirmed length
// ends, completes it, and queues its message.
func (c *Client) upload(ctx context.Context, conn *clientconn.Conn, j *transferJob) error {
	var confirmed int64
	if j.BlobID != nil {
		us, err := conn.UploadState(ctx, j.BlobID)
		switch {
		case errors.Is(err, clientconn.ErrNotFound):
			j.BlobID = nil // expired on the server: start over
		case err != nil:
			return err
		default:
			confirmed = int64(us.Confirmed)
		}
	}
	if j.BlobID == nil {
		us, err := conn.UploadStart(ctx, uint64(j.BlobSize))
		if err != nil {
			return err
		}
		j.BlobID = us.BlobID
		if err := c.saveJob(ctx, j); err != nil {
			return err
		}
	}
	f, err := os.Open(filepath.Join(c.opts.Home, filesDir, j.Staged))
	if err != nil {
		return fmt.Errorf("%w: the sealed copy of the attachment: %w", ErrAttachmentDigest, err)
	}
	defer f.Close()
	c.setTransfer(ctx, j.Seq, TransferUploading, confirmed, j.BlobSize, "")
	buf := make([]byte, transferChunk)
	var last time.Time
	for confirmed < j.BlobSize {
		if c.cancelled(j.Seq) {
			return errSkipped
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), j.BlobSize-confirmed)], confirmed)
		if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return fmt.Errorf("%w: reading the sealed copy: %w", ErrAttachmentDigest, err)
		}
		us, err := conn.UploadChunk(ctx, j.BlobID, uint64(confirmed), buf[:n])
		if err != nil {
			return err
		}
		confirmed = int64(us.Confirmed)
		if time.Since(last) >= progressEvery || confirmed == j.BlobSize {
			last = time.Now()
			c.publish(Event{Kind: EventProgress, Progress: Progress{Seq: j.Seq, Upload: true, Done: confirmed, Total: j.BlobSize}})
		}
	}
	var att *content.Attachment
	var peer string
	err = c.view(ctx, func(t sealedTx) error {
		r, err := getMessage(t, j.Seq)
		if err != nil {
			return errors.Join(err, errSkipped)
		}
		att, peer = r.attachment(), r.Peer
		return nil
	})
	if err != nil {
		return err
	}
	fetches, err := c.deviceCount(ctx, conn, peer)
	if err != nil {
		return err
	}
	if _, err := conn.UploadComplete(ctx, j.BlobID, [32]byte(j.Digest), fetches); err != nil {
		return err
	}
	att.BlobId = j.BlobID
	var ev *Event
	err = c.update(ctx, func(t sealedTx) error {
		if v, err := t.Get(nsTransfer, seqKey(j.Seq)); err != nil || v == nil {
			return errors.Join(err, errSkipped)
		}
		r, err := getMessage(t, j.Seq)
		if err != nil {
			return err
		}
		if r.Content, err = content.EncodeAttachment(att, msTime(r.Composed)); err != nil {
			return err
		}
		r.State = StateQueued
		r.Transfer.State, r.Transfer.Done = TransferUploaded, j.BlobSize
		if err := putMessage(t, r); err != nil {
			return err
		}
		if err := t.Delete(nsTransfer, seqKey(j.Seq)); err != nil {
			return err
		}
		if err := queue(t, &outboxItem{Msg: r.Seq, Peer: r.Peer, ID: r.ID}); err != nil {
			return err
		}
		m, err := c.publicMessage(t, r)
		ev = &Event{Kind: EventUpdate, Message: m}
		return err
	})
	if err != nil {
		return err
	}
	c.publish(*ev)
	c.kick(workerOutbox)
	return nil
}

// deviceCount is how many devices will fetch an attachment sent to user to:
// theirs with keys, and this account's other devices. For a group it is 0:
// the server keeps the attachment until it expires, since counting every
// member's devices would cost a lookup per member, and a member who joins
// later may fetch it too.
func (c *Client) deviceCount(ctx context.Context, conn *clientconn.Conn, to string) (int, error) {
	if _, ok := groupOf(to); ok {
		return 0, nil
	}
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

// addWithDownload stores a message that carries an attachment together
// with the job that will fetch it, inside the transaction that stores the
// message: the envelope is acknowledged only once both are durable.
func (c *Client) addWithDownload(t sealedTx, r *msgRecord, a *content.Attachment, evs *[]Event) error {
	var err error
	if r.Content, err = content.EncodeAttachment(a, msTime(r.Composed)); err != nil {
		return err
	}
	if r.Text == "" {
		r.Text = a.GetCaption()
	}
	r.Transfer = &xferState{State: TransferWaiting, Total: int64(a.GetBlobSize())}
	if err := c.addAndNote(t, r, evs); err != nil {
		return err
	}
	// The caller wakes the downloader once this commits (kickFor).
	return putJSON(t, nsTransfer, seqKey(r.Seq), transferJob{Seq: r.Seq})
}

// ErrAttachmentDigest: the downloaded bytes are not what the sender
// uploaded (tampered with, or corrupted).
var ErrAttachmentDigest = errors.New("the attachment does not match the sender's digest")

// download fetches, verifies and decrypts an attachment into the download
// directory, resuming a .part file from where it stopped.
func (c *Client) download(ctx context.Context, conn *clientconn.Conn, j *transferJob) error {
	var a *content.Attachment
	err := c.view(ctx, func(t sealedTx) error {
		r, err := getMessage(t, j.Seq)
		if err != nil {
			return err
		}
		a = r.attachment()
		return nil
	})
	if errors.Is(err, ErrNoMessage) || (err == nil && a == nil) {
		return c.update(ctx, func(t sealedTx) error { return t.Delete(nsTransfer, seqKey(j.Seq)) })
	}
	if err != nil {
		return err
	}
	dir := c.opts.DownloadDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return storeFileErr(err)
	}
	name := safeName(a.GetFileName(), a.GetBlobId())
	part := filepath.Join(dir, "."+name+"."+hex.EncodeToString(a.GetBlobId()[:6])+".part")
	if j.Final != "" {
		// A crash between the rename and the record: the file is there.
		if _, err := os.Stat(part); errors.Is(err, os.ErrNotExist) {
			if fi, err := os.Stat(j.Final); err == nil && fi.Size() == int64(a.GetSize()) {
				return c.finishDownload(ctx, j, j.Final)
			}
		}
	}
	c.setTransfer(ctx, j.Seq, TransferDownloading, 0, int64(a.GetBlobSize()), "")
	if err := c.fetch(ctx, conn, j.Seq, a, part); err != nil {
		return err
	}
	tmp, err := c.decryptPart(a, part, dir, name)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	j.Final = unusedName(filepath.Join(dir, name))
	if err := c.saveJob(ctx, j); err != nil {
		return err
	}
	if err := os.Rename(tmp, j.Final); err != nil {
		return storeFileErr(err)
	}
	syncDir(dir)
	os.Remove(part)
	return c.finishDownload(ctx, j, j.Final)
}

// fetch appends the missing ciphertext to part, chunk by chunk.
func (c *Client) fetch(ctx context.Context, conn *clientconn.Conn, seq uint64, a *content.Attachment, part string) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return storeFileErr(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := int64(a.GetBlobSize())
	// Resume on a chunk boundary (a chunk cut short is fetched again).
	off := min(fi.Size()/transferChunk*transferChunk, size)
	if err := f.Truncate(off); err != nil {
		return storeFileErr(err)
	}
	var last time.Time
	for off < size {
		data, total, err := conn.Download(ctx, a.GetBlobId(), uint64(off), transferChunk)
		if err != nil {
			return err
		}
		if int64(total) != size || len(data) == 0 {
			return fmt.Errorf("%w: the server's blob is %d bytes, the message says %d", ErrAttachmentDigest, total, size)
		}
		if _, err := f.WriteAt(data, off); err != nil {
			return storeFileErr(err)
		}
		off += int64(len(data))
		if time.Since(last) >= progressEvery || off == size {
			last = time.Now()
			c.publish(Event{Kind: EventProgress, Progress: Progress{Seq: seq, Done: off, Total: size}})
		}
	}
	return storeFileErr(f.Sync())
}

// decryptPart checks a complete .part file against the sender's digest and
// decrypts it into a temporary file in dir, which it returns.
func (c *Client) decryptPart(a *content.Attachment, part, dir, name string) (string, error) {
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
		return "", storeFileErr(err)
	}
	fail := func(err error) (string, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", storeFileErr(err)
	}
	dec := attach.NewDecryptWriter([32]byte(a.GetKey()), tmp)
	if _, err := io.Copy(dec, in); err != nil {
		return fail(err)
	}
	if err := dec.Close(); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	return tmp.Name(), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// finishDownload records a saved attachment and drops its job.
func (c *Client) finishDownload(ctx context.Context, j *transferJob, path string) error {
	return c.changeMessage(ctx, j.Seq, func(t sealedTx, r *msgRecord) error {
		if r.Transfer == nil {
			r.Transfer = &xferState{}
		}
		r.Transfer.State, r.Transfer.Path, r.Transfer.Err = TransferSaved, path, ""
		r.Transfer.Done = r.Transfer.Total
		return t.Delete(nsTransfer, seqKey(j.Seq))
	})
}

// setTransfer records where a transfer stands, and (total > 0) how far
// (best effort: it is shown, not relied on).
func (c *Client) setTransfer(ctx context.Context, seq uint64, state TransferState, done, total int64, why string) {
	err := c.changeMessage(ctx, seq, func(_ sealedTx, r *msgRecord) error {
		if r.Transfer == nil {
			r.Transfer = &xferState{}
		}
		r.Transfer.State, r.Transfer.Err = state, why
		if total > 0 {
			r.Transfer.Done, r.Transfer.Total = done, total
		}
		return nil
	})
	if err != nil {
		c.opts.Logger.Debug("recording a transfer's state", "err", err)
	}
}

// deferJob records a temporary failure: the job waits before its next try.
func (c *Client) deferJob(ctx context.Context, j *transferJob, why error) error {
	j.Tries++
	j.NotBefore = unixMs(c.opts.Now().Add(min(time.Second<<min(j.Tries, 8), 5*time.Minute)))
	if err := c.saveJob(ctx, j); err != nil && !errors.Is(err, errSkipped) {
		return err
	}
	state := TransferWaiting
	if j.Upload {
		state = TransferStaged
	}
	c.setTransfer(ctx, j.Seq, state, 0, 0, "will try again: "+why.Error())
	return nil
}

// failJob records a transfer that cannot succeed; a failed upload fails its
// message too.
func (c *Client) failJob(ctx context.Context, j *transferJob, why error) error {
	c.opts.Logger.Info("an attachment transfer failed", "seq", j.Seq, "upload", j.Upload, "err", why)
	return c.changeMessage(ctx, j.Seq, func(t sealedTx, r *msgRecord) error {
		if r.Transfer == nil {
			r.Transfer = &xferState{}
		}
		r.Transfer.State, r.Transfer.Err = TransferFailed, why.Error()
		if j.Upload {
			r.State, r.Err, r.ErrCode = StateFailed, why.Error(), failureCode(why)
		}
		return t.Delete(nsTransfer, seqKey(j.Seq))
	})
}

// changeMessage changes message seq with fn in one transaction and
// publishes the change. fn returns errUnchanged to change nothing.
func (c *Client) changeMessage(ctx context.Context, seq uint64, fn func(t sealedTx, r *msgRecord) error) error {
	var m *Message
	err := c.update(ctx, func(t sealedTx) error {
		r, err := getMessage(t, seq)
		if err != nil {
			return err
		}
		if err := fn(t, r); err != nil {
			return err
		}
		if err := putMessage(t, r); err != nil {
			return err
		}
		m, err = c.publicMessage(t, r)
		return err
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	if err == nil {
		c.publish(Event{Kind: EventUpdate, Message: m})
	}
	return err
}

// errUnchanged: a change found nothing to change.
var errUnchanged = errors.New("unchanged")

// AttachmentFile is an attachment's bytes, for showing or saving.
type AttachmentFile struct {
	io.ReadSeekCloser
	Name    string
	MIME    string
	Size    int64
	ModTime time.Time
}

// ErrNotSaved: the attachment is not here (yet, or any more).
var ErrNotSaved = errors.New("the attachment is not saved here")

// OpenAttachment opens the attachment of message seq: the saved file of a
// received one, or the sealed copy of a sent one (decrypted as it is read).
func (c *Client) OpenAttachment(ctx context.Context, seq uint64) (*AttachmentFile, error) {
	var r *msgRecord
	err := c.view(ctx, func(t sealedTx) error {
		var err error
		r, err = getMessage(t, seq)
		return err
	})
	if err != nil {
		return nil, err
	}
	a := r.attachment()
	if a == nil || r.Transfer == nil {
		return nil, ErrNotSaved
	}
	out := &AttachmentFile{Name: a.GetFileName(), MIME: a.GetMime(), ModTime: msTime(r.Composed)}
	switch {
	case r.Transfer.Staged != "":
		f, err := os.Open(filepath.Join(c.opts.Home, filesDir, r.Transfer.Staged))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotSaved, err)
		}
		pr, err := attach.NewReader([32]byte(a.GetKey()), f, int64(a.GetBlobSize()))
		if err != nil {
			f.Close()
			return nil, err
		}
		out.ReadSeekCloser = sectionCloser{io.NewSectionReader(pr, 0, pr.Size()), f}
		out.Size = pr.Size()
	case r.Transfer.State == TransferSaved:
		f, err := os.Open(r.Transfer.Path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s was moved or deleted", ErrNotSaved, r.Transfer.Path)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		out.ReadSeekCloser, out.Size = f, fi.Size()
	default:
		return nil, ErrNotSaved
	}
	return out, nil
}

type sectionCloser struct {
	*io.SectionReader
	io.Closer
}

// Thumbnail returns the small JPEG a message's attachment carries, if any.
func (c *Client) Thumbnail(ctx context.Context, seq uint64) ([]byte, error) {
	var thumb []byte
	err := c.view(ctx, func(t sealedTx) error {
		r, err := getMessage(t, seq)
		if err == nil {
			thumb = r.attachment().GetThumbnail()
		}
		return err
	})
	if err == nil && len(thumb) == 0 {
		err = ErrNotSaved
	}
	return thumb, err
}

// safeName makes a received file name safe to create: no directories, no
// hidden or empty names.
func safeName(name string, blob []byte) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	name = strings.TrimLeft(name, ".")
	if name == "" || name == "/" {
		if len(blob) >= 6 {
			return "attachment-" + hex.EncodeToString(blob[:6])
		}
		return "attachment"
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
