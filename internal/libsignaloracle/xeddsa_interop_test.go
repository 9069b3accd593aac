package libsignaloracle

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
)

// TestXEdDSAInterop checks XEdDSA both ways between Magpie (e2e/xeddsa) and
// libsignal, with identities from each side, and that neither side accepts
// an altered signature or message from the other.
func TestXEdDSAInterop(t *testing.T) {
	o := Start(t)
	msgs := [][]byte{{}, []byte("x"), bytes.Repeat([]byte{0xA5}, 1569)} // the last one is Kyber-prekey sized

	// Keys from both sides: libsignal's, and Magpie's.
	type key struct {
		name string
		priv curve.PrivateKey
		pub  curve.PublicKey
	}
	var keys []key
	for i := range 4 {
		p := o.NewParty("lib"+string(rune('a'+i)), 1, uint32(i+1))
		var k key
		k.name = "libsignal identity"
		copy(k.priv[:], p.IdentityPrivate)
		pub, err := curve.ParsePublicKey(p.IdentityKey)
		if err != nil {
			t.Fatal(err)
		}
		k.pub = pub
		if derived, err := k.priv.PublicKey(); err != nil || derived != pub {
			t.Fatalf("Magpie derives a different public key from libsignal's private key (err %v)", err)
		}
		keys = append(keys, k)
	}
	for range 4 {
		kp, err := curve.GenerateKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key{"Magpie identity", kp.Private, kp.Public})
	}

	for _, k := range keys {
		for _, msg := range msgs {
			// Magpie signs, libsignal verifies.
			var random [64]byte
			rand.Read(random[:])
			sig := xeddsa.Sign(k.priv, msg, random)
			if !o.Verify(k.pub.Serialize(), msg, sig[:]) {
				t.Fatalf("%s: libsignal rejects Magpie's signature over %d bytes", k.name, len(msg))
			}
			bad := sig
			bad[5] ^= 0x10
			if o.Verify(k.pub.Serialize(), msg, bad[:]) {
				t.Fatalf("%s: libsignal accepts an altered Magpie signature", k.name)
			}

			// libsignal signs, Magpie verifies.
			lsig := o.Sign(k.priv[:], msg)
			if len(lsig) != xeddsa.SignatureSize {
				t.Fatalf("libsignal signature is %d bytes", len(lsig))
			}
			var s [64]byte
			copy(s[:], lsig)
			if !xeddsa.Verify(k.pub, msg, s) {
				t.Fatalf("%s: Magpie rejects libsignal's signature over %d bytes", k.name, len(msg))
			}
			s[40] ^= 0x01
			if xeddsa.Verify(k.pub, msg, s) {
				t.Fatalf("%s: Magpie accepts an altered libsignal signature", k.name)
			}
			copy(s[:], lsig)
			if xeddsa.Verify(k.pub, append(bytes.Clone(msg), 0), s) {
				t.Fatalf("%s: Magpie accepts libsignal's signature over another message", k.name)
			}
		}
	}
}

// TestXEdDSABundleSignatures checks the signatures that matter in practice:
// libsignal's bundles verify with Magpie, over the serialized prekeys.
func TestXEdDSABundleSignatures(t *testing.T) {
	o := Start(t)
	p := o.NewParty("bob", 1, 1)
	b := o.Bundle(p.Name, false)
	id, err := curve.ParsePublicKey(b.IdentityKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what     string
		key, sig []byte
	}{
		{"signed prekey", b.SignedPreKey, b.SignedPreKeySignature},
		{"kyber prekey", b.KyberPreKey, b.KyberPreKeySignature},
	} {
		var s [64]byte
		copy(s[:], c.sig)
		if !xeddsa.Verify(id, c.key, s) {
			t.Errorf("Magpie rejects libsignal's %s signature", c.what)
		}
	}
}
