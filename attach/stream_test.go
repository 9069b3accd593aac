package attach

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

func testKey(t testing.TB) [32]byte {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randBytes(n int, seed uint64) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func encrypt(t testing.TB, key [32]byte, pt []byte) []byte {
	t.Helper()
	ct, err := io.ReadAll(NewEncryptReader(key, bytes.NewReader(pt)))
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// decrypt feeds ct to a DecryptWriter in writes of the given size (all at
// once if step <= 0).
func decrypt(key [32]byte, ct []byte, step int) ([]byte, error) {
	var out bytes.Buffer
	w := NewDecryptWriter(key, &out)
	if step <= 0 {
		step = len(ct) + 1
	}
	for len(ct) > 0 {
		n := min(step, len(ct))
		if _, err := w.Write(ct[:n]); err != nil {
			return out.Bytes(), err
		}
		ct = ct[n:]
	}
	err := w.Close()
	return out.Bytes(), err
}

var sizes = []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 5*ChunkSize + 17, 10 << 20}

func TestRoundTrip(t *testing.T) {
	key := testKey(t)
	for _, size := range sizes {
		pt := randBytes(size, uint64(size))
		ct := encrypt(t, key, pt)
		if int64(len(ct)) != EncryptedSize(int64(size)) {
			t.Fatalf("size %d: ciphertext %d bytes, EncryptedSize says %d", size, len(ct), EncryptedSize(int64(size)))
		}
		for _, step := range []int{0, 1000, EncryptedChunkSize, 7} {
			if step == 7 && size > 2*ChunkSize {
				continue // byte-by-byte-ish writes are slow under -race
			}
			got, err := decrypt(key, ct, step)
			if err != nil {
				t.Fatalf("size %d step %d: %v", size, step, err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("size %d step %d: plaintext differs", size, step)
			}
		}
		// Small reads from the encrypt reader give the same bytes.
		r := NewEncryptReader(key, bytes.NewReader(pt))
		var small bytes.Buffer
		buf := make([]byte, 4093)
		for {
			n, err := r.Read(buf)
			small.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(small.Bytes(), ct) {
			t.Fatalf("size %d: small reads give different ciphertext", size)
		}
	}
}

func TestEncryptedSize(t *testing.T) {
	for _, c := range []struct{ plain, want int64 }{
		{0, 16}, {1, 17}, {ChunkSize - 1, ChunkSize + 15}, {ChunkSize, ChunkSize + 16},
		{ChunkSize + 1, ChunkSize + 1 + 32}, {2 * ChunkSize, 2*ChunkSize + 32}, {-1, -1},
	} {
		if got := EncryptedSize(c.plain); got != c.want {
			t.Errorf("EncryptedSize(%d) = %d, want %d", c.plain, got, c.want)
		}
	}
}

// TestFormat pins the wire format: chunk i is ChaCha20-Poly1305 with nonce
// = 11-byte big-endian i ‖ final flag, exactly as age's STREAM payload.
func TestFormat(t *testing.T) {
	key := testKey(t)
	pt := randBytes(2*ChunkSize+5, 1)
	ct := encrypt(t, key, pt)
	a := newAEAD(key)
	var want []byte
	for i, final := range []bool{false, false, true} {
		end := min((i+1)*ChunkSize, len(pt))
		var n [12]byte
		n[10] = byte(i)
		if final {
			n[11] = 1
		}
		want = a.Seal(want, n[:], pt[i*ChunkSize:end], nil)
	}
	if !bytes.Equal(ct, want) {
		t.Fatal("ciphertext does not match the STREAM construction")
	}
}

func TestDecryptChunk(t *testing.T) {
	key := testKey(t)
	pt := randBytes(3*ChunkSize+100, 2)
	ct := encrypt(t, key, pt)
	for i := range 4 {
		end := min((i+1)*EncryptedChunkSize, len(ct))
		got, err := DecryptChunk(key, uint64(i), i == 3, ct[i*EncryptedChunkSize:end])
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if !bytes.Equal(got, pt[i*ChunkSize:min((i+1)*ChunkSize, len(pt))]) {
			t.Fatalf("chunk %d: wrong plaintext", i)
		}
	}
	bad := []struct {
		name  string
		index uint64
		final bool
		ct    []byte
	}{
		{"wrong index", 1, false, ct[:EncryptedChunkSize]},
		{"wrong flag", 0, true, ct[:EncryptedChunkSize]},
		{"last as non-final", 3, false, ct[3*EncryptedChunkSize:]},
		{"short", 0, false, ct[:100]},
		{"too short", 0, true, ct[:15]},
		{"too long", 0, false, ct[:EncryptedChunkSize+1]},
		{"empty final not at 0", 1, true, encrypt(t, key, nil)},
	}
	for _, c := range bad {
		if _, err := DecryptChunk(key, c.index, c.final, c.ct); !errors.Is(err, ErrTampered) {
			t.Errorf("%s: err = %v, want ErrTampered", c.name, err)
		}
	}
	// The empty stream is one empty final chunk.
	if got, err := DecryptChunk(key, 0, true, encrypt(t, key, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty stream: %q, %v", got, err)
	}
}

func TestBitFlips(t *testing.T) {
	key := testKey(t)
	pt := randBytes(2*ChunkSize+300, 3)
	ct := encrypt(t, key, pt)
	r := rand.New(rand.NewPCG(4, 5))
	// Chunk edges and tags, plus random positions.
	positions := []int{0, 1, ChunkSize - 1, ChunkSize, EncryptedChunkSize - 1, EncryptedChunkSize,
		2*EncryptedChunkSize - 1, 2 * EncryptedChunkSize, len(ct) - 17, len(ct) - 16, len(ct) - 1}
	for range 40 {
		positions = append(positions, r.IntN(len(ct)))
	}
	mod := make([]byte, len(ct))
	for _, pos := range positions {
		for bit := range 8 {
			copy(mod, ct)
			mod[pos] ^= 1 << bit
			if _, err := decrypt(key, mod, 0); !errors.Is(err, ErrTampered) {
				t.Fatalf("flip byte %d bit %d: err = %v, want ErrTampered", pos, bit, err)
			}
		}
	}
}

func TestTruncation(t *testing.T) {
	key := testKey(t)
	pt := randBytes(3*ChunkSize+1000, 6)
	ct := encrypt(t, key, pt)
	// At chunk boundaries: every prefix lacks the final chunk.
	for _, n := range []int{0, EncryptedChunkSize, 2 * EncryptedChunkSize, 3 * EncryptedChunkSize} {
		if _, err := decrypt(key, ct[:n], 0); !errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d: err = %v, want ErrTruncated", n, err)
		}
	}
	// Between boundaries: a partial chunk does not authenticate.
	for _, n := range []int{1, 15, 16, 17, ChunkSize, EncryptedChunkSize + 1, EncryptedChunkSize + 16,
		2*EncryptedChunkSize + 500, len(ct) - 1} {
		_, err := decrypt(key, ct[:n], 0)
		if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d: err = %v, want ErrTampered or ErrTruncated", n, err)
		}
	}
	// A stream of exactly full chunks, cut before its last (final) chunk.
	full := encrypt(t, key, randBytes(2*ChunkSize, 7))
	if _, err := decrypt(key, full[:EncryptedChunkSize], 0); !errors.Is(err, ErrTruncated) {
		t.Errorf("full-chunk stream cut: err = %v, want ErrTruncated", err)
	}
}

func TestTrailingData(t *testing.T) {
	key := testKey(t)
	// A full final chunk followed by bytes is recognised as such.
	ct := encrypt(t, key, randBytes(ChunkSize, 8))
	for _, extra := range [][]byte{{0}, ct} {
		if _, err := decrypt(key, append(bytes.Clone(ct), extra...), 0); !errors.Is(err, ErrTrailingData) {
			t.Errorf("full final + %d bytes: err = %v, want ErrTrailingData", len(extra), err)
		}
	}
	// After a short final chunk the extra bytes merge into it: it fails.
	short := encrypt(t, key, randBytes(1000, 9))
	if _, err := decrypt(key, append(short, 0), 0); !errors.Is(err, ErrTampered) {
		t.Errorf("short final + 1 byte: err = %v, want ErrTampered", err)
	}
	// Two empty streams back to back.
	empty := encrypt(t, key, nil)
	if _, err := decrypt(key, append(bytes.Clone(empty), empty...), 0); err == nil {
		t.Error("two empty streams accepted")
	}
}

func TestReorderedChunks(t *testing.T) {
	key := testKey(t)
	pt := randBytes(3*ChunkSize+10, 10)
	ct := encrypt(t, key, pt)
	c := func(i int) []byte { return ct[i*EncryptedChunkSize : min((i+1)*EncryptedChunkSize, len(ct))] }
	cases := map[string][][]byte{
		"swap 0,1":      {c(1), c(0), c(2), c(3)},
		"swap 1,2":      {c(0), c(2), c(1), c(3)},
		"duplicate 0":   {c(0), c(0), c(1), c(2), c(3)},
		"drop 1":        {c(0), c(2), c(3)},
		"final early":   {c(0), c(3)},
		"replace by 2":  {c(0), c(1), c(2), c(2), c(3)},
		"final dropped": {c(0), c(1), c(2)},
	}
	for name, chunks := range cases {
		_, err := decrypt(key, bytes.Join(chunks, nil), 0)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrTruncated) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	key, other := testKey(t), testKey(t)
	for _, size := range []int{0, 10, ChunkSize, 3 * ChunkSize} {
		ct := encrypt(t, key, randBytes(size, 11))
		if _, err := decrypt(other, ct, 0); !errors.Is(err, ErrTampered) {
			t.Errorf("size %d: err = %v, want ErrTampered", size, err)
		}
	}
}

func TestStickyErrors(t *testing.T) {
	key := testKey(t)
	ct := encrypt(t, key, randBytes(3*ChunkSize, 12))
	ct[0] ^= 1
	w := NewDecryptWriter(key, io.Discard)
	if _, err := w.Write(ct); !errors.Is(err, ErrTampered) {
		t.Fatalf("write: %v", err)
	}
	if _, err := w.Write([]byte{1}); !errors.Is(err, ErrTampered) {
		t.Fatalf("second write: %v", err)
	}
	if err := w.Close(); !errors.Is(err, ErrTampered) {
		t.Fatalf("close: %v", err)
	}
	// Nothing unauthenticated reaches dst.
	var out bytes.Buffer
	w = NewDecryptWriter(key, &out)
	w.Write(ct)
	w.Close()
	if out.Len() != 0 {
		t.Fatalf("%d bytes of a tampered first chunk written", out.Len())
	}
}

type failReader struct{ err error }

func (f failReader) Read([]byte) (int, error) { return 0, f.err }

func TestEncryptReaderError(t *testing.T) {
	boom := errors.New("boom")
	r := NewEncryptReader(testKey(t), io.MultiReader(bytes.NewReader(make([]byte, ChunkSize+5)), failReader{boom}))
	if _, err := io.ReadAll(r); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestDigest(t *testing.T) {
	key := testKey(t)
	pt := randBytes(ChunkSize+9, 13)
	d := NewDigester()
	ct, err := io.ReadAll(io.TeeReader(NewEncryptReader(key, bytes.NewReader(pt)), d))
	if err != nil {
		t.Fatal(err)
	}
	sum := d.Sum()
	if sum != Digest(sha256.Sum256(ct)) {
		t.Fatal("Digest is not SHA-256 of the ciphertext")
	}
	if !sum.Equal(Digest(sha256.Sum256(ct))) || sum.Equal(Digest{}) {
		t.Fatal("Equal is wrong")
	}
}

// pattern is what genReader repeats: random bytes, so that no chunk of the
// generated stream equals another at the same offset within a chunk.
var pattern = randBytes(4093, 99)

// genReader produces n bytes without allocating, cycling through pattern
// (copy, not a byte loop, so it stays fast under -race).
type genReader struct {
	n   int64
	off int
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n {
		p = p[:g.n]
	}
	total := 0
	for total < len(p) {
		c := copy(p[total:], pattern[g.off:])
		total += c
		g.off = (g.off + c) % len(pattern)
	}
	g.n -= int64(total)
	return total, nil
}

func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// TestConstantMemory encrypts 200 MiB to io.Discard, and decrypts them back
// to io.Discard, and checks that each allocates less than 1 MiB in total.
func TestConstantMemory(t *testing.T) {
	const size = 200 << 20
	const limit = 1 << 20
	key := testKey(t)

	before := totalAlloc()
	n, err := io.Copy(io.Discard, NewEncryptReader(key, &genReader{n: size}))
	alloc := totalAlloc() - before
	if err != nil || n != EncryptedSize(size) {
		t.Fatalf("encrypt: %d bytes, %v", n, err)
	}
	t.Logf("encrypt 200 MiB: %d bytes allocated", alloc)
	if alloc > limit {
		t.Errorf("encrypting 200 MiB allocated %d bytes, want < %d", alloc, limit)
	}

	before = totalAlloc()
	w := NewDecryptWriter(key, io.Discard)
	// io.Copy would use the reader's WriteTo or a 32 KiB buffer; both fine.
	if _, err := io.Copy(w, NewEncryptReader(key, &genReader{n: size})); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	alloc = totalAlloc() - before
	t.Logf("encrypt+decrypt 200 MiB: %d bytes allocated", alloc)
	if alloc > limit {
		t.Errorf("encrypt+decrypt of 200 MiB allocated %d bytes, want < %d", alloc, limit)
	}
}

func BenchmarkEncrypt(b *testing.B) {
	key := testKey(b)
	const size = 16 << 20
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.Copy(io.Discard, NewEncryptReader(key, &genReader{n: size})); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	key := testKey(b)
	const size = 16 << 20
	ct := encrypt(b, key, randBytes(size, 14))
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		w := NewDecryptWriter(key, io.Discard)
		if _, err := w.Write(ct); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// failOnce refuses its first write, as a disk that was full for a moment
// does, and takes the rest: a lost chunk must not go unnoticed because
// later ones were stored.
type failOnce struct{ failed bool }

var errDiskFull = errors.New("no space left on device")

func (f *failOnce) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errDiskFull
	}
	return len(p), nil
}

// A destination that fails to take the plaintext fails the decryption,
// whichever chunk it fails on: a download is never reported whole when
// its last bytes were not stored.
func TestDecryptWriterReportsAFailedWrite(t *testing.T) {
	key, _ := NewKey()
	for _, n := range []int{100, 2*ChunkSize + 100} {
		ct, err := io.ReadAll(NewEncryptReader(key, bytes.NewReader(randBytes(n, uint64(n)))))
		if err != nil {
			t.Fatal(err)
		}
		w := NewDecryptWriter(key, &failOnce{})
		_, werr := w.Write(ct)
		cerr := w.Close()
		if !errors.Is(werr, errDiskFull) && !errors.Is(cerr, errDiskFull) {
			t.Errorf("%d bytes into a writer that fails once: Write %v, Close %v; want the write's error", n, werr, cerr)
		}
	}
}
