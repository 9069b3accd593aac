package obfs

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/magpie-im/magpie/internal/atomicfile"
)

// ServerKey is a server's long-term obfs identity: a random node ID and a
// static X25519 key pair. Clients learn NodeID and Public from the invite
// (see Cert); Private never leaves the server.
type ServerKey struct {
	NodeID          [20]byte
	Private, Public [32]byte
}

const (
	nodeIDLen = 20
	certLen   = nodeIDLen + 32
	keyHeader = "magpie obfs server key v1"
)

// GenerateServerKey makes a new random server key.
func GenerateServerKey() (ServerKey, error) {
	var k ServerKey
	if _, err := rand.Read(k.NodeID[:]); err != nil {
		return k, err
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return k, err
	}
	copy(k.Private[:], priv.Bytes())
	copy(k.Public[:], priv.PublicKey().Bytes())
	return k, nil
}

// keyFromPrivate rebuilds a key from its node ID and private half.
func keyFromPrivate(nodeID, private []byte) (ServerKey, error) {
	var k ServerKey
	priv, err := ecdh.X25519().NewPrivateKey(private)
	if err != nil {
		return k, err
	}
	copy(k.NodeID[:], nodeID)
	copy(k.Private[:], private)
	copy(k.Public[:], priv.PublicKey().Bytes())
	return k, nil
}

// Cert is the string an invite carries for this server: unpadded base64url
// of NodeID ‖ Public.
func (k ServerKey) Cert() string {
	var b [certLen]byte
	copy(b[:], k.NodeID[:])
	copy(b[nodeIDLen:], k.Public[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ParseCert decodes a cert string into the server's node ID and public key.
func ParseCert(cert string) (nodeID [20]byte, public [32]byte, err error) {
	b, err := base64.RawURLEncoding.DecodeString(cert)
	if err != nil || len(b) != certLen {
		return nodeID, public, errors.New("obfs: malformed cert (want unpadded base64url of 52 bytes)")
	}
	copy(nodeID[:], b)
	copy(public[:], b[nodeIDLen:])
	return nodeID, public, nil
}

// LoadOrCreateServerKey reads the key stored at path, or creates one there
// (mode 0600) if the file does not exist. Creation is atomic: the key is
// written to a temporary file, synced, and linked into place, so a crash or
// a concurrent caller never sees a partial file and two callers agree on
// one key.
func LoadOrCreateServerKey(path string) (ServerKey, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return parseKeyFile(path, data)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return ServerKey{}, err
	}
	k, err := GenerateServerKey()
	if err != nil {
		return ServerKey{}, err
	}
	raw := append(append([]byte{}, k.NodeID[:]...), k.Private[:]...)
	content := keyHeader + "\n" + base64.RawURLEncoding.EncodeToString(raw) + "\n"
	got, created, err := atomicfile.Create(path, []byte(content), 0o600)
	if err != nil {
		return ServerKey{}, err
	}
	if !created { // another caller made one first: use theirs
		return parseKeyFile(path, got)
	}
	return k, nil
}

func parseKeyFile(path string, data []byte) (ServerKey, error) {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || strings.TrimSpace(lines[0]) != keyHeader {
		return ServerKey{}, fmt.Errorf("obfs: %s is not an obfs server key file", path)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(lines[1]))
	if err != nil || len(raw) != nodeIDLen+32 {
		return ServerKey{}, fmt.Errorf("obfs: %s: malformed key", path)
	}
	k, err := keyFromPrivate(raw[:nodeIDLen], raw[nodeIDLen:])
	if err != nil {
		return ServerKey{}, fmt.Errorf("obfs: %s: %w", path, err)
	}
	if bytes.Equal(k.Private[:], make([]byte, 32)) {
		return ServerKey{}, fmt.Errorf("obfs: %s: zero key", path)
	}
	return k, nil
}
