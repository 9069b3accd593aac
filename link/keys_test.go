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

// TestKeyPairCarriesItsParse: a KeyPair made by GenerateKey or
// KeyPairFromPrivate hands its handshakes the parse it was made with; one
// whose Private was changed afterwards, or that was written as a literal,
// gets a parse of its own Private, never the stale key.
func TestKeyPairCarriesItsParse(t *testing.T) {
	a, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := KeyPairFromPrivate(a.Private)
	if err != nil {
		t.Fatal(err)
	}
	for name, kp := range map[string]KeyPair{"GenerateKey": a, "KeyPairFromPrivate": b} {
		k, err := kp.parsed()
		if err != nil {
			t.Fatal(err)
		}
		if k != kp.key || k == nil {
			t.Errorf("%s: a handshake parses the key again", name)
		}
	}

	other, _ := GenerateKey(nil)
	changed := a
	changed.Private, changed.Public = other.Private, other.Public
	literal := KeyPair{Private: other.Private, Public: other.Public}
	for name, kp := range map[string]KeyPair{"changed": changed, "literal": literal} {
		k, err := kp.parsed()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.Bytes(), other.Private[:]) || !bytes.Equal(k.PublicKey().Bytes(), other.Public[:]) {
			t.Errorf("%s: parsed is not the KeyPair's own private key", name)
		}
	}
}
