package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/magpie-im/magpie/attach"
	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/atomicfile"
	"github.com/magpie-im/magpie/internal/clientconn"
)

// A group's picture is an attachment like any other: encrypted under a
// fresh key and uploaded once, and the group's log carries its pointer
// (blob id, key, digest, size, type) in set_info, signed like every
// change. Members fetch it when they show it and keep it under
// Home/files; the server keeps the blob until it expires (30 days by
// default), so a member who joins later than that sees no picture until
// an admin sets one again.

// MaxAvatarBody bounds a request that carries a group's picture: a little
// more than the largest picture, so that one too large is refused as such.
const MaxAvatarBody = content.MaxAvatar + 1

// ErrNoAvatar: the group has no picture, or its blob is gone from the
// server and this device never fetched it.
var ErrNoAvatar = errors.New("this group has no picture")

// avatarTypes are the images a group's picture may be, as
// http.DetectContentType names them (what every browser shows).
var avatarTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true}

// GroupSetAvatar sets a group's picture (PNG, JPEG, GIF or WebP, at most
// content.MaxAvatar bytes), or with a nil r removes it. It needs the
// server now: the picture is uploaded before the change is made.
func (c *Client) GroupSetAvatar(ctx context.Context, id GroupID, r io.Reader) error {
	var ptr []byte
	if r != nil {
		img, err := io.ReadAll(io.LimitReader(r, content.MaxAvatar+1))
		if err != nil {
			return err
		}
		if len(img) > content.MaxAvatar {
			return fmt.Errorf("%w: a group's picture is at most %d KiB", ErrTooLarge, content.MaxAvatar>>10)
		}
		mime := http.DetectContentType(img)
		if !avatarTypes[mime] {
			return fmt.Errorf("%w: a group's picture is a PNG, JPEG, GIF or WebP image, not %s", group.ErrMalformed, mime)
		}
		if ptr, err = c.uploadAvatar(ctx, img, mime); err != nil {
			return err
		}
	}
	return c.changeGroup(ctx, id, c.propose(func(st *group.State, _ string, _ curve.KeyPair) (group.Action, error) {
		return group.SetInfo{Name: st.Name, Description: st.Description, Avatar: ptr}, nil
	}))
}

// uploadAvatar encrypts and uploads a picture, caches it, and returns its
// pointer.
func (c *Client) uploadAvatar(ctx context.Context, img []byte, mime string) ([]byte, error) {
	key, err := attach.NewKey()
	if err != nil {
		return nil, err
	}
	blob, err := io.ReadAll(attach.NewEncryptReader(key, bytes.NewReader(img)))
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(blob)
	a := &content.Attachment{Key: key[:], Digest: digest[:], Size: uint64(len(img)), BlobSize: uint64(len(blob)), Mime: mime}
	err = c.withConn(ctx, func(conn *clientconn.Conn) error {
		us, err := conn.UploadStart(ctx, uint64(len(blob)))
		if err != nil {
			return err
		}
		a.BlobId = us.BlobID
		for off := 0; off < len(blob); off += transferChunk {
			if _, err := conn.UploadChunk(ctx, us.BlobID, uint64(off), blob[off:min(off+transferChunk, len(blob))]); err != nil {
				return err
			}
		}
		// No count of fetches: kept until it expires (members fetch it
		// when they show it, and may join later).
		_, err = conn.UploadComplete(ctx, us.BlobID, digest, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("uploading the group's picture: %w", err)
	}
	ptr, err := content.EncodeAvatar(a)
	if err != nil {
		return nil, err
	}
	c.cacheAvatar(digest, img)
	return ptr, nil
}

// avatarPath is where this device keeps a fetched picture, by the digest
// of its ciphertext.
func (c *Client) avatarPath(digest [32]byte) string {
	return filepath.Join(c.opts.Home, filesDir, "avatar-"+hex.EncodeToString(digest[:16]))
}

// cacheAvatar keeps a picture (best effort: it can be fetched again).
func (c *Client) cacheAvatar(digest [32]byte, img []byte) {
	if os.MkdirAll(filepath.Join(c.opts.Home, filesDir), 0o700) == nil {
		atomicfile.Write(c.avatarPath(digest), img, 0o600)
	}
}

// GroupAvatar returns a group's picture and its MIME type: from this
// device's copy, or fetched from the server (needs the server then), its
// digest checked before it is decrypted.
func (c *Client) GroupAvatar(ctx context.Context, id GroupID) ([]byte, string, error) {
	var ptr []byte
	err := c.view(ctx, func(t sealedTx) error {
		rec, st, err := c.loadGroup(t, id)
		switch {
		case err != nil:
			return err
		case rec == nil:
			return fmt.Errorf("%w: %s", ErrUnknownGroup, id)
		}
		ptr = st.Avatar
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if ptr == nil {
		return nil, "", ErrNoAvatar
	}
	a, err := content.DecodeAvatar(ptr)
	if err != nil {
		return nil, "", fmt.Errorf("%w: the group's picture: %w", ErrNoAvatar, err)
	}
	digest := [32]byte(a.GetDigest())
	if img, err := os.ReadFile(c.avatarPath(digest)); err == nil && len(img) == int(a.GetSize()) {
		return img, a.GetMime(), nil
	}
	var blob []byte
	err = c.withConn(ctx, func(conn *clientconn.Conn) error {
		blob = blob[:0]
		for uint64(len(blob)) < a.GetBlobSize() {
			data, total, err := conn.Download(ctx, a.GetBlobId(), uint64(len(blob)), transferChunk)
			if err != nil {
				return err
			}
			if total != a.GetBlobSize() || len(data) == 0 {
				return fmt.Errorf("%w: the server's blob is %d bytes, the group's log says %d", ErrAttachmentDigest, total, a.GetBlobSize())
			}
			blob = append(blob, data...)
		}
		return nil
	})
	if errors.Is(err, clientconn.ErrNotFound) {
		return nil, "", fmt.Errorf("%w: it expired on the server before this device fetched it (an admin can set it again)", ErrNoAvatar)
	}
	if err != nil {
		return nil, "", err
	}
	if sha256.Sum256(blob) != digest {
		return nil, "", ErrAttachmentDigest
	}
	var img bytes.Buffer
	dec := attach.NewDecryptWriter([32]byte(a.GetKey()), &img)
	if _, err := dec.Write(blob); err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrAttachmentDigest, err)
	}
	if err := dec.Close(); err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrAttachmentDigest, err)
	}
	if img.Len() != int(a.GetSize()) {
		return nil, "", ErrAttachmentDigest
	}
	c.cacheAvatar(digest, img.Bytes())
	return img.Bytes(), a.GetMime(), nil
}
