package blobstore

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
)

// IDSize is the size of a blob id: 128 random bits, so that an id cannot be
// guessed and knowing it is what entitles a device to download the blob.
const IDSize = 16

// ID names a blob. It is printed (and named on disk) in unpadded base64url,
// 22 characters.
type ID [IDSize]byte

// errBadID is returned by ParseID.
var errBadID = errors.New("blobstore: malformed blob id")

func newID() ID {
	var id ID
	rand.Read(id[:]) // never fails (crypto/rand panics rather than return short)
	return id
}

// String returns the id in unpadded base64url. Log only Short.
func (id ID) String() string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// Short returns the first 6 characters of String (36 bits): enough to tell
// blobs apart in a log, far too little to fetch one. Logs name blobs only by
// Short.
func (id ID) Short() string { return id.String()[:6] }

// ParseID parses the unpadded base64url form that String returns.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != base64.RawURLEncoding.EncodedLen(IDSize) {
		return id, errBadID
	}
	n, err := base64.RawURLEncoding.Strict().Decode(id[:], []byte(s))
	if err != nil || n != IDSize {
		return ID{}, errBadID
	}
	return id, nil
}
