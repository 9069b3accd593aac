package media

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// ISO base media file format (ISO/IEC 14496-12), as used by MP4, M4A and
// QuickTime. A file is a sequence of boxes (§4.2):
//
//	size (uint32 BE, the whole box) ‖ type (4 chars)
//	  [‖ largesize (uint64 BE) if size == 1]
//	  [size == 0: the box extends to the end of the file]
//	  [‖ usertype (16 bytes) if type == "uuid"]
//	‖ payload
//
// Only box headers and the small mvhd and tkhd payloads are read, so the
// memory used does not depend on the file; the sizes in headers are checked
// against their parent box, and the number of boxes visited is capped.
const (
	// mp4MaxBoxes bounds how many boxes are visited in all.
	mp4MaxBoxes = 4096
	// mp4MaxTracks bounds how many trak boxes are looked into.
	mp4MaxTracks = 64
)

type mp4Info struct {
	duration      time.Duration
	width, height int
}

type box struct {
	typ        string
	start, end int64 // payload offsets in the file
}

// boxReader walks boxes, counting them against mp4MaxBoxes.
type boxReader struct {
	r     io.ReaderAt
	count int
}

// children calls fn for each box in the payload [start, end) until fn
// returns done or an error.
func (br *boxReader) children(start, end int64, topLevel bool, fn func(box) (done bool, err error)) error {
	for off := start; off < end; {
		if br.count++; br.count > mp4MaxBoxes {
			return fmt.Errorf("%w: MP4: more than %d boxes", ErrMalformed, mp4MaxBoxes)
		}
		if end-off < 8 {
			return fmt.Errorf("%w: MP4: truncated box header at %d", ErrMalformed, off)
		}
		var hdr [16]byte
		if n, err := br.r.ReadAt(hdr[:8], off); n < 8 {
			return fmt.Errorf("media: reading MP4 box at %d: %w", off, err)
		}
		size := int64(binary.BigEndian.Uint32(hdr[:4]))
		typ := string(hdr[4:8])
		hlen := int64(8)
		switch size {
		case 1:
			if end-off < 16 {
				return fmt.Errorf("%w: MP4: truncated largesize at %d", ErrMalformed, off)
			}
			if n, err := br.r.ReadAt(hdr[8:16], off+8); n < 8 {
				return fmt.Errorf("media: reading MP4 box at %d: %w", off, err)
			}
			large := binary.BigEndian.Uint64(hdr[8:16])
			if large > uint64(end-off) {
				return fmt.Errorf("%w: MP4: %q box of %d bytes overruns its parent", ErrMalformed, typ, large)
			}
			size, hlen = int64(large), 16
		case 0:
			if !topLevel {
				return fmt.Errorf("%w: MP4: %q box of size 0 inside another box", ErrMalformed, typ)
			}
			size = end - off // to the end of the file (§4.2)
		}
		if typ == "uuid" {
			hlen += 16
		}
		if size < hlen {
			return fmt.Errorf("%w: MP4: %q box of %d bytes is smaller than its header", ErrMalformed, typ, size)
		}
		if size > end-off {
			return fmt.Errorf("%w: MP4: %q box of %d bytes overruns its parent", ErrMalformed, typ, size)
		}
		done, err := fn(box{typ: typ, start: off + hlen, end: off + size})
		if done || err != nil {
			return err
		}
		off += size
	}
	return nil
}

// readPayload reads up to n bytes of a box's payload.
func (br *boxReader) readPayload(b box, n int) ([]byte, error) {
	buf := make([]byte, min(int64(n), b.end-b.start))
	if m, err := br.r.ReadAt(buf, b.start); m < len(buf) {
		return nil, fmt.Errorf("media: reading MP4 %q box: %w", b.typ, err)
	}
	return buf, nil
}

// parseMP4 finds the top-level moov box and reads from it the movie
// duration (mvhd) and the size of the first track with a picture (tkhd).
func parseMP4(r io.ReaderAt, size int64) (mp4Info, error) {
	br := &boxReader{r: r}
	var info mp4Info
	foundMoov, foundMvhd := false, false
	err := br.children(0, size, true, func(b box) (bool, error) {
		if b.typ != "moov" {
			return false, nil
		}
		foundMoov = true
		tracks := 0
		err := br.children(b.start, b.end, false, func(c box) (bool, error) {
			switch c.typ {
			case "mvhd":
				if foundMvhd {
					return false, nil
				}
				foundMvhd = true
				p, err := br.readPayload(c, 32)
				if err != nil {
					return false, err
				}
				info.duration, err = parseMvhd(p)
				return false, err
			case "trak":
				if info.width != 0 || tracks >= mp4MaxTracks {
					return false, nil
				}
				tracks++
				return false, br.children(c.start, c.end, false, func(t box) (bool, error) {
					if t.typ != "tkhd" {
						return false, nil
					}
					p, err := br.readPayload(t, 96)
					if err != nil {
						return true, err
					}
					info.width, info.height, err = parseTkhd(p)
					return true, err
				})
			}
			return false, nil
		})
		return true, err
	})
	if err != nil {
		return mp4Info{}, err
	}
	if !foundMoov {
		return mp4Info{}, fmt.Errorf("%w: MP4: no moov box", ErrMalformed)
	}
	if !foundMvhd {
		return mp4Info{}, fmt.Errorf("%w: MP4: no mvhd box", ErrMalformed)
	}
	return info, nil
}

// parseMvhd reads the movie header (§8.2.2), a full box:
//
//	version (1) ‖ flags (3)
//	version 0: creation_time (4) ‖ modification_time (4) ‖ timescale (4) ‖ duration (4)
//	version 1: creation_time (8) ‖ modification_time (8) ‖ timescale (4) ‖ duration (8)
//
// A duration of all ones means unknown, and gives 0.
func parseMvhd(p []byte) (time.Duration, error) {
	if len(p) < 4 {
		return 0, fmt.Errorf("%w: MP4: mvhd of %d bytes", ErrMalformed, len(p))
	}
	var timescale, duration uint64
	switch p[0] {
	case 0:
		if len(p) < 20 {
			return 0, fmt.Errorf("%w: MP4: mvhd v0 of %d bytes", ErrMalformed, len(p))
		}
		timescale = uint64(binary.BigEndian.Uint32(p[12:16]))
		duration = uint64(binary.BigEndian.Uint32(p[16:20]))
		if duration == 0xffffffff {
			return 0, nil
		}
	case 1:
		if len(p) < 32 {
			return 0, fmt.Errorf("%w: MP4: mvhd v1 of %d bytes", ErrMalformed, len(p))
		}
		timescale = uint64(binary.BigEndian.Uint32(p[20:24]))
		duration = binary.BigEndian.Uint64(p[24:32])
		if duration == 1<<64-1 {
			return 0, nil
		}
	default:
		return 0, fmt.Errorf("%w: MP4: mvhd version %d", ErrMalformed, p[0])
	}
	return scaleDuration(duration, timescale)
}

// parseTkhd reads the width and height of a track header (§8.3.2), a full
// box whose fixed fields are 80 bytes after version and flags in version 0
// and 92 in version 1:
//
//	v0: creation (4) modification (4) track_ID (4) reserved (4) duration (4)
//	v1: creation (8) modification (8) track_ID (4) reserved (4) duration (8)
//	then: reserved (8) layer (2) alternate_group (2) volume (2) reserved (2)
//	      matrix (9 × 4) width (4, 16.16) height (4, 16.16)
//
// Tracks without a picture have width and height 0. When the matrix turns
// the picture by 90° or 270° (a = d = 0), width and height are swapped, so
// that they describe the picture as shown.
func parseTkhd(p []byte) (w, h int, err error) {
	if len(p) < 4 {
		return 0, 0, fmt.Errorf("%w: MP4: tkhd of %d bytes", ErrMalformed, len(p))
	}
	var matrix int
	switch p[0] {
	case 0:
		matrix = 4 + 36
	case 1:
		matrix = 4 + 48
	default:
		return 0, 0, fmt.Errorf("%w: MP4: tkhd version %d", ErrMalformed, p[0])
	}
	if len(p) < matrix+36+8 {
		return 0, 0, fmt.Errorf("%w: MP4: tkhd v%d of %d bytes", ErrMalformed, p[0], len(p))
	}
	wh := p[matrix+36:]
	w = int(binary.BigEndian.Uint32(wh[0:4]) >> 16)
	h = int(binary.BigEndian.Uint32(wh[4:8]) >> 16)
	a := binary.BigEndian.Uint32(p[matrix : matrix+4])
	d := binary.BigEndian.Uint32(p[matrix+16 : matrix+20])
	if a == 0 && d == 0 {
		w, h = h, w
	}
	return w, h, nil
}
