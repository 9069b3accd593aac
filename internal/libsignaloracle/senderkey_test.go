package libsignaloracle

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestHarnessSenderKeys runs Sender Keys between libsignal parties through
// the harness: the distribution message, out-of-order delivery, the
// refusal of a duplicate, a tampered message and an unknown distribution,
// create reusing the chain, and the record and encoder commands that the
// Magpie interop tests rely on.
func TestHarnessSenderKeys(t *testing.T) {
	o := Start(t)
	alice := o.NewParty("alice", 2, 1)
	bob := o.NewParty("bob", 1, 2)
	const id = "3f1c8f64-2b9e-4d5a-9c71-0e6b2a4d8f13"

	if _, err := o.GroupEncrypt(alice.Name, id, []byte("too early")); err == nil {
		t.Fatal("groupEncrypt without a chain succeeded")
	}
	skdm := o.CreateSenderKeyDistribution(alice.Name, id)
	if skdm[0] != 0x33 {
		t.Fatalf("distribution message version byte %#x, want 0x33", skdm[0])
	}
	info, err := o.InspectSenderKeyDistribution(skdm)
	if err != nil || info.DistributionID != id || info.Iteration != 0 || len(info.ChainKey) != 32 || info.ChainID >= 1<<31 {
		t.Fatalf("distribution message %+v, %v", info, err)
	}
	if err := o.ProcessSenderKeyDistribution(bob.Name, alice.Address(), skdm); err != nil {
		t.Fatal(err)
	}

	var msgs [][]byte
	for i := range 5 {
		m, err := o.GroupEncrypt(alice.Name, id, []byte(fmt.Sprint("m", i)))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	mi, err := o.InspectSenderKeyMessage(msgs[3], nil)
	if err != nil || mi.DistributionID != id || mi.ChainID != info.ChainID || mi.Iteration != 3 || mi.SignatureValid != nil {
		t.Fatalf("message %+v, %v", mi, err)
	}
	for _, i := range []int{4, 0, 2, 1, 3} {
		pt, err := o.GroupDecrypt(bob.Name, alice.Address(), msgs[i])
		if err != nil || string(pt) != fmt.Sprint("m", i) {
			t.Fatalf("message %d: %q, %v", i, pt, err)
		}
	}
	if _, err := o.GroupDecrypt(bob.Name, alice.Address(), msgs[2]); !isKind(err, "DuplicatedMessage") {
		t.Fatalf("replay: %v, want DuplicatedMessage", err)
	}
	m, err := o.GroupEncrypt(alice.Name, id, []byte("tampered"))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(m)
	bad[len(bad)-1] ^= 1
	if _, err := o.GroupDecrypt(bob.Name, alice.Address(), bad); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("tampered message: %v", err)
	}
	// From another sender address, bob has no record.
	if _, err := o.GroupDecrypt(bob.Name, Address{"mallory", 1}, m); err == nil || !strings.Contains(err.Error(), "missing sender key state") {
		t.Fatalf("unknown sender: %v", err)
	}

	// create again: the same chain, at its current iteration (6).
	again, err := o.InspectSenderKeyDistribution(o.CreateSenderKeyDistribution(alice.Name, id))
	if err != nil || again.ChainID != info.ChainID || again.Iteration != 6 {
		t.Fatalf("second create: %+v, %v", again, err)
	}

	// Records: bob's can be read and written back.
	rec := o.SenderKeyRecord(bob.Name, alice.Address(), id)
	if len(rec) == 0 || o.SenderKeyRecord(bob.Name, alice.Address(), "8d2a1c0e-1111-4222-8333-444455556666") != nil {
		t.Fatal("records are not kept per (sender, distribution id)")
	}
	if err := o.SetSenderKeyRecord(bob.Name, alice.Address(), id, rec); err != nil {
		t.Fatal(err)
	}
	if err := o.SetSenderKeyRecord(bob.Name, alice.Address(), id, []byte{0xff}); err == nil {
		t.Fatal("a malformed record was accepted")
	}

	// The encoders: bob cannot tell a message built with _new and alice's
	// private key from hers. alice's own record holds that key: chain
	// key, iteration and signing key are in libsignal's storage.proto.
	own := o.SenderKeyRecord(alice.Name, alice.Address(), id)
	if len(own) <= len(rec) {
		t.Fatal("alice's own record holds no more than bob's: no private key?")
	}
	carol := o.NewParty("carol", 1, 3)
	forged := o.NewSenderKeyDistribution(id, 7, 0, make([]byte, 32), alice.IdentityKey)
	if err := o.ProcessSenderKeyDistribution(carol.Name, alice.Address(), forged); err != nil {
		t.Fatal(err)
	}
	msg := o.NewSenderKeyMessage(id, 7, 0, make([]byte, 16), alice.IdentityPrivate)
	if vi, err := o.InspectSenderKeyMessage(msg, alice.IdentityKey); err != nil || vi.SignatureValid == nil || !*vi.SignatureValid {
		t.Fatalf("_new message: %+v, %v", vi, err)
	}
	// Its ciphertext is not the chain's, so decryption fails after the
	// signature verified.
	if _, err := o.GroupDecrypt(carol.Name, alice.Address(), msg); err == nil || strings.Contains(err.Error(), "signature") {
		t.Fatalf("_new message with a zero ciphertext: %v, want a decryption error", err)
	}
}
