package server

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/wire"
)

// upload handles one step of an attachment upload: start, chunk, status or
// complete. Chunks are confirmed only once durably stored, so a client
// resumes from the confirmed length after a dropped connection or a server
// restart.
func (c *conn) upload(id uint64, u *wire.UploadRequest) {
	b := c.s.cfg.Blobs
	if b == nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNAVAILABLE, "this server does not take attachments", 0)
		return
	}
	owner := c.dev.User
	reply := func(blob blobstore.ID, confirmed, size int64, complete bool) {
		c.respond(&wire.Response{Id: id, Body: &wire.Response_Upload{Upload: &wire.UploadResponse{
			BlobId: blob[:], Confirmed: uint64(confirmed), Size: uint64(size), Complete: complete,
		}}})
	}
	if u.GetStartSize() > 0 {
		blob, err := b.Create(owner, int64(u.GetStartSize()))
		if err != nil {
			c.blobErr(id, err)
			return
		}
		reply(blob, 0, int64(u.GetStartSize()), false)
		return
	}
	blob := blobstore.ID(u.GetBlobId())
	switch {
	case len(u.GetDigest()) > 0:
		if err := b.Complete(blob, owner, [32]byte(u.GetDigest())); err != nil {
			c.blobErr(id, err)
			return
		}
		if n := int(u.GetExpectedFetches()); n > 0 {
			if err := b.ExpectFetches(blob, owner, n); err != nil {
				c.blobErr(id, err)
				return
			}
		}
	case !u.GetStatus():
		if _, err := b.Append(blob, owner, int64(u.GetOffset()), u.GetData()); err != nil {
			c.blobErr(id, err)
			return
		}
	}
	confirmed, size, complete, err := b.Status(blob, owner)
	if err != nil {
		c.blobErr(id, err)
		return
	}
	reply(blob, confirmed, size, complete)
}

// download serves a range of a complete blob to whoever knows its id: the
// recipients of the end-to-end message that names it.
func (c *conn) download(id uint64, d *wire.DownloadRequest) {
	b := c.s.cfg.Blobs
	if b == nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNAVAILABLE, "this server does not take attachments", 0)
		return
	}
	blob := blobstore.ID(d.GetBlobId())
	r, size, err := b.Open(blob)
	if err != nil {
		c.blobErr(id, err)
		return
	}
	defer r.Close()
	off := int64(d.GetOffset())
	if off > size {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, fmt.Sprintf("offset %d beyond the blob's %d bytes", off, size), 0)
		return
	}
	buf := make([]byte, min(int64(d.GetLength()), size-off))
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		c.blobErr(id, err)
		return
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		c.blobErr(id, err)
		return
	}
	c.respond(&wire.Response{Id: id, Body: &wire.Response_Download{Download: &wire.DownloadResponse{Data: buf, Size: uint64(size)}}})
	if len(buf) > 0 && off+int64(len(buf)) == size {
		// This device read the last bytes, so it has it all: one of the
		// fetches the blob waits for. An empty read at the end is not
		// one (anyone who knows the id could make it, and delete the
		// blob before its recipient has it).
		if err := b.Fetched(blob, fmt.Sprintf("%s/%d", c.dev.User, c.dev.Device)); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
			c.s.log.Warn("recording an attachment fetch", "blob", blob.Short(), "err", err)
		}
	}
}

func (c *conn) blobErr(id uint64, err error) {
	switch {
	case errors.Is(err, blobstore.ErrTooLarge), errors.Is(err, blobstore.ErrOverflow), errors.Is(err, blobstore.ErrChunkTooLarge):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_TOO_LARGE, err.Error(), 0)
	case errors.Is(err, blobstore.ErrTooManyUploads):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_QUOTA, "too many unfinished uploads; finish or wait for them to expire", 60_000)
	case errors.Is(err, blobstore.ErrBadSize), errors.Is(err, blobstore.ErrIncomplete), errors.Is(err, blobstore.ErrComplete), errors.Is(err, blobstore.ErrFetches):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, err.Error(), 0)
	case errors.Is(err, blobstore.ErrQuota):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_QUOTA, "your attachment storage is full; wait until recipients have fetched earlier ones", 60_000)
	case errors.Is(err, blobstore.ErrOffset):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_OFFSET, err.Error(), 0)
	case errors.Is(err, blobstore.ErrDigest):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_DIGEST, "the uploaded bytes do not match the digest; upload again", 0)
	case errors.Is(err, blobstore.ErrNotFound):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_NOT_FOUND, "no such attachment (it may have expired)", 0)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, blobstore.ErrNoSpace):
		c.storageFull(id)
	default:
		c.s.log.Error("attachment store", "err", err)
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
	}
}
