package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/jpeg"
	"strings"
	"testing"
	"time"
)

func inspect(t *testing.T, name string, data []byte) (Info, error) {
	t.Helper()
	return Inspect(name, bytes.NewReader(data), int64(len(data)))
}

func mustInspect(t *testing.T, name string, data []byte) Info {
	t.Helper()
	info, err := inspect(t, name, data)
	if err != nil {
		t.Fatalf("Inspect(%q): %v", name, err)
	}
	return info
}

func checkThumb(t *testing.T, thumb []byte, w, h int) {
	t.Helper()
	if thumb == nil {
		t.Fatal("no thumbnail")
	}
	if len(thumb) > ThumbnailMaxBytes {
		t.Fatalf("thumbnail is %d bytes", len(thumb))
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(thumb))
	if err != nil || format != "jpeg" {
		t.Fatalf("thumbnail: %s, %v", format, err)
	}
	if cfg.Width != w || cfg.Height != h {
		t.Fatalf("thumbnail is %d×%d, want %d×%d", cfg.Width, cfg.Height, w, h)
	}
}

func TestImages(t *testing.T) {
	for _, c := range []struct {
		name     string
		data     []byte
		mime     string
		w, h     int
		thW, thH int
	}{
		{"wide.png", encodePNG(t, gradient(1000, 500)), "image/png", 1000, 500, 320, 160},
		{"tall.jpg", encodeJPEG(t, gradient(300, 900)), "image/jpeg", 300, 900, 107, 320},
		{"small.png", encodePNG(t, gradient(40, 30)), "image/png", 40, 30, 40, 30},
		{"anim.gif", encodeGIF(t, 64, 48), "image/gif", 64, 48, 64, 48},
		// Named wrongly: content decides.
		{"photo.txt", encodeJPEG(t, gradient(10, 10)), "image/jpeg", 10, 10, 10, 10},
		// Noise does not compress: the quality must drop to fit 32 KiB.
		{"noise.png", encodePNG(t, noise(640, 640)), "image/png", 640, 640, 320, 320},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := mustInspect(t, c.name, c.data)
			if info.MIME != c.mime || info.Kind != KindImage || info.Width != c.w || info.Height != c.h {
				t.Fatalf("got %+v", info)
			}
			checkThumb(t, info.Thumbnail, c.thW, c.thH)
		})
	}
}

func TestGIFFirstFrame(t *testing.T) {
	info := mustInspect(t, "a.gif", encodeGIF(t, 20, 20))
	img, err := jpeg.Decode(bytes.NewReader(info.Thumbnail))
	if err != nil {
		t.Fatal(err)
	}
	r, _, b, _ := img.At(10, 10).RGBA()
	if r < 0xc000 || b > 0x4000 {
		t.Fatalf("thumbnail is not the red first frame: r=%x b=%x", r, b)
	}
}

func TestDecompressionBomb(t *testing.T) {
	for _, c := range []struct{ w, h uint32 }{{8000, 6000}, {100000, 100000}, {1 << 31 >> 1, 2}} {
		data := pngHeaderOnly(c.w, c.h)
		info, err := inspect(t, "bomb.png", data)
		if err != nil {
			t.Fatalf("%d×%d: %v", c.w, c.h, err)
		}
		if info.Kind != KindImage || info.Width != int(c.w) || info.Height != int(c.h) || info.Thumbnail != nil {
			t.Fatalf("%d×%d: got %+v", c.w, c.h, info)
		}
	}
	// Just under the limit, with no pixel data: decoding is attempted and
	// fails cleanly.
	_, err := inspect(t, "x.png", pngHeaderOnly(2000, 2000))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func TestMalformedImages(t *testing.T) {
	good := encodePNG(t, gradient(50, 50))
	jpg := encodeJPEG(t, gradient(50, 50))
	for name, data := range map[string][]byte{
		"png header cut": good[:20],
		"png data cut":   good[:len(good)-30],
		"jpeg cut":       jpg[:len(jpg)/2],
		"gif header":     []byte("GIF89a\x00"),
		"zero size png":  pngHeaderOnly(0, 10),
		// image/gif reports a 0×5 or 5×0 screen without complaint.
		"zero width gif":  []byte("GIF89a\x00\x00\x05\x00\x00\x00\x00;"),
		"zero height gif": []byte("GIF89a\x05\x00\x00\x00\x00\x00\x00;"),
	} {
		info, err := inspect(t, name, data)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
		if info.Kind != KindDocument || info.MIME == "" {
			t.Errorf("%s: info on error = %+v", name, info)
		}
	}
}

func TestOggOpus(t *testing.T) {
	const preSkip = 312
	for _, c := range []struct {
		name    string
		granule int64
		audio   int
		want    time.Duration
	}{
		{"short", preSkip + 3*48000 + 24000, 3000, 3500 * time.Millisecond},
		// Longer than the 64 KiB tail window, with "OggS" in packet data.
		{"long", preSkip + 600*48000, 300_000, 10 * time.Minute},
		{"empty audio", preSkip, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := mustInspect(t, "voice.opus", opusFile(preSkip, c.granule, c.audio))
			if info.MIME != "audio/ogg" || info.Kind != KindVoice || info.Duration != c.want {
				t.Fatalf("got %+v, want duration %v", info, c.want)
			}
		})
	}
	// Without a telling extension, the OpusHead in the first page decides.
	info := mustInspect(t, "blob", opusFile(preSkip, preSkip+48000, 10))
	if info.MIME != "audio/ogg" || info.Kind != KindVoice || info.Duration != time.Second {
		t.Fatalf("no extension: %+v", info)
	}
}

func TestOggOther(t *testing.T) {
	// A valid Ogg stream of another codec is a document, not an error.
	vorbis := buildOggPage(0x02, 0, 1, 0, []byte("\x01vorbis\x00\x00\x00\x00\x02\x44\xac\x00\x00"))
	info := mustInspect(t, "song.ogg", vorbis)
	if info.MIME != "audio/ogg" || info.Kind != KindDocument {
		t.Fatalf(".ogg vorbis: %+v", info)
	}
	info = mustInspect(t, "x.bin", vorbis)
	if info.MIME != "application/ogg" || info.Kind != KindDocument {
		t.Fatalf("vorbis, no extension: %+v", info)
	}
}

func TestOggMalformed(t *testing.T) {
	good := opusFile(312, 312+48000, 5000)
	badCRC := bytes.Clone(good)
	badCRC[30] ^= 1
	otherSerial := append(buildOggPage(0x02, 0, 1, 0, opusHead(312)), buildOggPage(0x04, 99999, 2, 1, []byte{1})...)
	noBOS := buildOggPage(0, 0, 1, 0, opusHead(312))
	shortHead := buildOggPage(0x02, 0, 1, 0, opusHead(312)[:15])
	badVersion := opusHead(312)
	badVersion[8] = 0x10
	noChannels := opusHead(312)
	noChannels[9] = 0
	negative := append(buildOggPage(0x02, 0, 1, 0, opusHead(312)), buildOggPage(0x04, -5, 1, 1, []byte{1})...)
	for name, data := range map[string][]byte{
		"bad crc":           badCRC,
		"last page cut":     good[:len(good)-2],
		"only first page":   good[:47],
		"header cut":        good[:20],
		"other serial":      otherSerial,
		"no BOS":            noBOS,
		"short OpusHead":    shortHead,
		"version 1.0":       buildOggPage(0x02, 0, 1, 0, badVersion),
		"no channels":       buildOggPage(0x02, 0, 1, 0, noChannels),
		"granule < preskip": opusFile(312, 100, 10),
		"negative granule":  negative,
		"huge granule":      opusFile(0, 1<<62, 10),
	} {
		info, err := inspect(t, name+".opus", data)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		} else if info.Kind != KindDocument || info.MIME != "audio/ogg" {
			t.Errorf("%s: info on error = %+v", name, info)
		}
	}
}

func TestMP4(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		mime string
		kind string
		w, h int
		d    time.Duration
	}{
		{"clip.mp4", videoFile(0, 1000, 12345, 1280, 720), "video/mp4", KindVideo, 1280, 720, 12345 * time.Millisecond},
		{"clip.mov", videoFile(1, 600, 600*3600*30, 1920, 1080), "video/mp4", KindVideo, 1920, 1080, 30 * time.Hour},
		// Content alone: DetectContentType knows the "isom"… brands only
		// through "mp4"; QuickTime's "qt  " brand is added by sniff.
		{"noext", append(ftyp("mp42"), mp4Box("moov", mvhd(0, 90000, 90000))...), "video/mp4", KindVideo, 0, 0, time.Second},
		{"qt", append(ftyp("qt  "), mp4Box("moov", mvhd(0, 600, 300))...), "video/mp4", KindVideo, 0, 0, 500 * time.Millisecond},
		{"note.m4a", append(ftyp("M4A "), mp4Box("moov", mvhd(0, 44100, 44100*7))...), "audio/mp4", KindVoice, 0, 0, 7 * time.Second},
		{"brand-m4a", append(ftyp("M4A "), mp4Box("moov", mvhd(0, 44100, 44100*7))...), "audio/mp4", KindVoice, 0, 0, 7 * time.Second},
		{"portrait.mp4", append(ftyp("isom"), mp4Box("moov", mvhd(0, 1000, 1000), mp4Box("trak", tkhd(0, 1920, 1080, rot90)))...), "video/mp4", KindVideo, 1080, 1920, time.Second},
		{"unknown.mp4", append(ftyp("isom"), mp4Box("moov", mvhd(0, 1000, 0xffffffff))...), "video/mp4", KindVideo, 0, 0, 0},
		{"old.mov", mp4Box("moov", mvhd(0, 600, 1200), mp4Box("trak", tkhd(0, 640, 480, identity))), "video/mp4", KindVideo, 640, 480, 2 * time.Second},
		// A .mp4 name does not make text a video.
		{"fake.mp4", []byte("hello, this is text"), "text/plain", KindDocument, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := mustInspect(t, c.name, c.data)
			if info.MIME != c.mime || info.Kind != c.kind || info.Width != c.w || info.Height != c.h || info.Duration != c.d {
				t.Fatalf("got %+v", info)
			}
		})
	}
}

// TestMP4LargeBoxes puts a 4 GiB mdat with a 64-bit size before the moov
// box, in a file whose middle is never stored: Inspect must read only the
// box headers and the moov.
func TestMP4LargeBoxes(t *testing.T) {
	const mdatSize = 4 << 30
	head := ftyp("isom")
	head = binary.BigEndian.AppendUint32(head, 1)
	head = append(head, "mdat"...)
	head = binary.BigEndian.AppendUint64(head, mdatSize)
	tail := mp4Box("moov", mvhd(1, 1000, 5000), mp4Box("trak", tkhd(1, 320, 240, identity)))
	f := &sparseFile{head: head, tail: tail, size: int64(len(head)) - 16 + mdatSize + int64(len(tail))}
	info, err := Inspect("big.mp4", f, f.size)
	if err != nil {
		t.Fatal(err)
	}
	if info.Duration != 5*time.Second || info.Width != 320 || info.Height != 240 {
		t.Fatalf("got %+v", info)
	}
	if n := f.read.Load(); n > 2048 {
		t.Fatalf("read %d bytes", n)
	}
}

// TestOggLargeFile checks that a long voice note is read at its first page
// and its last 64 KiB only.
func TestOggLargeFile(t *testing.T) {
	const size = 1 << 30
	head := buildOggPage(0x02, 0, 7, 0, opusHead(0))
	tail := buildOggPage(0x04, 48000*3600, 7, 99, []byte{1, 2, 3})
	f := &sparseFile{head: head, tail: tail, size: size}
	info, err := Inspect("long.opus", f, size)
	if err != nil {
		t.Fatal(err)
	}
	if info.Duration != time.Hour {
		t.Fatalf("got %+v", info)
	}
	if n := f.read.Load(); n > int64(SniffLen+oggHeaderLen+255+len(head)+oggTail) {
		t.Fatalf("read %d bytes", n)
	}
}

func TestMP4Malformed(t *testing.T) {
	good := videoFile(0, 1000, 1000, 64, 48)
	overrun := append(ftyp("isom"), mp4Box("moov", mvhd(0, 1000, 1000))...)
	binary.BigEndian.PutUint32(overrun[len(overrun)-len(mvhd(0, 1, 1)):], 500) // mvhd claims 500 bytes
	tiny := append(ftyp("isom"), 0, 0, 0, 4, 'f', 'r', 'e', 'e')
	zeroInside := append(ftyp("isom"), mp4Box("moov", []byte{0, 0, 0, 0, 'm', 'v', 'h', 'd'})...)
	many := ftyp("isom")
	for range mp4MaxBoxes + 1 {
		many = append(many, mp4Box("free")...)
	}
	many = append(many, mp4Box("moov", mvhd(0, 1000, 1000))...)
	mvhd3 := mvhd(0, 1000, 1000)
	mvhd3[8] = 3
	tkhd9 := tkhd(0, 1, 1, identity)
	tkhd9[8] = 9
	hugeLarge := append(ftyp("isom"), 0, 0, 0, 1, 'm', 'd', 'a', 't', 0xff, 0, 0, 0, 0, 0, 0, 0)
	for name, data := range map[string][]byte{
		"no moov":          append(ftyp("isom"), mp4Box("mdat", []byte{1, 2, 3})...),
		"no mvhd":          append(ftyp("isom"), mp4Box("moov", mp4Box("trak"))...),
		"moov cut":         good[:len(good)-10],
		"header cut":       good[:len(ftyp("isom"))+5],
		"box overruns":     overrun,
		"box below header": tiny,
		"size 0 inside":    zeroInside,
		"too many boxes":   many,
		"timescale 0":      append(ftyp("isom"), mp4Box("moov", mvhd(0, 0, 1000))...),
		"mvhd version 3":   append(ftyp("isom"), mp4Box("moov", mvhd3)...),
		"mvhd short":       append(ftyp("isom"), mp4Box("moov", mp4Box("mvhd", []byte{0, 0, 0, 0, 1}))...),
		"mvhd v1 short":    append(ftyp("isom"), mp4Box("moov", mp4Box("mvhd", make([]byte, 24)))...),
		"tkhd version 9":   append(ftyp("isom"), mp4Box("moov", mvhd(0, 1, 1), mp4Box("trak", tkhd9))...),
		"tkhd short":       append(ftyp("isom"), mp4Box("moov", mvhd(0, 1, 1), mp4Box("trak", mp4Box("tkhd", make([]byte, 40))))...),
		"largesize huge":   hugeLarge,
		"huge duration":    append(ftyp("isom"), mp4Box("moov", mvhd(1, 1, 1<<62))...),
	} {
		info, err := inspect(t, name+".mp4", data)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		} else if info.Kind != KindDocument || info.MIME != "video/mp4" {
			t.Errorf("%s: info on error = %+v", name, info)
		}
	}
}

// TestTruncatedPrefixes inspects every prefix of small fixtures: each
// must give a result or a clean error, never a panic.
func TestTruncatedPrefixes(t *testing.T) {
	fixtures := map[string][]byte{
		"v.mp4":  videoFile(1, 1000, 1000, 64, 48),
		"a.m4a":  append(ftyp("M4A "), mp4Box("moov", mvhd(0, 44100, 44100))...),
		"v.opus": opusFile(312, 48312, 2000),
		"i.png":  encodePNG(t, gradient(20, 20)),
		"i.gif":  encodeGIF(t, 8, 8),
	}
	for name, data := range fixtures {
		step := max(1, len(data)/300)
		for n := 0; n < len(data); n += step {
			if _, err := inspect(t, name, data[:n]); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s[:%d]: unexpected error %v", name, n, err)
			}
		}
	}
}

func TestDocuments(t *testing.T) {
	for _, c := range []struct{ name, data, mime string }{
		{"notes.txt", "plain text here", "text/plain"},
		{"doc.pdf", "%PDF-1.7\n...", "application/pdf"},
		{"empty", "", "text/plain"},
		{"bin", "\x00\x01\x02\x03", "application/octet-stream"},
		{"a.zip", "PK\x03\x04rest", "application/zip"},
	} {
		info := mustInspect(t, c.name, []byte(c.data))
		if info.MIME != c.mime || info.Kind != KindDocument || info.Thumbnail != nil {
			t.Errorf("%s: got %+v", c.name, info)
		}
	}
}

func TestReadErrors(t *testing.T) {
	if _, err := Inspect("x", bytes.NewReader(nil), -1); !errors.Is(err, ErrInvalidSize) {
		t.Fatalf("negative size: %v", err)
	}
	// The reader holds less than the size claims.
	_, err := Inspect("x.png", bytes.NewReader([]byte("abc")), 1000)
	if err == nil || !strings.Contains(err.Error(), "reading") {
		t.Fatalf("short reader: %v", err)
	}
}
