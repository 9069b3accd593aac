package vault

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// testParams keep Argon2id cheap in tests.
var testParams = Params{Time: 1, MemoryKiB: 64, Threads: 1}

func mustNew(t testing.TB, pass string) (*Vault, Header) {
	t.Helper()
	v, h, err := NewFromPassphrase([]byte(pass), testParams)
	if err != nil {
		t.Fatalf("NewFromPassphrase: %v", err)
	}
	return v, h
}

func reparse(t testing.TB, h Header) Header {
	t.Helper()
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	var h2 Header
	if err := h2.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	return h2
}

func TestCheckConstantSize(t *testing.T) {
	if len(checkConstant)+16 != checkValueSize {
		t.Fatalf("checkValueSize = %d, want %d", checkValueSize, len(checkConstant)+16)
	}
}

func TestPassphraseRoundTrip(t *testing.T) {
	v, h := mustNew(t, "correct horse battery staple")
	aad := []byte("messages/42/body")
	pt := []byte("meet at noon")
	sealed := v.Seal(aad, pt)
	if len(sealed) != len(pt)+Overhead {
		t.Fatalf("sealed length %d, want %d", len(sealed), len(pt)+Overhead)
	}
	if bytes.Contains(sealed, pt) {
		t.Fatal("plaintext visible in sealed value")
	}

	h2 := reparse(t, h)
	if p, ok := h2.Params(); !ok || p != testParams || h2.Mode() != ModePassphrase {
		t.Fatalf("header after round trip: mode %v params %+v ok %v", h2.Mode(), p, ok)
	}
	v2, err := OpenWithPassphrase([]byte("correct horse battery staple"), h2)
	if err != nil {
		t.Fatalf("OpenWithPassphrase: %v", err)
	}
	got, err := v2.Open(aad, sealed)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v; want %q", got, err, pt)
	}
	// And the other way, including empty plaintext and nil aad.
	s2 := v2.Seal(nil, nil)
	got, err = v.Open(nil, s2)
	if err != nil || len(got) != 0 {
		t.Fatalf("Open(empty) = %q, %v", got, err)
	}
}

func TestSealIsRandomized(t *testing.T) {
	v, _ := mustNew(t, "pw")
	a, b := v.Seal(nil, []byte("x")), v.Seal(nil, []byte("x"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same value are equal")
	}
}

func TestNewSaltsDiffer(t *testing.T) {
	v1, h1 := mustNew(t, "same")
	_, h2 := mustNew(t, "same")
	if h1.salt == h2.salt {
		t.Fatal("two new headers share a salt")
	}
	// Same passphrase, different salt: different key.
	v2, err := OpenWithPassphrase([]byte("same"), h2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Open(nil, v1.Seal(nil, []byte("x"))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("value from another store: err = %v, want ErrCorrupt", err)
	}
}

func TestDefaultParams(t *testing.T) {
	v, h, err := NewFromPassphrase([]byte("pass"), DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := h.Params(); p != (Params{Time: 3, MemoryKiB: 65536, Threads: 4}) {
		t.Fatalf("params %+v", p)
	}
	v2, err := OpenWithPassphrase([]byte("pass"), reparse(t, h))
	if err != nil {
		t.Fatal(err)
	}
	got, err := v2.Open([]byte("a"), v.Seal([]byte("a"), []byte("hello")))
	if err != nil || string(got) != "hello" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := OpenWithPassphrase([]byte("Pass"), h); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: err = %v", err)
	}
}

func TestWrongPassphrase(t *testing.T) {
	_, h := mustNew(t, "right")
	for _, p := range []string{"Right", "right ", "righ", "wrong"} {
		v, err := OpenWithPassphrase([]byte(p), h)
		if !errors.Is(err, ErrWrongPassphrase) || v != nil {
			t.Errorf("OpenWithPassphrase(%q) = %v, %v; want ErrWrongPassphrase", p, v, err)
		}
	}
}

func TestEmptyPassphraseRejected(t *testing.T) {
	if _, _, err := NewFromPassphrase(nil, testParams); !errors.Is(err, ErrEmptyPassphrase) {
		t.Fatalf("New: err = %v", err)
	}
	_, h := mustNew(t, "x")
	if _, err := OpenWithPassphrase([]byte{}, h); !errors.Is(err, ErrEmptyPassphrase) {
		t.Fatalf("Open: err = %v", err)
	}
	if _, _, err := NewFromPassphrase(make([]byte, MaxPassphraseLen+1), testParams); err == nil {
		t.Fatal("overlong passphrase accepted")
	}
	// The limit is inclusive.
	longest := bytes.Repeat([]byte("p"), MaxPassphraseLen)
	v, h, err := NewFromPassphrase(longest, testParams)
	if err != nil {
		t.Fatalf("a passphrase of MaxPassphraseLen bytes: %v", err)
	}
	w, err := OpenWithPassphrase(longest, h)
	if err != nil {
		t.Fatalf("opening with a passphrase of MaxPassphraseLen bytes: %v", err)
	}
	if got, err := w.Open(nil, v.Seal(nil, []byte("x"))); err != nil || string(got) != "x" {
		t.Fatalf("the reopened vault does not open what the first sealed: %q %v", got, err)
	}
}

// Prompts go to the stderr given (or nowhere, never to a nil writer).
func TestPromptsGoToTheGivenWriter(t *testing.T) {
	var buf bytes.Buffer
	if e := osEnv(nil, &buf); e.stderr != &buf {
		t.Error("osEnv replaced the stderr it was given")
	}
	if e := osEnv(nil, nil); e.stderr == nil {
		t.Error("osEnv without a stderr left a nil writer")
	}
}

func TestBadParamsRejected(t *testing.T) {
	for _, p := range []Params{
		{},
		{Time: 0, MemoryKiB: 64, Threads: 1},
		{Time: 1, MemoryKiB: 64, Threads: 0},
		{Time: 1, MemoryKiB: 7, Threads: 1},
		{Time: 1, MemoryKiB: 31, Threads: 4},
		{Time: MaxTime + 1, MemoryKiB: 64, Threads: 1},
		{Time: 1, MemoryKiB: MaxMemoryKiB + 1, Threads: 1},
		{Time: 1, MemoryKiB: 1024, Threads: MaxThreads + 1},
	} {
		if _, _, err := NewFromPassphrase([]byte("x"), p); err == nil {
			t.Errorf("params %+v accepted", p)
		}
	}
}

func TestRawKey(t *testing.T) {
	var key, other [32]byte
	for i := range key {
		key[i] = byte(i + 1)
		other[i] = byte(i + 1)
	}
	other[31] ^= 1
	v, h, err := NewFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if h.Mode() != ModeRawKey {
		t.Fatalf("mode %v", h.Mode())
	}
	if _, ok := h.Params(); ok {
		t.Fatal("raw-key header reports Argon2id params")
	}
	h = reparse(t, h)
	v2, err := OpenWithKey(key, h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v2.Open([]byte("k"), v.Seal([]byte("k"), []byte("v")))
	if err != nil || string(got) != "v" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if v, err := OpenWithKey(other, h); !errors.Is(err, ErrWrongKey) || v != nil {
		t.Fatalf("wrong key: %v, %v", v, err)
	}
	if _, _, err := NewFromKey([32]byte{}); err == nil {
		t.Fatal("zero key accepted")
	}
	// Modes do not mix.
	if _, err := OpenWithPassphrase([]byte("pw"), h); !errors.Is(err, ErrWrongMode) {
		t.Fatalf("passphrase on raw-key header: %v", err)
	}
	_, ph := mustNew(t, "pw")
	if _, err := OpenWithKey(key, ph); !errors.Is(err, ErrWrongMode) {
		t.Fatalf("key on passphrase header: %v", err)
	}
}

func TestTamperedValue(t *testing.T) {
	v, _ := mustNew(t, "pw")
	aad := []byte("contacts/alice/name")
	sealed := v.Seal(aad, []byte("Alice Liddell"))
	for i := range sealed {
		for _, bit := range []byte{0x01, 0x80} {
			c := bytes.Clone(sealed)
			c[i] ^= bit
			if _, err := v.Open(aad, c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d ^ %#x: err = %v, want ErrCorrupt", i, bit, err)
			}
		}
	}
	for n := 0; n < len(sealed); n++ {
		if _, err := v.Open(aad, sealed[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: err = %v", n, err)
		}
	}
	if _, err := v.Open(aad, append(bytes.Clone(sealed), 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("extended: err = %v", err)
	}
	for _, other := range [][]byte{nil, []byte("contacts/bob/name"), []byte("contacts/alice/nam"), append(bytes.Clone(aad), 0)} {
		if _, err := v.Open(other, sealed); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("aad %q: err = %v", other, err)
		}
	}
	// Another vault's key.
	w, _ := mustNew(t, "pw")
	if _, err := w.Open(aad, sealed); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("other key: err = %v", err)
	}
}

// Every single-bit change to a stored header is caught: either it no
// longer parses, or the check value fails.
func TestTamperedHeader(t *testing.T) {
	_, h := mustNew(t, "pw")
	b, _ := h.MarshalBinary()
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		var h2 Header
		if err := h2.UnmarshalBinary(c); err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("byte %d: unmarshal err = %v, want ErrBadHeader", i, err)
			}
			continue
		}
		if _, err := OpenWithPassphrase([]byte("pw"), h2); !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("byte %d: open err = %v, want ErrWrongPassphrase", i, err)
		}
	}
}

func TestHeaderMalformed(t *testing.T) {
	_, ph := mustNew(t, "pw")
	pb, _ := ph.MarshalBinary()
	var key [32]byte
	key[0] = 1
	_, rh, _ := NewFromKey(key)
	rb, _ := rh.MarshalBinary()
	if len(pb) != HeaderSizePassphrase || len(rb) != HeaderSizeRawKey {
		t.Fatalf("sizes %d, %d", len(pb), len(rb))
	}

	withParams := func(p Params) []byte {
		h := ph
		h.params = p
		return h.clearPartPlusCheck()
	}
	cases := map[string][]byte{
		"empty":                nil,
		"short":                []byte("MGP"),
		"magic only":           []byte("MGPV"),
		"bad magic":            append([]byte("MGPX"), pb[4:]...),
		"version 0":            append(append([]byte("MGPV"), 0), pb[5:]...),
		"version 2":            append(append([]byte("MGPV"), 2), pb[5:]...),
		"mode 0":               append(append([]byte("MGPV"), 1, 0), pb[6:]...),
		"mode 3":               append(append([]byte("MGPV"), 1, 3), pb[6:]...),
		"passphrase truncated": pb[:len(pb)-1],
		"passphrase trailing":  append(bytes.Clone(pb), 0),
		"raw truncated":        rb[:len(rb)-1],
		"raw trailing":         append(bytes.Clone(rb), 0),
		"raw as passphrase":    append(append([]byte("MGPV"), 1, byte(ModePassphrase)), rb[6:]...),
		"passphrase as raw":    append(append([]byte("MGPV"), 1, byte(ModeRawKey)), pb[6:]...),
		"time 0":               withParams(Params{Time: 0, MemoryKiB: 64, Threads: 1}),
		"threads 0":            withParams(Params{Time: 1, MemoryKiB: 64, Threads: 0}),
		"memory < 8p":          withParams(Params{Time: 1, MemoryKiB: 8, Threads: 2}),
		"memory huge":          withParams(Params{Time: 1, MemoryKiB: 0xffffffff, Threads: 1}),
		"time huge":            withParams(Params{Time: 0xffffffff, MemoryKiB: 64, Threads: 1}),
		"threads huge":         withParams(Params{Time: 1, MemoryKiB: 1 << 20, Threads: 255}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			h := ph
			err := h.UnmarshalBinary(b)
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("err = %v, want ErrBadHeader", err)
			}
			if h != ph {
				t.Fatal("header modified on error")
			}
		})
	}

	if _, err := (Header{}).MarshalBinary(); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("zero header marshal: %v", err)
	}
	if _, err := OpenWithPassphrase([]byte("pw"), Header{}); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("zero header open: %v", err)
	}
	if _, err := OpenWithKey(key, Header{}); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("zero header open key: %v", err)
	}
}

// clearPartPlusCheck encodes h without validating it.
func (h Header) clearPartPlusCheck() []byte {
	b := h.clearPart()
	b = append(b, h.checkNonce[:]...)
	return append(b, h.checkValue[:]...)
}

func TestConcurrentUse(t *testing.T) {
	v, _ := mustNew(t, "pw")
	done := make(chan error)
	for i := range 8 {
		go func() {
			aad := fmt.Appendf(nil, "row/%d", i)
			for j := range 100 {
				pt := fmt.Appendf(nil, "value %d %d", i, j)
				got, err := v.Open(aad, v.Seal(aad, pt))
				if err != nil || !bytes.Equal(got, pt) {
					done <- fmt.Errorf("round trip %d/%d: %q, %v", i, j, got, err)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkDeriveDefaultParams(b *testing.B) {
	_, h, err := NewFromPassphrase([]byte("benchmark passphrase"), DefaultParams)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := OpenWithPassphrase([]byte("benchmark passphrase"), h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiB(b *testing.B) {
	v, _ := mustNew(b, "pw")
	pt := make([]byte, 1024)
	aad := []byte("messages/123/body")
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		v.Seal(aad, pt)
	}
}

func BenchmarkOpen1KiB(b *testing.B) {
	v, _ := mustNew(b, "pw")
	aad := []byte("messages/123/body")
	sealed := v.Seal(aad, make([]byte, 1024))
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Open(aad, sealed); err != nil {
			b.Fatal(err)
		}
	}
}
