package media

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Ogg framing, RFC 3533 §6: a page is a 27-byte header, a segment table
// of page_segments bytes, and the body (the sum of the segment lengths).
//
//	 0  capture_pattern "OggS"
//	 4  stream_structure_version (0)
//	 5  header_type_flag (0x01 continued, 0x02 first page, 0x04 last page)
//	 6  granule_position (int64, little-endian)
//	14  bitstream_serial_number (uint32 LE)
//	18  page_sequence_number (uint32 LE)
//	22  CRC_checksum (uint32 LE)
//	26  number_page_segments
//	27  segment_table
const (
	oggHeaderLen = 27
	// oggMaxPage is the largest possible page: header, 255 segment
	// lengths and 255 segments of 255 bytes.
	oggMaxPage = oggHeaderLen + 255 + 255*255
	// oggTail is how much of the end of the file is searched for the last
	// page. A page is at most oggMaxPage (about 64 KiB) long, and real
	// encoders write pages of a few KiB, so the last page's start is in
	// this window unless the file ends in garbage.
	oggTail = 64 << 10
	// opusRate is the rate of Opus granule positions: always 48 kHz,
	// whatever the input sample rate (RFC 7845 §4).
	opusRate = 48000
	// oggMaxCandidates bounds how many "OggS" patterns in the tail are
	// checksummed, so a tail full of fake capture patterns costs little.
	oggMaxCandidates = 64
)

// The tail must hold a whole page: this fails to compile if it cannot.
const _ = uint(oggTail - oggMaxPage)

type oggPage struct {
	flags   byte
	granule int64
	serial  uint32
	body    []byte
}

// parseOggPage parses the page at the start of b. It returns the page and
// its total length, or ok=false if b does not start with a complete page
// whose CRC matches.
func parseOggPage(b []byte) (p oggPage, n int, ok bool) {
	if len(b) < oggHeaderLen || string(b[:4]) != "OggS" || b[4] != 0 {
		return p, 0, false
	}
	segs := int(b[26])
	if len(b) < oggHeaderLen+segs {
		return p, 0, false
	}
	bodyLen := 0
	for _, s := range b[oggHeaderLen : oggHeaderLen+segs] {
		bodyLen += int(s)
	}
	n = oggHeaderLen + segs + bodyLen
	if len(b) < n || oggCRC(b[:n]) != binary.LittleEndian.Uint32(b[22:26]) {
		return p, 0, false
	}
	return oggPage{
		flags:   b[5],
		granule: int64(binary.LittleEndian.Uint64(b[6:14])),
		serial:  binary.LittleEndian.Uint32(b[14:18]),
		body:    b[oggHeaderLen+segs : n],
	}, n, true
}

// oggOpusDuration returns the duration of an Ogg Opus stream, or opus=false
// (and no error) for a valid Ogg stream of another codec. Per RFC 7845 §4
// the duration is (last granule position − pre-skip) / 48000 s, where the
// pre-skip comes from the OpusHead packet on the first page (§5.1) and the
// granule position from the stream's last page, found by reading at most
// oggTail bytes backwards from the end. It reads the first page's
// header, then that page (at most oggMaxPage), then at most oggTail bytes.
func oggOpusDuration(r io.ReaderAt, size int64) (d time.Duration, opus bool, err error) {
	first, err := readFirstPage(r, size)
	if err != nil {
		return 0, false, err
	}
	p, _, ok := parseOggPage(first)
	if !ok {
		return 0, false, fmt.Errorf("%w: Ogg: bad first page", ErrMalformed)
	}
	if p.flags&0x02 == 0 {
		return 0, false, fmt.Errorf("%w: Ogg: first page lacks the beginning-of-stream flag", ErrMalformed)
	}
	if len(p.body) < 8 || string(p.body[:8]) != "OpusHead" {
		return 0, false, nil // another codec: described as a document
	}
	preSkip, err := parseOpusHead(p.body)
	if err != nil {
		return 0, true, err
	}
	granule, err := lastGranule(r, size, p.serial)
	if err != nil {
		return 0, true, err
	}
	if granule < int64(preSkip) {
		return 0, true, fmt.Errorf("%w: Opus: last granule position %d is below the pre-skip %d", ErrMalformed, granule, preSkip)
	}
	d, err = scaleDuration(uint64(granule-int64(preSkip)), opusRate)
	return d, true, err
}

// readFirstPage reads the page at offset 0: its header and segment table
// first, then exactly the body they announce.
func readFirstPage(r io.ReaderAt, size int64) ([]byte, error) {
	hdr := make([]byte, min(size, oggHeaderLen+255))
	if n, err := r.ReadAt(hdr, 0); n < len(hdr) {
		return nil, fmt.Errorf("media: reading Ogg first page: %w", err)
	}
	if len(hdr) < oggHeaderLen || len(hdr) < oggHeaderLen+int(hdr[26]) {
		return nil, fmt.Errorf("%w: Ogg: truncated first page header", ErrMalformed)
	}
	segs := int(hdr[26])
	n := oggHeaderLen + segs
	for _, s := range hdr[oggHeaderLen:n] {
		n += int(s)
	}
	if int64(n) > size {
		return nil, fmt.Errorf("%w: Ogg: truncated first page", ErrMalformed)
	}
	page := make([]byte, n)
	if m, err := r.ReadAt(page, 0); m < n {
		return nil, fmt.Errorf("media: reading Ogg first page: %w", err)
	}
	return page, nil
}

// parseOpusHead checks an identification header (RFC 7845 §5.1) and
// returns its pre-skip:
//
//	 0  "OpusHead"
//	 8  version (major version in the high nibble must be 0)
//	 9  output channel count (≥ 1)
//	10  pre-skip (uint16 LE, in 48 kHz samples)
//	12  input sample rate (uint32 LE)
//	16  output gain (int16 LE)
//	18  channel mapping family
func parseOpusHead(b []byte) (uint16, error) {
	switch {
	case len(b) < 19:
		return 0, fmt.Errorf("%w: OpusHead of %d bytes", ErrMalformed, len(b))
	case b[8]&0xf0 != 0:
		return 0, fmt.Errorf("%w: OpusHead version %d", ErrMalformed, b[8])
	case b[9] == 0:
		return 0, fmt.Errorf("%w: OpusHead with no channels", ErrMalformed)
	}
	return binary.LittleEndian.Uint16(b[10:12]), nil
}

// lastGranule finds the last page of stream serial within the final
// oggTail bytes that has a granule position (-1 means none, RFC 3533 §6)
// and returns that position. Every candidate "OggS" must parse as a whole
// page with a valid CRC, so a capture pattern inside packet data is
// skipped.
func lastGranule(r io.ReaderAt, size int64, serial uint32) (int64, error) {
	off := max(0, size-oggTail)
	tail := make([]byte, size-off)
	if n, err := r.ReadAt(tail, off); n < len(tail) {
		return 0, fmt.Errorf("media: reading Ogg tail: %w", err)
	}
	candidates := 0
	for i := len(tail) - oggHeaderLen; i >= 0; i-- {
		if tail[i] != 'O' || string(tail[i:i+4]) != "OggS" {
			continue
		}
		if candidates++; candidates > oggMaxCandidates {
			break
		}
		p, _, ok := parseOggPage(tail[i:])
		if ok && p.serial == serial && p.granule != -1 {
			if p.granule < 0 {
				return 0, fmt.Errorf("%w: Ogg: negative granule position", ErrMalformed)
			}
			return p.granule, nil
		}
	}
	return 0, fmt.Errorf("%w: Ogg: no complete last page with a granule position found", ErrMalformed)
}

// oggCRCTable is the CRC-32 of RFC 3533 §6: generator polynomial
// 0x04c11db7, initial value 0, no reflection, no final XOR, computed with
// the CRC field itself set to zero.
var oggCRCTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04c11db7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// oggCRC returns the checksum of a whole page, treating bytes 22..25 (the
// checksum field) as zero.
func oggCRC(page []byte) uint32 {
	var c uint32
	for i, b := range page {
		if i >= 22 && i < 26 {
			b = 0
		}
		c = c<<8 ^ oggCRCTable[byte(c>>24)^b]
	}
	return c
}
