package content

import (
	"errors"
	"fmt"
	"strings"
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
	if g := c.GetGroupId(); g != nil && len(g) != GroupIDSize {
		return nil, fmt.Errorf("%w: a group id is %d bytes", ErrMalformed, GroupIDSize)
	}
	if sk := c.GetSenderKey(); sk != nil && (len(sk.GetGroupId()) != GroupIDSize || len(sk.GetDistribution()) == 0 || len(sk.GetDistribution()) > MaxDistribution) {
		return nil, fmt.Errorf("%w: a sender key names a %d-byte group and carries 1 to %d bytes", ErrMalformed, GroupIDSize, MaxDistribution)
	}
	if r := c.GetSenderKeyRequest(); r != nil && len(r.GetGroupId()) != GroupIDSize {
		return nil, fmt.Errorf("%w: a sender key request names a %d-byte group", ErrMalformed, GroupIDSize)
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

// GroupIDSize is the size of a group id; MaxDistribution bounds a sender
// key distribution message.
const (
	GroupIDSize     = 16
	MaxDistribution = 1024
)

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

// InGroup returns the encoded content b with its group set to group: what
// a group member encrypts, so that the group is inside the ciphertext.
func InGroup(b []byte, group [GroupIDSize]byte) ([]byte, error) {
	var c Content
	if err := proto.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	c.GroupId = group[:]
	return proto.Marshal(&c)
}

// EncodeSenderKey encodes a sender key distribution message for a group
// (sent 1:1 to each member device).
func EncodeSenderKey(group [GroupIDSize]byte, distribution []byte) ([]byte, error) {
	if len(distribution) == 0 || len(distribution) > MaxDistribution {
		return nil, fmt.Errorf("%w: a sender key distribution is 1 to %d bytes", ErrMalformed, MaxDistribution)
	}
	return proto.Marshal(&Content{Body: &Content_SenderKey{SenderKey: &SenderKeyDistribution{GroupId: group[:], Distribution: distribution}}})
}

// EncodeSenderKeyRequest asks a member for its sender key for a group.
func EncodeSenderKeyRequest(group [GroupIDSize]byte) []byte {
	b, _ := proto.Marshal(&Content{Body: &Content_SenderKeyRequest{SenderKeyRequest: &SenderKeyRequest{GroupId: group[:]}}})
	return b
}

// MaxAvatar bounds a group's picture (the image, before encryption).
const MaxAvatar = 512 << 10

// EncodeAvatar encodes where a group's picture is and how to read it: an
// attachment pointer (blob id, key, digest, sizes, MIME type), which the
// group's log carries as its opaque avatar field.
func EncodeAvatar(a *Attachment) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return nil, err
	}
	if _, err := DecodeAvatar(b); err != nil {
		return nil, err
	}
	return b, nil
}

// DecodeAvatar parses a group's avatar pointer (untrusted input: any
// member who may edit the group's info wrote it).
func DecodeAvatar(b []byte) (*Attachment, error) {
	var a Attachment
	if err := proto.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%w: avatar: %v", ErrMalformed, err)
	}
	if len(a.GetBlobId()) != 16 || len(a.GetKey()) != 32 || len(a.GetDigest()) != 32 || a.GetSize() == 0 ||
		a.GetSize() > MaxAvatar || a.GetBlobSize() < a.GetSize() || a.GetBlobSize() > 2*MaxAvatar ||
		len(a.GetMime()) > 128 || !strings.HasPrefix(a.GetMime(), "image/") || len(a.GetThumbnail()) > 0 || a.GetCaption() != "" {
		return nil, fmt.Errorf("%w: an avatar is an image of 1 byte to %d KiB, with a 16-byte blob id, 32-byte key and digest", ErrMalformed, MaxAvatar>>10)
	}
	return &a, nil
}
