package ratchet

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestHKDFRFC5869 runs the HKDF-SHA256 test vectors of RFC 5869, Appendix A
// (test cases 1–3) through the KDF the ratchet uses.
func TestHKDFRFC5869(t *testing.T) {
	seq := func(from, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(from + i)
		}
		return b
	}
	h := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name            string
		ikm, salt, info []byte
		l               int
		okm             string
	}{
		{"A.1", bytes.Repeat([]byte{0x0b}, 22), seq(0x00, 13), seq(0xf0, 10), 42,
			"3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
		{"A.2", seq(0x00, 80), seq(0x60, 80), seq(0xb0, 80), 82,
			"b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
		{"A.3", bytes.Repeat([]byte{0x0b}, 22), nil, nil, 42,
			"8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
	} {
		if got := hkdfSHA256(tc.ikm, tc.salt, string(tc.info), tc.l); !bytes.Equal(got, h(tc.okm)) {
			t.Errorf("RFC 5869 %s: got %x", tc.name, got)
		}
	}
}
