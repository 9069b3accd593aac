package fingerprint

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
)

// Vectors from libsignal v0.90.0, rust/protocol/src/fingerprint.rs tests
// fingerprint_test_v2 and fingerprint_encodings: identity keys serialized
// with their 0x05 type byte, stable ids, iterations 5200.
const (
	aliceIdentity = "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868"
	bobIdentity   = "05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b"
	aliceID       = "+14152222222"
	bobID         = "+14153333333"
	displayable   = "300354477692869396892869876765458257569162576843440918079131"
	aliceScanV2   = "080212220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
	bobScanV2     = "080212220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d1a220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
	aliceScanV1   = "080112220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
)

func key(t testing.TB, s string) curve.PublicKey {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	k, err := curve.ParsePublicKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLibsignalVectors(t *testing.T) {
	a, b := key(t, aliceIdentity), key(t, bobIdentity)
	if got := Displayable([]byte(aliceID), a, []byte(bobID), b); got != displayable {
		t.Errorf("alice's number = %s, want %s", got, displayable)
	}
	if got := Displayable([]byte(bobID), b, []byte(aliceID), a); got != displayable {
		t.Errorf("bob's number = %s, want %s", got, displayable)
	}
	aScan := Scannable([]byte(aliceID), a, []byte(bobID), b)
	bScan := Scannable([]byte(bobID), b, []byte(aliceID), a)
	if hex.EncodeToString(aScan) != aliceScanV2 {
		t.Errorf("alice's code = %x, want %s", aScan, aliceScanV2)
	}
	if hex.EncodeToString(bScan) != bobScanV2 {
		t.Errorf("bob's code = %x, want %s", bScan, bobScanV2)
	}
	for _, c := range []struct{ ours, theirs []byte }{{aScan, bScan}, {bScan, aScan}} {
		if ok, err := CompareScannable(c.ours, c.theirs); !ok || err != nil {
			t.Errorf("CompareScannable = %v, %v; want true", ok, err)
		}
	}
	// Scanning one's own code: the roles are not swapped.
	if ok, err := CompareScannable(aScan, aScan); ok || err != nil {
		t.Errorf("own code matched: %v, %v", ok, err)
	}
	// A version 1 code (libsignal fingerprint_test_v1) is a mismatch.
	if _, err := CompareScannable(bScan, unhex(t, aliceScanV1)); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("v1 code: err = %v, want ErrVersionMismatch", err)
	}
}

// libsignal fingerprint_encodings: the exact protobuf bytes.
func TestEncoding(t *testing.T) {
	got := hex.EncodeToString(encodeCombined(2, bytes.Repeat([]byte{0x12}, 32), bytes.Repeat([]byte{0xba}, 32)))
	want := "080212220a20" + strings.Repeat("12", 32) + "1a220a20" + strings.Repeat("ba", 32)
	if got != want {
		t.Fatalf("encoding = %s, want %s", got, want)
	}
}

func randomKey(t testing.TB) curve.PublicKey {
	kp, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp.Public
}

func TestMismatches(t *testing.T) {
	a, b, m := randomKey(t), randomKey(t), randomKey(t)
	alice, bob := []byte(aliceID), []byte(bobID)
	good := Displayable(alice, a, bob, b)
	if len(good) != 60 || strings.Trim(good, "0123456789") != "" {
		t.Fatalf("not 60 digits: %q", good)
	}
	bobScan := Scannable(bob, b, alice, a)
	for name, c := range map[string]struct {
		disp string
		scan []byte
	}{
		// A man in the middle gave Alice his key for Bob.
		"key": {Displayable(alice, a, bob, m), Scannable(alice, a, bob, m)},
		// Alice knows a different identifier for herself.
		"identifier": {Displayable([]byte("+141512222222"), a, bob, b), Scannable([]byte("+141512222222"), a, bob, b)},
	} {
		if c.disp == good {
			t.Errorf("%s: displayable unchanged", name)
		}
		if ok, err := CompareScannable(c.scan, bobScan); ok || err != nil {
			t.Errorf("%s: compare = %v, %v", name, ok, err)
		}
		if ok, err := CompareScannable(bobScan, c.scan); ok || err != nil {
			t.Errorf("%s: reverse compare = %v, %v", name, ok, err)
		}
	}
}

func TestCompareErrors(t *testing.T) {
	ours := unhex(t, aliceScanV2)
	theirs := unhex(t, bobScanV2)
	noVersion := theirs[2:]
	noRemote := theirs[:2+36]
	for name, c := range map[string]struct {
		ours, theirs []byte
		want         error
	}{
		"garbage":          {ours, []byte{0xff, 0xff}, ErrInvalidFingerprint},
		"truncated":        {ours, theirs[:50], ErrInvalidFingerprint},
		"no version":       {ours, noVersion, ErrVersionMismatch},
		"missing remote":   {ours, noRemote, ErrInvalidFingerprint},
		"empty":            {ours, nil, ErrVersionMismatch},
		"our code invalid": {[]byte{0x08}, theirs, ErrInvalidFingerprint},
		"oversized":        {ours, make([]byte, 4096), ErrInvalidFingerprint},
	} {
		if _, err := CompareScannable(c.ours, c.theirs); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
	// Unknown fields are skipped as protobuf requires.
	extended := append(bytes.Clone(theirs), 0x20, 0x01) // field 4, varint 1
	if ok, err := CompareScannable(ours, extended); !ok || err != nil {
		t.Errorf("unknown field: %v, %v", ok, err)
	}
}

func FuzzCompareScannable(f *testing.F) {
	ours := unhex(f, aliceScanV2)
	f.Add(unhex(f, bobScanV2))
	f.Add(unhex(f, aliceScanV1))
	f.Fuzz(func(t *testing.T, theirs []byte) {
		ok, err := CompareScannable(ours, theirs)
		if err != nil && ok {
			t.Fatal("match reported with an error")
		}
		if err != nil && !errors.Is(err, ErrInvalidFingerprint) && !errors.Is(err, ErrVersionMismatch) {
			t.Fatalf("unexpected error: %v", err)
		}
	})
}

func BenchmarkDisplayable(b *testing.B) {
	x, y := randomKey(b), randomKey(b)
	for b.Loop() {
		Displayable([]byte(aliceID), x, []byte(bobID), y)
	}
}
