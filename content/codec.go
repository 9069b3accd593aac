package content

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
)

// MaxText is the longest text message, in bytes.
const MaxText = 64 << 10

// ErrMalformed is wrapped by every decode failure.
var ErrMalformed = errors.New("content: malformed")

// Decode parses a payload from another client (untrusted input).
func Decode(b []byte) (*Content, error) {
	var c Content
	if err := proto.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, t := range []*Text{c.GetText(), c.GetSent().GetText()} {
		if t != nil && (len(t.GetBody()) > MaxText || !utf8.ValidString(t.GetBody())) {
			return nil, fmt.Errorf("%w: text longer than %d bytes or not UTF-8", ErrMalformed, MaxText)
		}
	}
	if s := c.GetSent(); s != nil && (len(s.GetClientMessageId()) != 16 || (s.GetText() == nil && s.GetAttachment() == nil) || len(s.GetDestination()) > 64) {
		return nil, fmt.Errorf("%w: sent transcript needs a destination, a 16-byte id and a text or attachment", ErrMalformed)
	}
	if r := c.GetReceipt(); r != nil {
		if len(r.GetMessageIds()) == 0 || len(r.GetMessageIds()) > MaxReceiptIDs {
			return nil, fmt.Errorf("%w: a receipt names 1 to %d messages", ErrMalformed, MaxReceiptIDs)
		}
		for _, id := range r.GetMessageIds() {
			if len(id) != 16 {
				return nil, fmt.Errorf("%w: a receipt's message id is not 16 bytes", ErrMalformed)
			}
		}
	}
	for _, a := range []*Attachment{c.GetAttachment(), c.GetSent().GetAttachment()} {
		if a == nil {
			continue
		}
		if len(a.GetBlobId()) != 16 || len(a.GetKey()) != 32 || len(a.GetDigest()) != 32 ||
			len(a.GetThumbnail()) > MaxThumbnail || len(a.GetFileName()) > 255 || len(a.GetMime()) > 128 ||
			len(a.GetKind()) > 16 || len(a.GetCaption()) > MaxText || !utf8.ValidString(a.GetFileName()+a.GetCaption()) {
			return nil, fmt.Errorf("%w: attachment fields out of bounds", ErrMalformed)
		}
	}
	return &c, nil
}

// MaxThumbnail bounds an attachment's inline thumbnail.
const MaxThumbnail = 64 << 10

// MaxReceiptIDs bounds the messages one receipt names.
const MaxReceiptIDs = 256

// ErrTextTooLong: a text over MaxText bytes (send it as a file instead).
var ErrTextTooLong = fmt.Errorf("content: text longer than %d KiB", MaxText>>10)

// EncodeSent encodes a transcript of what this user sent to destination:
// the content c of message id (a text or an attachment), written at c's
// timestamp.
func EncodeSent(destination string, id [16]byte, c *Content) ([]byte, error) {
	t := &SentTranscript{Destination: destination, ClientMessageId: id[:], Text: c.GetText(), Attachment: c.GetAttachment(), TimestampMs: c.GetTimestampMs()}
	return proto.Marshal(&Content{Body: &Content_Sent{Sent: t}})
}

// EncodeText encodes a text message written at the time at.
func EncodeText(s string, at time.Time) ([]byte, error) {
	if len(s) > MaxText {
		return nil, ErrTextTooLong
	}
	return proto.Marshal(&Content{Body: &Content_Text{Text: &Text{Body: s}}, TimestampMs: timestamp(at)})
}

// EncodeAttachment encodes an attachment message written at the time at.
func EncodeAttachment(a *Attachment, at time.Time) ([]byte, error) {
	return proto.Marshal(&Content{Body: &Content_Attachment{Attachment: a}, TimestampMs: timestamp(at)})
}

// EncodeReadReceipt encodes a receipt saying the messages ids were read
// (at most MaxReceiptIDs).
func EncodeReadReceipt(ids [][]byte) ([]byte, error) {
	if len(ids) == 0 || len(ids) > MaxReceiptIDs {
		return nil, fmt.Errorf("content: a receipt names 1 to %d messages, not %d", MaxReceiptIDs, len(ids))
	}
	return proto.Marshal(&Content{Body: &Content_Receipt{Receipt: &Receipt{Kind: Receipt_KIND_READ, MessageIds: ids}}})
}

func timestamp(at time.Time) uint64 {
	if at.UnixMilli() <= 0 {
		return 0
	}
	return uint64(at.UnixMilli())
}

// EncodeTyping encodes a typing indicator.
func EncodeTyping(started bool) []byte {
	b, _ := proto.Marshal(&Content{Body: &Content_Typing{Typing: &Typing{Started: started}}})
	return b
}
