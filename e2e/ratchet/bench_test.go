package ratchet

import (
	"crypto/rand"
	"testing"
)

// BenchmarkSessionSetup is InitiateFromBundle on Alice plus the first
// Decrypt (a PreKeySignalMessage) on Bob.
func BenchmarkSessionSetup(b *testing.B) {
	alice := newDevice(b, "alice", 1, 100, true)
	bob := newDevice(b, "bob", 2, 200, true)
	for b.Loop() {
		var aRec, bRec Record
		if err := aRec.InitiateFromBundle(alice.identity, alice.regID, bob.bundle, rand.Reader); err != nil {
			b.Fatal(err)
		}
		typ, ct, err := aRec.Encrypt(alice.identity, []byte("hi"), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := bRec.Decrypt(bob.identity, bob.regID, bob, typ, ct); err != nil {
			b.Fatal(err)
		}
	}
}

func established(b *testing.B) *pair {
	p := newPair(b, true)
	decrypt(b, p.b, &p.bRec, encrypt(b, p.a, &p.aRec, "hi"))
	decrypt(b, p.a, &p.aRec, encrypt(b, p.b, &p.bRec, "ack"))
	return p
}

func BenchmarkEncrypt1KiB(b *testing.B) {
	p := established(b)
	pt := make([]byte, 1024)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, _, err := p.aRec.Encrypt(p.a.identity, pt, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecrypt1KiB decrypts, in order, messages of one chain; they
// are encrypted in untimed batches.
func BenchmarkDecrypt1KiB(b *testing.B) {
	p := established(b)
	pt := make([]byte, 1024)
	const batch = 1024
	var cts [][]byte
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			cts = cts[:0]
			for range batch {
				_, ct, err := p.aRec.Encrypt(p.a.identity, pt, rand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				cts = append(cts, ct)
			}
			b.StartTimer()
		}
		if _, _, err := p.bRec.Decrypt(p.b.identity, p.b.regID, p.b, WhisperMessage, cts[i%batch]); err != nil {
			b.Fatal(err)
		}
	}
}
