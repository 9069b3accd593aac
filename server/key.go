package server

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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
	if err := writeFileAtomic(path, kp.Private[:], 0o600); err != nil {
		return link.KeyPair{}, fmt.Errorf("saving server key: %w", err)
	}
	return kp, nil
}

// writeFileAtomic writes data to a temporary file in path's directory, syncs
// it, and renames it into place, so that a crash leaves either no file or the
// whole file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
