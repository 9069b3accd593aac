// Package media tells what kind of file an attachment is before it is
// encrypted: its MIME type, whether to show it as an image, voice note,
// video or document, its pixel size or duration, and a small JPEG
// thumbnail for images. The result goes into the end-to-end message next to
// the attachment key, so the recipient can lay out the message before
// downloading anything.
//
// Everything here reads files that a user picked, which may have come from
// anyone, so every parser reads only what it needs through an io.ReaderAt,
// checks every size and count in a header against the file's real size and
// against fixed limits, and never allocates in proportion to a header's
// claims (except image decoding, which is refused above MaxPixels).
//
// Formats and the specifications followed:
//   - MIME sniffing: net/http.DetectContentType (WHATWG MIME Sniffing),
//     refined by the file's extension and content for Ogg and ISO base media
//     files, which it reports as application/ogg or not at all.
//   - Images: JPEG, PNG and GIF (first frame) with the standard library's
//     decoders; thumbnails scaled with golang.org/x/image/draw.
//   - Ogg Opus voice notes: RFC 3533 (Ogg pages) and RFC 7845 (Opus in Ogg).
//   - MP4, M4A and QuickTime: ISO/IEC 14496-12 (ISO base media file format)
//     boxes moov, mvhd, trak and tkhd.
package media

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net/http"
	"path"
	"strings"
	"time"
)

// Kinds of attachment, for Info.Kind.
const (
	KindImage    = "image"
	KindVoice    = "voice"
	KindVideo    = "video"
	KindDocument = "document"
)

// Info describes an attachment.
type Info struct {
	MIME string
	// Kind is KindImage, KindVoice, KindVideo or KindDocument.
	Kind string
	// Width and Height are in pixels, for images and video (0 if unknown).
	Width, Height int
	// Duration is for voice notes and video (0 if unknown).
	Duration time.Duration
	// Thumbnail is a JPEG of at most ThumbnailMaxSide pixels on its longer
	// side and at most ThumbnailMaxBytes, for images; nil if none was made.
	Thumbnail []byte
}

// Limits.
const (
	// SniffLen is how many bytes DetectContentType looks at.
	SniffLen = 512
	// MaxPixels is the largest image (width × height) that is decoded to
	// make a thumbnail; larger ones, and decompression bombs that claim to
	// be, are described by size only.
	MaxPixels = 40_000_000
	// ThumbnailMaxSide bounds the thumbnail's longer side, in pixels.
	ThumbnailMaxSide = 320
	// ThumbnailMaxBytes bounds the thumbnail's encoded size.
	ThumbnailMaxBytes = 32 << 10
)

var (
	// ErrMalformed means the file claims a format (by its content) but is
	// not a valid file of that format: truncated, inconsistent, or beyond
	// a limit.
	ErrMalformed = errors.New("media: malformed file")
	// ErrInvalidSize means Inspect was given a negative size.
	ErrInvalidSize = errors.New("media: invalid size")
)

// Inspect describes the file called name (only its extension is used) of
// size bytes, read through r. It reads the first SniffLen bytes and then
// only what the detected format needs.
//
// On error (which wraps ErrMalformed or an error from r), the returned Info
// still holds the sniffed MIME type and Kind KindDocument, so the caller can
// fall back to sending the file as a document.
func Inspect(name string, r io.ReaderAt, size int64) (Info, error) {
	if size < 0 {
		return Info{}, fmt.Errorf("%w: %d", ErrInvalidSize, size)
	}
	head := make([]byte, min(size, SniffLen))
	if n, err := r.ReadAt(head, 0); n < len(head) {
		return Info{MIME: "application/octet-stream", Kind: KindDocument},
			fmt.Errorf("media: reading the first %d bytes: %w", len(head), err)
	}
	mime := sniff(name, head)
	info := Info{MIME: mime, Kind: KindDocument}
	var err error
	switch mime {
	case "image/jpeg", "image/png", "image/gif":
		info.Kind = KindImage
		err = inspectImage(&info, r, size)
	case "audio/ogg":
		var d time.Duration
		var opus bool
		d, opus, err = oggOpusDuration(r, size)
		if err == nil && opus {
			info.Kind, info.Duration = KindVoice, d
		}
	case "audio/mp4", "video/mp4":
		var m mp4Info
		m, err = parseMP4(r, size)
		if err == nil {
			info.Duration = m.duration
			if mime == "audio/mp4" {
				info.Kind = KindVoice
			} else {
				info.Kind = KindVideo
				info.Width, info.Height = m.width, m.height
			}
		}
	}
	if err != nil {
		return Info{MIME: mime, Kind: KindDocument}, err
	}
	return info, nil
}

// sniff returns the MIME type of a file from its first bytes, refined by
// its extension and content for the containers DetectContentType misses:
// Ogg (it says application/ogg; a .ogg or .opus file is audio) and ISO base
// media files other than the "mp4" brands (M4A, QuickTime). The extension
// alone never decides: the content must be of that container.
func sniff(name string, head []byte) string {
	mime := http.DetectContentType(head)
	if i := strings.IndexByte(mime, ';'); i >= 0 {
		mime = mime[:i] // drop "; charset=utf-8"
	}
	ext := strings.ToLower(path.Ext(strings.ReplaceAll(name, `\`, "/")))
	isOgg := len(head) >= 4 && string(head[:4]) == "OggS"
	if isOgg {
		// RFC 7845 §9 registers audio/ogg for Ogg Opus; an Ogg file with
		// another codec or named otherwise keeps application/ogg unless
		// it turns out to hold Opus.
		if ext == ".ogg" || ext == ".opus" || ext == ".oga" || hasOpusHead(head) {
			return "audio/ogg"
		}
		return mime
	}
	if !isBMFF(head) {
		return mime
	}
	brand := ""
	if string(head[4:8]) == "ftyp" && len(head) >= 12 {
		brand = string(head[8:12])
	}
	switch {
	case ext == ".m4a" || brand == "M4A " || brand == "M4B ":
		return "audio/mp4"
	case ext == ".mp4" || ext == ".mov" || ext == ".m4v" || brand == "qt  " || mime == "video/mp4":
		return "video/mp4"
	}
	return mime
}

// hasOpusHead reports whether the first Ogg page in head carries an Opus
// identification header (RFC 7845 §5.1).
func hasOpusHead(head []byte) bool {
	if len(head) < 27 {
		return false
	}
	start := 27 + int(head[26])
	return len(head) >= start+8 && string(head[start:start+8]) == "OpusHead"
}

// isBMFF reports whether head starts with an ISO base media file box that
// such files begin with (ISO/IEC 14496-12 §4.3: ftyp should come first;
// older QuickTime files may start with other top-level boxes).
func isBMFF(head []byte) bool {
	if len(head) < 8 {
		return false
	}
	switch string(head[4:8]) {
	case "ftyp", "moov", "mdat", "wide", "free", "skip":
		return true
	}
	return false
}

// scaleDuration returns units/timescale seconds as a Duration, failing
// instead of overflowing.
func scaleDuration(units, timescale uint64) (time.Duration, error) {
	if timescale == 0 {
		return 0, fmt.Errorf("%w: zero timescale", ErrMalformed)
	}
	hi, lo := bits.Mul64(units, uint64(time.Second))
	if hi >= timescale {
		return 0, fmt.Errorf("%w: duration out of range", ErrMalformed)
	}
	q, _ := bits.Div64(hi, lo, timescale)
	if q > math.MaxInt64 {
		return 0, fmt.Errorf("%w: duration out of range", ErrMalformed)
	}
	return time.Duration(q), nil
}
