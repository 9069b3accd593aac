package libsignaloracle

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests prove the harness itself: libsignal talking to libsignal
// through it. The Magpie-against-libsignal tests build on them.

// TestHarnessSession runs a PQXDH session between two libsignal parties
// through the harness: the PreKey message, replies, several ratchet steps,
// out-of-order and late delivery, and the rejection of a duplicate and of a
// tampered message.
func TestHarnessSession(t *testing.T) {
	o := Start(t)
	alice := o.NewParty("alice", 1, 1111)
	bob := o.NewParty("bob", 7, 2222)
	if len(alice.IdentityKey) != 33 || alice.IdentityKey[0] != 0x05 {
		t.Fatalf("identity key: %d bytes, type %#x; want 33 bytes, type 0x05", len(alice.IdentityKey), alice.IdentityKey[0])
	}
	if len(alice.IdentityPrivate) != 32 {
		t.Fatalf("identity private key: %d bytes, want 32", len(alice.IdentityPrivate))
	}

	b := o.Bundle(bob.Name, true)
	if b.PreKeyID == nil || len(b.PreKey) != 33 || len(b.SignedPreKey) != 33 ||
		len(b.KyberPreKey) != 1569 || b.KyberPreKey[0] != 0x08 ||
		len(b.SignedPreKeySignature) != 64 || len(b.KyberPreKeySignature) != 64 {
		t.Fatalf("bundle has unexpected shapes: prekey %v/%d, signed %d, kyber %d, sigs %d/%d",
			b.PreKeyID, len(b.PreKey), len(b.SignedPreKey), len(b.KyberPreKey),
			len(b.SignedPreKeySignature), len(b.KyberPreKeySignature))
	}
	if err := o.ProcessBundle(alice.Name, bob.Address(), b); err != nil {
		t.Fatal(err)
	}

	send := func(from, to Party, text string) Message {
		t.Helper()
		return o.Encrypt(from.Name, to.Address(), []byte(text))
	}
	recv := func(to, from Party, m Message, want string) {
		t.Helper()
		got, err := o.Decrypt(to.Name, from.Address(), m)
		if err != nil {
			t.Fatalf("%s decrypting %q: %v", to, want, err)
		}
		if string(got) != want {
			t.Fatalf("%s decrypted %q, want %q", to, got, want)
		}
	}

	// Until Bob answers, all of Alice's messages are PreKey messages.
	m1 := send(alice, bob, "a1")
	m2 := send(alice, bob, "a2")
	for _, m := range []Message{m1, m2} {
		if m.Type != TypePreKey {
			t.Fatalf("first message type %d, want PreKey (%d)", m.Type, TypePreKey)
		}
	}
	info, err := o.Inspect(m1)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != 4 || info.RegistrationID != alice.RegistrationID ||
		info.PreKeyID == nil || *info.PreKeyID != *b.PreKeyID || info.SignedPreKeyID != b.SignedPreKeyID {
		t.Fatalf("PreKey message header %+v does not match alice and the bundle", info)
	}
	// Delivered out of order.
	recv(bob, alice, m2, "a2")
	recv(bob, alice, m1, "a1")
	if _, err := o.Decrypt(bob.Name, alice.Address(), m1); !isKind(err, "DuplicatedMessage") {
		t.Fatalf("replayed message: got %v, want DuplicatedMessage", err)
	}
	left, used := o.PreKeyState(bob.Name)
	if len(left) != 0 {
		t.Fatalf("one-time prekeys left after use: %v", left)
	}
	if len(used) == 0 || used[0] != (KyberUse{b.KyberPreKeyID, b.SignedPreKeyID}) {
		t.Fatalf("kyber prekey uses %v, want {%d %d} first", used, b.KyberPreKeyID, b.SignedPreKeyID)
	}

	// Ratchet steps, each way; some messages arrive late.
	var late []Message
	var lateText []string
	for step := range 4 {
		r := send(bob, alice, fmt.Sprintf("b%d", step))
		if r.Type != TypeWhisper {
			t.Fatalf("reply type %d, want Whisper (%d)", r.Type, TypeWhisper)
		}
		recv(alice, bob, r, fmt.Sprintf("b%d", step))
		for i := range 3 {
			text := fmt.Sprintf("a%d.%d", step, i)
			m := send(alice, bob, text)
			if m.Type != TypeWhisper {
				t.Fatalf("message after a reply has type %d, want Whisper", m.Type)
			}
			if i == 1 {
				late, lateText = append(late, m), append(lateText, text)
				continue
			}
			recv(bob, alice, m, text)
		}
	}
	for i := len(late) - 1; i >= 0; i-- {
		recv(bob, alice, late[i], lateText[i])
	}

	// A flipped bit in the ciphertext body fails the MAC.
	m := send(alice, bob, "tampered")
	m.Body = bytes.Clone(m.Body)
	m.Body[len(m.Body)-20] ^= 1
	if _, err := o.Decrypt(bob.Name, alice.Address(), m); err == nil {
		t.Fatal("tampered message decrypted")
	}
}

// TestHarnessRejectsBadBundle checks that libsignal refuses a bundle whose
// signed prekey or Kyber prekey signature is wrong, so that tests feeding it
// Magpie's bundles can fail.
func TestHarnessRejectsBadBundle(t *testing.T) {
	o := Start(t)
	alice := o.NewParty("alice", 1, 1)
	bob := o.NewParty("bob", 1, 2)
	for _, field := range []string{"signed", "kyber"} {
		b := o.Bundle(bob.Name, false)
		if b.PreKeyID != nil || b.PreKey != nil {
			t.Fatalf("bundle without a one-time prekey has one: %v", b.PreKeyID)
		}
		if field == "signed" {
			b.SignedPreKeySignature[10] ^= 1
		} else {
			b.KyberPreKeySignature[10] ^= 1
		}
		if err := o.ProcessBundle(alice.Name, bob.Address(), b); err == nil {
			t.Fatalf("bundle with a bad %s prekey signature accepted", field)
		}
	}
}

// TestHarnessImportedIdentity checks that a party made from a private key
// has that key's identity, and that a session to it works.
func TestHarnessImportedIdentity(t *testing.T) {
	o := Start(t)
	orig := o.NewParty("orig", 1, 1)
	twin := o.NewPartyWithIdentity("twin", 2, 2, orig.IdentityPrivate)
	if !bytes.Equal(twin.IdentityKey, orig.IdentityKey) {
		t.Fatal("imported identity has a different public key")
	}
	carol := o.NewParty("carol", 1, 3)
	if err := o.ProcessBundle(carol.Name, twin.Address(), o.Bundle(twin.Name, true)); err != nil {
		t.Fatal(err)
	}
	got, err := o.Decrypt(twin.Name, carol.Address(), o.Encrypt(carol.Name, twin.Address(), []byte("hi")))
	if err != nil || string(got) != "hi" {
		t.Fatalf("decrypt: %q, %v", got, err)
	}
}

// TestHarnessErrors checks that bad requests come back as errors and leave
// the harness usable.
func TestHarnessErrors(t *testing.T) {
	o := Start(t)
	if err := o.call("noSuchCommand", nil, nil); !isKind(err, "TypeError") {
		t.Fatalf("unknown command: got %v, want a TypeError", err)
	}
	if _, err := o.Decrypt("nobody", Address{"x", 1}, Message{TypeWhisper, []byte{1}}); err == nil {
		t.Fatal("decrypt for an unknown party succeeded")
	}
	if _, _, err := o.KEMCheck([]byte{0x08, 1, 2, 3}, nil); err == nil {
		t.Fatal("libsignal accepted a 3-byte Kyber public key")
	}
	o.NewParty("still-works", 1, 1)
}

// Safety-number test vectors from libsignal v0.90.0,
// rust/protocol/src/fingerprint.rs (testVectorsVersion2 in Java).
var (
	vectorAliceIdentity, _ = hex.DecodeString("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
	vectorBobIdentity, _   = hex.DecodeString("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
)

const (
	vectorAliceID        = "+14152222222"
	vectorBobID          = "+14153333333"
	vectorDisplayable    = "300354477692869396892869876765458257569162576843440918079131"
	vectorAliceScannable = "080212220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
	vectorBobScannable   = "080212220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d1a220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
)

// TestHarnessFingerprintVector checks the harness's use of the Fingerprint
// API against libsignal's own published vectors for two fixed identities.
func TestHarnessFingerprintVector(t *testing.T) {
	o := Start(t)
	aDisp, aScan := o.Fingerprint([]byte(vectorAliceID), vectorAliceIdentity, []byte(vectorBobID), vectorBobIdentity)
	bDisp, bScan := o.Fingerprint([]byte(vectorBobID), vectorBobIdentity, []byte(vectorAliceID), vectorAliceIdentity)
	if aDisp != vectorDisplayable || bDisp != vectorDisplayable {
		t.Errorf("displayable: alice %s, bob %s; want %s", aDisp, bDisp, vectorDisplayable)
	}
	if hex.EncodeToString(aScan) != vectorAliceScannable {
		t.Errorf("alice scannable %x, want %s", aScan, vectorAliceScannable)
	}
	if hex.EncodeToString(bScan) != vectorBobScannable {
		t.Errorf("bob scannable %x, want %s", bScan, vectorBobScannable)
	}
}

// TestHarnessSignVerify checks libsignal's XEdDSA through the harness: its
// own signatures verify, and altered ones do not.
func TestHarnessSignVerify(t *testing.T) {
	o := Start(t)
	p := o.NewParty("signer", 1, 1)
	msg := []byte("signed prekey bytes")
	sig := o.Sign(p.IdentityPrivate, msg)
	if len(sig) != 64 {
		t.Fatalf("signature is %d bytes, want 64", len(sig))
	}
	if !o.Verify(p.IdentityKey, msg, sig) {
		t.Fatal("libsignal rejects its own signature")
	}
	bad := bytes.Clone(sig)
	bad[0] ^= 1
	if o.Verify(p.IdentityKey, msg, bad) {
		t.Fatal("libsignal accepts an altered signature")
	}
}

func isKind(err error, kind string) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
}
