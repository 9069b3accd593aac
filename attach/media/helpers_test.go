package media

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"sync/atomic"
	"testing"
)

// Fixture builders. Everything is generated here, so the tests need no
// binary files and each byte of a fixture is explained.

// gradient returns a w×h image with smooth colours (compresses well).
func gradient(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	return img
}

// noise returns a w×h image of pseudo-random pixels (compresses badly).
func noise(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	s := uint32(1)
	for i := range img.Pix {
		s = s*1664525 + 1013904223
		img.Pix[i] = byte(s >> 24)
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// encodeGIF makes a two-frame GIF: first frame red, second blue.
func encodeGIF(t testing.TB, w, h int) []byte {
	t.Helper()
	pal := color.Palette{color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}}
	red := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	blue := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	for i := range blue.Pix {
		blue.Pix[i] = 1
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, &gif.GIF{Image: []*image.Paletted{red, blue}, Delay: []int{10, 10}}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngHeaderOnly returns a PNG signature, an IHDR chunk for a w×h 8-bit RGBA
// image and an IEND chunk, with no image data (PNG spec §5, §11.2.2): a
// "decompression bomb" header that claims any size.
func pngHeaderOnly(w, h uint32) []byte {
	chunk := func(typ string, data []byte) []byte {
		var c []byte
		c = binary.BigEndian.AppendUint32(c, uint32(len(data)))
		c = append(c, typ...)
		c = append(c, data...)
		return binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // depth 8, RGBA, deflate, filter 0, no interlace
	out := []byte("\x89PNG\r\n\x1a\n")
	out = append(out, chunk("IHDR", ihdr)...)
	return append(out, chunk("IEND", nil)...)
}

// buildOggPage builds one Ogg page (RFC 3533 §6) holding the given packets,
// each ending on the page (lacing values of 255 continue a packet, a value
// below 255 ends it), with a correct CRC.
func buildOggPage(flags byte, granule int64, serial, seq uint32, packets ...[]byte) []byte {
	var lacing, body []byte
	for _, p := range packets {
		n := len(p)
		for n >= 255 {
			lacing = append(lacing, 255)
			n -= 255
		}
		lacing = append(lacing, byte(n))
		body = append(body, p...)
	}
	if len(lacing) > 255 {
		panic("buildOggPage: too many segments")
	}
	pg := []byte("OggS")
	pg = append(pg, 0, flags)
	pg = binary.LittleEndian.AppendUint64(pg, uint64(granule))
	pg = binary.LittleEndian.AppendUint32(pg, serial)
	pg = binary.LittleEndian.AppendUint32(pg, seq)
	pg = append(pg, 0, 0, 0, 0) // CRC, filled in below
	pg = append(pg, byte(len(lacing)))
	pg = append(pg, lacing...)
	pg = append(pg, body...)
	binary.LittleEndian.PutUint32(pg[22:26], oggCRC(pg))
	return pg
}

// opusHead is an identification header (RFC 7845 §5.1): version 1, mono,
// the given pre-skip, 48 kHz input, gain 0, mapping family 0.
func opusHead(preSkip uint16) []byte {
	h := []byte("OpusHead")
	h = append(h, 1, 1)
	h = binary.LittleEndian.AppendUint16(h, preSkip)
	h = binary.LittleEndian.AppendUint32(h, 48000)
	h = append(h, 0, 0, 0)
	return h
}

// opusFile builds an Ogg Opus stream: the OpusHead page (BOS, granule 0),
// an OpusTags page, audio pages whose packets total audioBytes, and a last
// page (EOS) with the given granule position. Audio pages hold up to 60
// packets of 1000 bytes each, like a real encoder's 20 ms frames.
func opusFile(preSkip uint16, lastGranule int64, audioBytes int) []byte {
	const serial = 0x1234
	out := buildOggPage(0x02, 0, serial, 0, opusHead(preSkip))
	out = append(out, buildOggPage(0, 0, serial, 1, []byte("OpusTags\x00\x00\x00\x00\x00\x00\x00\x00"))...)
	seq := uint32(2)
	for audioBytes > 0 {
		var pkts [][]byte
		for len(pkts) < 60 && audioBytes > 0 {
			n := min(1000, audioBytes)
			// Packets contain "OggS" to check that capture patterns in
			// data are not mistaken for pages.
			p := bytes.Repeat([]byte("OggS\x00"), n/5+1)[:n]
			pkts = append(pkts, p)
			audioBytes -= n
		}
		out = append(out, buildOggPage(0, lastGranule/2, serial, seq, pkts...)...)
		seq++
	}
	return append(out, buildOggPage(0x04, lastGranule, serial, seq, []byte{0xfc, 0xff, 0xfe})...)
}

// mp4Box builds an ISO BMFF box (ISO/IEC 14496-12 §4.2) with a 32-bit size.
func mp4Box(typ string, payload ...[]byte) []byte {
	body := bytes.Join(payload, nil)
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = append(b, typ...)
	return append(b, body...)
}

// ftyp is a file type box with the given major brand.
func ftyp(brand string) []byte {
	return mp4Box("ftyp", []byte(brand), []byte{0, 0, 2, 0}, []byte(brand), []byte("isom"))
}

// mvhd builds a movie header box (§8.2.2), version 0 or 1, followed by the
// rate, volume, matrix and next_track_ID fields as real files have them.
func mvhd(version byte, timescale uint32, duration uint64) []byte {
	p := []byte{version, 0, 0, 0}
	if version == 1 {
		p = binary.BigEndian.AppendUint64(p, 1) // creation_time
		p = binary.BigEndian.AppendUint64(p, 2) // modification_time
		p = binary.BigEndian.AppendUint32(p, timescale)
		p = binary.BigEndian.AppendUint64(p, duration)
	} else {
		p = binary.BigEndian.AppendUint32(p, 1)
		p = binary.BigEndian.AppendUint32(p, 2)
		p = binary.BigEndian.AppendUint32(p, timescale)
		p = binary.BigEndian.AppendUint32(p, uint32(duration))
	}
	p = append(p, make([]byte, 80)...) // rate … next_track_ID, zeroed
	return mp4Box("mvhd", p)
}

// identity and rot90 are tkhd matrices {a b u c d v x y w}, with a, b, c, d,
// x, y in 16.16 and u, v, w in 2.30 fixed point (§8.3.2, §6.2.2).
var (
	identity = [9]uint32{0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000}
	rot90    = [9]uint32{0, 0x10000, 0, 0xffff0000, 0, 0, 0, 0, 0x40000000}
)

// tkhd builds a track header box (§8.3.2) with width and height in 16.16.
func tkhd(version byte, w, h uint32, matrix [9]uint32) []byte {
	p := []byte{version, 0, 0, 7}
	if version == 1 {
		p = append(p, make([]byte, 8+8)...)
		p = binary.BigEndian.AppendUint32(p, 1) // track_ID
		p = append(p, make([]byte, 4+8)...)     // reserved, duration
	} else {
		p = append(p, make([]byte, 4+4)...)
		p = binary.BigEndian.AppendUint32(p, 1)
		p = append(p, make([]byte, 4+4)...)
	}
	p = append(p, make([]byte, 8+2+2+2+2)...) // reserved, layer, group, volume, reserved
	for _, m := range matrix {
		p = binary.BigEndian.AppendUint32(p, m)
	}
	p = binary.BigEndian.AppendUint32(p, w<<16)
	p = binary.BigEndian.AppendUint32(p, h<<16)
	return mp4Box("tkhd", p)
}

// videoFile builds ftyp, mdat, then moov with mvhd, an audio track and a
// video track of w×h, like a camera file that was not "fast-started".
func videoFile(version byte, timescale uint32, duration uint64, w, h uint32) []byte {
	return bytes.Join([][]byte{
		ftyp("isom"),
		mp4Box("mdat", bytes.Repeat([]byte{0xaa}, 1000)),
		mp4Box("moov",
			mvhd(version, timescale, duration),
			mp4Box("trak", tkhd(version, 0, 0, identity), mp4Box("mdia")),
			mp4Box("trak", tkhd(version, w, h, identity), mp4Box("mdia")),
		),
	}, nil)
}

// sparseFile is a ReaderAt of size bytes: head at the start, tail at the
// end, zeros between. It counts the bytes read, to prove that parsers read
// only what they need from huge files.
type sparseFile struct {
	head, tail []byte
	size       int64
	read       atomic.Int64
}

func (s *sparseFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if off >= s.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > s.size-off {
		n = int(s.size - off)
	}
	tailStart := s.size - int64(len(s.tail))
	for i := range n {
		o := off + int64(i)
		switch {
		case o < int64(len(s.head)):
			p[i] = s.head[o]
		case o >= tailStart:
			p[i] = s.tail[o-tailStart]
		default:
			p[i] = 0
		}
	}
	s.read.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
