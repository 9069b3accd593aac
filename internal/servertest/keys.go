package servertest

import (
	"crypto/rand"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/kem"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/wire"
)

// NewIdentity returns a fresh identity key pair.
func NewIdentity(t testing.TB) curve.KeyPair {
	t.Helper()
	kp, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// Sign makes an XEdDSA signature by id over msg.
func Sign(t testing.TB, id curve.KeyPair, msg []byte) []byte {
	t.Helper()
	var r [64]byte
	rand.Read(r[:])
	sig := xeddsa.Sign(id.Private, msg, r)
	return sig[:]
}

// KeysUpload builds a complete, correctly signed key upload: signed prekey
// id 1, last-resort Kyber prekey id 2, and n one-time prekeys of each kind
// with ids first, first+1, …
func KeysUpload(t testing.TB, id curve.KeyPair, regID uint32, first uint32, n int) *wire.SetKeysRequest {
	t.Helper()
	ec := func() []byte {
		kp, err := curve.GenerateKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return kp.Public.Serialize()
	}
	kyber := func() []byte {
		k, err := kem.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.PublicKey().Serialize()
	}
	signed := func(keyID uint32, pub []byte) *wire.SignedPreKey {
		return &wire.SignedPreKey{Id: keyID, PublicKey: pub, Signature: Sign(t, id, pub)}
	}
	req := &wire.SetKeysRequest{
		IdentityKey:           id.Public.Serialize(),
		RegistrationId:        regID,
		SignedPreKey:          signed(1, ec()),
		LastResortKyberPreKey: signed(2, kyber()),
	}
	for i := range n {
		req.PreKeys = append(req.PreKeys, &wire.PreKey{Id: first + uint32(i), PublicKey: ec()})
		req.KyberPreKeys = append(req.KyberPreKeys, signed(first+uint32(i), kyber()))
	}
	return req
}
