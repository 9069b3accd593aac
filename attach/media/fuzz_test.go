package media

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOgg feeds arbitrary bytes to the Ogg Opus parser: it must not panic,
// and must fail only with ErrMalformed. Seeds: testdata/fuzz/FuzzOgg.
func FuzzOgg(f *testing.F) {
	f.Add(opusFile(312, 312+48000, 2000))
	f.Add(buildOggPage(0x02, 0, 1, 0, []byte("\x01vorbis")))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, opus, err := oggOpusDuration(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if d < 0 || (!opus && d != 0) {
			t.Fatalf("duration %v, opus %v", d, opus)
		}
	})
}

// FuzzMP4 feeds arbitrary bytes to the ISO BMFF parser: it must not panic,
// and must fail only with ErrMalformed. Seeds: testdata/fuzz/FuzzMP4.
func FuzzMP4(f *testing.F) {
	f.Add(videoFile(0, 1000, 1000, 64, 48))
	f.Add(videoFile(1, 600, 6000, 1920, 1080))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := parseMP4(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if info.duration < 0 || info.width < 0 || info.height < 0 {
			t.Fatalf("got %+v", info)
		}
	})
}
