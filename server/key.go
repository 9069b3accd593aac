package server

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/magpie-im/magpie/internal/atomicfile"
	"github.com/magpie-im/magpie/link"
)

// LoadOrCreateKey reads the server's long-term Noise static private key from
// path, or creates one there (mode 0600, written atomically) if the file does
// not exist. Losing this key changes the server's identity: every invite
// stops working. Back it up.
func LoadOrCreateKey(path string) (link.KeyPair, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) != 32 {
			return link.KeyPair{}, fmt.Errorf("server key %s: %d bytes, want 32; restore it from backup or move it away to make a new identity", path, len(b))
		}
		kp, err := link.KeyPairFromPrivate([32]byte(b))
		if err != nil {
			return link.KeyPair{}, fmt.Errorf("server key %s: %w", path, err)
		}
		return kp, nil
	case !errors.Is(err, fs.ErrNotExist):
		return link.KeyPair{}, fmt.Errorf("reading server key: %w", err)
	}
	kp, err := link.GenerateKey(rand.Reader)
	if err != nil {
		return link.KeyPair{}, fmt.Errorf("generating server key: %w", err)
	}
	// First writer wins: two servers starting on one directory agree.
	got, created, err := atomicfile.Create(path, kp.Private[:], 0o600)
	if err != nil {
		return link.KeyPair{}, fmt.Errorf("saving server key: %w", err)
	}
	if !created {
		if len(got) != 32 {
			return link.KeyPair{}, fmt.Errorf("server key %s: %d bytes, want 32", path, len(got))
		}
		return link.KeyPairFromPrivate([32]byte(got))
	}
	return kp, nil
}
