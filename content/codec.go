package content

import (
	"errors"
	"fmt"
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

// EncodeSent encodes a transcript of what this user sent to destination:
// the content c of message id (a text or an attachment).
func EncodeSent(destination string, id [16]byte, c *Content) ([]byte, error) {
	t := &SentTranscript{Destination: destination, ClientMessageId: id[:], Text: c.GetText(), Attachment: c.GetAttachment()}
	return proto.Marshal(&Content{Body: &Content_Sent{Sent: t}})
}

// EncodeText encodes a text message.
func EncodeText(s string) ([]byte, error) {
	if len(s) > MaxText {
		return nil, fmt.Errorf("content: text of %d bytes exceeds %d", len(s), MaxText)
	}
	return proto.Marshal(&Content{Body: &Content_Text{Text: &Text{Body: s}}})
}

// EncodeTyping encodes a typing indicator.
func EncodeTyping(started bool) []byte {
	b, _ := proto.Marshal(&Content{Body: &Content_Typing{Typing: &Typing{Started: started}}})
	return b
}
