package media

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"

	// Decoders for image.DecodeConfig and image.Decode; JPEG is imported
	// above for encoding thumbnails.
	_ "image/gif"
	_ "image/png"

	"golang.org/x/image/draw"
)

// thumbnailQualities are the JPEG qualities tried in turn until the
// thumbnail fits in ThumbnailMaxBytes.
var thumbnailQualities = []int{70, 60, 50, 40, 30, 20, 10}

// inspectImage fills in the size of a JPEG, PNG or GIF image from its
// header and, unless it has more than MaxPixels, a thumbnail.
func inspectImage(info *Info, r io.ReaderAt, size int64) error {
	cfg, format, err := image.DecodeConfig(bufio.NewReader(io.NewSectionReader(r, 0, size)))
	if err != nil {
		return fmt.Errorf("%w: image header: %v", ErrMalformed, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return fmt.Errorf("%w: %s image of %d×%d pixels", ErrMalformed, format, cfg.Width, cfg.Height)
	}
	info.Width, info.Height = cfg.Width, cfg.Height
	if int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		// A decompression bomb, or just a huge picture: the decoders
		// allocate the whole image up front, so do not decode it.
		return nil
	}
	// For GIF, image.Decode returns the first frame.
	img, _, err := image.Decode(bufio.NewReader(io.NewSectionReader(r, 0, size)))
	if err != nil {
		return fmt.Errorf("%w: %s image data: %v", ErrMalformed, format, err)
	}
	info.Thumbnail = thumbnail(img)
	return nil
}

// thumbnail scales img to at most ThumbnailMaxSide pixels on its longer
// side (never up), flattens transparency onto white, and encodes it as a
// JPEG of at most ThumbnailMaxBytes, lowering the quality as needed. It
// returns nil if even the lowest quality is too large.
func thumbnail(img image.Image) []byte {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil
	}
	tw, th := w, h
	if max(w, h) > ThumbnailMaxSide {
		if w >= h {
			tw, th = ThumbnailMaxSide, max(1, (h*ThumbnailMaxSide+w/2)/w)
		} else {
			tw, th = max(1, (w*ThumbnailMaxSide+h/2)/h), ThumbnailMaxSide
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Over, nil)
	var buf bytes.Buffer
	for _, q := range thumbnailQualities {
		buf.Reset()
		if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: q}); err != nil {
			return nil
		}
		if buf.Len() <= ThumbnailMaxBytes {
			return bytes.Clone(buf.Bytes())
		}
	}
	return nil
}
