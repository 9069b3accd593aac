package client

import (
	"io"
	"os"

	"github.com/magpie-im/magpie/internal/vault"
)

// Unlocker supplies the key that encrypts a client's local state: Create
// makes a new one the first time (returning a header to keep beside the
// data), Unlock opens it later.
type Unlocker interface {
	Create() (Sealer, []byte, error)
	Unlock(header []byte) (Sealer, error)
}

// EnvUnlocker takes the key from $MAGPIE_KEY (32 bytes, base64 or hex) or a
// passphrase from $MAGPIE_PASSPHRASE (stretched with Argon2id), or asks for a
// passphrase on the terminal (stdin), in that order.
func EnvUnlocker(stdin *os.File, stderr io.Writer) Unlocker { return envUnlocker{stdin, stderr} }

type envUnlocker struct {
	stdin  *os.File
	stderr io.Writer
}

func (e envUnlocker) Create() (Sealer, []byte, error) {
	v, h, err := vault.ResolveNew(e.stdin, e.stderr, vault.DefaultParams)
	if err != nil {
		return nil, nil, err
	}
	hb, err := h.MarshalBinary()
	return v, hb, err
}

func (e envUnlocker) Unlock(header []byte) (Sealer, error) {
	var h vault.Header
	if err := h.UnmarshalBinary(header); err != nil {
		return nil, err
	}
	return vault.ResolveExisting(e.stdin, e.stderr, h)
}
