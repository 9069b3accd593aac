package senderkey

import (
	"crypto/rand"
	"testing"
)

// BenchmarkGroupEncrypt1KiB is one group message: AES-CBC and an XEdDSA
// signature.
func BenchmarkGroupEncrypt1KiB(b *testing.B) {
	s := newSender(b)
	pt := make([]byte, 1024)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := s.rec.Encrypt(s.id, pt, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGroupDecrypt1KiB is one in-order group message on the receiving
// side: the signature check, one chain step and AES-CBC.
func BenchmarkGroupDecrypt1KiB(b *testing.B) {
	s := newSender(b)
	r := s.receiver(b)
	msgs := make([]*Message, b.N)
	for i := range msgs {
		m, err := ParseMessage(s.send(b, string(make([]byte, 1024))))
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m
	}
	b.SetBytes(1024)
	b.ResetTimer()
	for _, m := range msgs {
		if _, err := r.Decrypt(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordRoundTrip is loading and storing a receiver's Record
// holding the most skipped keys, as the e2e layer does for each message.
func BenchmarkRecordRoundTrip(b *testing.B) {
	s := newSender(b)
	r := s.receiver(b)
	s.skip(b, MaxMessageKeys)
	mustDecrypt(b, r, s.send(b, "after a gap"), "after a gap")
	for b.Loop() {
		enc, err := r.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		var back Record
		if err := back.UnmarshalBinary(enc); err != nil {
			b.Fatal(err)
		}
	}
}
