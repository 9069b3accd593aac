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
	if s := c.GetSent(); s != nil && (len(s.GetClientMessageId()) != 16 || s.GetText() == nil || len(s.GetDestination()) > 64) {
		return nil, fmt.Errorf("%w: sent transcript needs a destination, a 16-byte id and a text", ErrMalformed)
	}
	return &c, nil
}

// EncodeSent encodes a transcript of a text this user sent to destination.
func EncodeSent(destination string, id [16]byte, text string) ([]byte, error) {
	return proto.Marshal(&Content{Body: &Content_Sent{Sent: &SentTranscript{
		Destination: destination, ClientMessageId: id[:], Text: &Text{Body: text},
	}}})
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
