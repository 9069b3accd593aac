package link

import (
	"bytes"
	"testing"
)

// TestStaticKeyParsedOnce: both sides of a handshake use the cached parse of
// their static key for every DH with it, instead of parsing it again (a
// full scalar multiplication each time).
func TestStaticKeyParsedOnce(t *testing.T) {
	srvKey, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	cliKey, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ini, iniDH, err := newHandshake(cliKey, true, srvKey.Public[:])
	if err != nil {
		t.Fatal(err)
	}
	res, resDH, err := newHandshake(srvKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := ini.WriteMessage(nil, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := res.ReadMessage(nil, msg1); err != nil {
		t.Fatal(err)
	}
	msg2, _, _, err := res.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ini.ReadMessage(nil, msg2); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		kp KeyPair
		dh *x25519
	}{"initiator": {cliKey, iniDH}, "responder": {srvKey, resDH}} {
		cached, err := c.kp.parsed()
		if err != nil {
			t.Fatal(err)
		}
		// DH stores a fresh parse in slot 0 on a miss: the same pointer means
		// no DH with the static key missed.
		if c.dh.cache[0].key != cached {
			t.Errorf("%s: a DH with the static key parsed it again", name)
		}
	}
}

// TestStaticKeyCacheChecksPrivate: the cache is keyed by the public key,
// but a KeyPair whose private half differs gets its own key, not the one
// cached under that public key.
func TestStaticKeyCacheChecksPrivate(t *testing.T) {
	a, _ := GenerateKey(nil)
	b, _ := GenerateKey(nil)
	if _, err := b.parsed(); err != nil {
		t.Fatal(err)
	}
	mixed := KeyPair{Private: a.Private, Public: b.Public}
	k, err := mixed.parsed()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Bytes(), a.Private[:]) {
		t.Fatal("the cache gave a KeyPair another key's private key")
	}
	// And the cache stays bounded however many keys pass through.
	for range 3 * maxStaticKeys {
		kp, _ := GenerateKey(nil)
		if _, err := kp.parsed(); err != nil {
			t.Fatal(err)
		}
	}
	staticKeys.Lock()
	n := len(staticKeys.m)
	staticKeys.Unlock()
	if n > maxStaticKeys {
		t.Fatalf("%d cached keys, bound %d", n, maxStaticKeys)
	}
}
