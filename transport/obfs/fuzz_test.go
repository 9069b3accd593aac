package obfs

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// Fixed keys for the fuzz targets, so the seeds in testdata/fuzz stay valid.
var (
	fuzzHK   = newHandshakeKey([20]byte{1, 2, 3, 4, 5}, [32]byte{9, 8, 7, 6, 5, 4, 3, 2, 1})
	fuzzHour = int64(490000)
	fuzzAEAD = [32]byte{0xaa, 1}
	fuzzLen  = [32]byte{0xbb, 2}
)

func FuzzParseClientHello(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 200))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, ch := parseClientHello(fuzzHK, data, fuzzHour)
		switch st {
		case helloOK:
			if len(data) > maxFirstPacket {
				t.Fatal("accepted an overlong hello")
			}
			if ch.hour < fuzzHour-1 || ch.hour > fuzzHour+1 {
				t.Fatal("accepted a stale hour")
			}
			i := bytes.Index(data, ch.repr[:])
			if i < 0 || i > maxPrefix {
				t.Fatal("representative not where it should be")
			}
			// Anything appended makes it invalid; any strict prefix is
			// incomplete or invalid, never OK.
			if st2, _ := parseClientHello(fuzzHK, append(data[:len(data):len(data)], 0), fuzzHour); st2 != helloInvalid {
				t.Fatal("hello with trailing byte not invalid")
			}
			if st2, _ := parseClientHello(fuzzHK, data[:len(data)-1], fuzzHour); st2 == helloOK {
				t.Fatal("truncated hello accepted")
			}
		case helloNeedMore:
			if len(data) >= maxFirstPacket {
				t.Fatal("wants more than the maximum")
			}
		}
	})
}

func FuzzFrameDecoder(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(newFrameCipher(&fuzzAEAD, &fuzzLen), bytes.NewReader(data))
		total := 0
		for {
			p, err := fr.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					err != errFrameLength && err != errFrameAuth && err != errFrameInner {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(p) > maxFramePay {
				t.Fatal("payload too large")
			}
			total += len(p)
			if total > len(data) {
				t.Fatal("decoded more than the input")
			}
		}
	})
}

// TestFrameRoundTrip checks the encoder against the decoder, including
// padding-only frames, and that a flipped bit is caught.
func TestFrameRoundTrip(t *testing.T) {
	enc := newFrameCipher(&fuzzAEAD, &fuzzLen)
	var wire []byte
	var want [][]byte
	for i, n := range []int{0, 1, 100, maxFramePay} {
		p := pattern(n, byte(i))
		pad := 0
		if n < maxFramePay {
			pad = 7 * i
		}
		var err error
		wire, err = enc.appendFrame(wire, p, pad)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	fr := newFrameReader(newFrameCipher(&fuzzAEAD, &fuzzLen), bytes.NewReader(wire))
	for _, w := range want {
		p, err := fr.next()
		if err != nil || !bytes.Equal(p, w) {
			t.Fatalf("frame: %v", err)
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("after last frame: %v", err)
	}
	for _, pos := range []int{0, 1, 2, 10, len(wire) - 1} {
		bad := append([]byte(nil), wire...)
		bad[pos] ^= 0x80
		fr := newFrameReader(newFrameCipher(&fuzzAEAD, &fuzzLen), bytes.NewReader(bad))
		var err error
		for err == nil {
			_, err = fr.next()
		}
		if err == io.EOF {
			t.Fatalf("flip at %d not detected", pos)
		}
	}
}

func TestParseClientHello(t *testing.T) {
	eph, err := newEphemeralKey(cryptoReader{})
	if err != nil {
		t.Fatal(err)
	}
	for s := range numShapes {
		h := buildClientHello(newRand(), fuzzHK, eph, fuzzHour, s)
		if st, ch := parseClientHello(fuzzHK, h, fuzzHour+1); st != helloOK || ch.hour != fuzzHour || ch.repr != eph.repr {
			t.Fatalf("shape %d: valid hello not accepted (%v)", s, st)
		}
		// Trickled in one byte at a time through one scanner.
		var scan helloScan
		for n := 1; n <= len(h); n++ {
			st, _ := scan.parse(fuzzHK, h[:n], fuzzHour)
			if want := helloNeedMore; n == len(h) {
				if st != helloOK {
					t.Fatalf("shape %d: trickled hello: %v", s, st)
				}
			} else if st != want {
				t.Fatalf("shape %d: prefix of %d bytes: %v", s, n, st)
			}
		}
		if st, _ := parseClientHello(fuzzHK, h, fuzzHour+2); st != helloInvalid {
			t.Fatal("stale hello not invalid")
		}
		b := append([]byte(nil), h...)
		b[len(b)-20] ^= 1
		if st, _ := parseClientHello(fuzzHK, b, fuzzHour); st != helloInvalid {
			t.Fatal("altered hello not invalid")
		}
	}
	if st, _ := parseClientHello(fuzzHK, pattern(10, 1), fuzzHour); st != helloNeedMore {
		t.Fatal("10 bytes: want need-more")
	}
	if st, _ := parseClientHello(fuzzHK, pattern(maxPrefix+reprLen+markLen+lenLen, 1), fuzzHour); st != helloInvalid {
		t.Fatal("random bytes past every offset: want invalid")
	}
}

// TestReadDeadlineMidFrame checks that a read timeout in the middle of a
// frame does not lose the stream's place.
func TestReadDeadlineMidFrame(t *testing.T) {
	enc := newFrameCipher(&fuzzAEAD, &fuzzLen)
	wire, _ := enc.appendFrame(nil, []byte("first"), 3)
	wire, _ = enc.appendFrame(wire, []byte("second"), 0)
	r := &stutterReader{data: wire}
	fr := newFrameReader(newFrameCipher(&fuzzAEAD, &fuzzLen), r)
	var got []string
	for len(got) < 2 {
		p, err := fr.next()
		if err == errTimeoutTest {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(p))
	}
	if got[0] != "first" || got[1] != "second" {
		t.Fatalf("%q", got)
	}
}

var errTimeoutTest = errors.New("timeout")

// stutterReader returns one byte, then a timeout, then one byte, ...
type stutterReader struct {
	data []byte
	odd  bool
}

func (s *stutterReader) Read(p []byte) (int, error) {
	s.odd = !s.odd
	if !s.odd {
		return 0, errTimeoutTest
	}
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	p[0] = s.data[0]
	s.data = s.data[1:]
	return 1, nil
}
