package client

import (
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/internal/clientconn"
)

// MessageID is the 16-byte id a sender gives a message. The server stores a
// resend with the same id once, and receipts name it.
type MessageID [16]byte

func (id MessageID) String() string { return hex.EncodeToString(id[:]) }

// NewMessageID returns a random message id.
func NewMessageID() MessageID { return MessageID(clientconn.NewMessageID()) }

// ParseMessageID reads the hex form of a MessageID.
func ParseMessageID(s string) (MessageID, error) {
	var id MessageID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, errBadID
	}
	return MessageID(b), nil
}

// MessageState is where a message stands.
type MessageState string

// Outgoing messages go queued → (uploading) → sent → delivered → read, or
// end failed; incoming ones are received or unreadable.
const (
	StateQueued     MessageState = "queued"     // in the outbox: not yet stored by the server
	StateUploading  MessageState = "uploading"  // its attachment is uploading
	StateSent       MessageState = "sent"       // stored by the server
	StateDelivered  MessageState = "delivered"  // a device of the recipient has it
	StateRead       MessageState = "read"       // the recipient has seen it
	StateFailed     MessageState = "failed"     // refused for good (Message.Err says why)
	StateReceived   MessageState = "received"   // an incoming message
	StateUnreadable MessageState = "unreadable" // an incoming envelope that could not be decrypted or read
)

// Message is one message of the history.
type Message struct {
	// Seq is this client's handle for the message: unique in the home,
	// increasing in the order messages entered the history.
	Seq  uint64
	ID   MessageID
	Peer string // the conversation: the other user, or a group (GroupID.Peer)
	// Sender is who wrote it: this account for outgoing messages, the peer
	// or a group's member for incoming ones; for a notice, whoever changed
	// the group ("" when nobody did).
	Sender   string
	Outgoing bool
	// FromDevice is the sender's device, for incoming messages.
	FromDevice uint32
	// Text is the text, or an attachment's caption.
	Text string
	// Composed is when the sender wrote it: what both ends show.
	Composed time.Time
	// ServerTime is when the server stored it; zero while queued.
	ServerTime time.Time
	State      MessageState
	Delivered  time.Time // first delivery to a device of the peer
	Read       time.Time // first read receipt
	Err        string    // why it failed, or could not be read
	// ErrCode classifies a failure: "unknown_user", "identity_changed",
	// "too_large", "no_keys", "quota", "tampered" or "refused".
	ErrCode string
	// Unread is set on incoming messages not yet marked read (MarkRead).
	Unread     bool
	Attachment *Attachment
	// Notice: a line about a group's membership or settings (Text), not a
	// message anyone wrote.
	Notice bool
	// For a message this account sent to a group: how many members it
	// went to, and which of them have it (a device of theirs) and have read
	// it: "delivered to 7 of 9, read by 3". State is delivered (read) once
	// all of them have it (have read it).
	Recipients  int
	DeliveredTo []string
	ReadBy      []string
	// Expires is when the message disappears from this device, in a
	// group whose messages disappear; zero otherwise.
	Expires time.Time
}

// TransferState is where an attachment's transfer stands.
type TransferState string

const (
	TransferStaged      TransferState = "staged"      // outgoing: encrypted locally, waiting to upload
	TransferUploading   TransferState = "uploading"   // outgoing: uploading
	TransferUploaded    TransferState = "uploaded"    // outgoing: on the server
	TransferWaiting     TransferState = "waiting"     // incoming: queued for download
	TransferDownloading TransferState = "downloading" // incoming: downloading
	TransferSaved       TransferState = "saved"       // incoming: verified and saved (Path)
	TransferFailed      TransferState = "failed"      // Err says why
)

// Attachment describes a message's photo, video, voice note or file.
type Attachment struct {
	Kind     string // image, voice, video, document
	MIME     string
	Name     string
	Size     int64 // bytes of the file
	Width    int   // images and videos
	Height   int
	Duration time.Duration // voice notes and videos
	// HasThumbnail says whether Client.Thumbnail has a small JPEG.
	HasThumbnail bool
	State        TransferState
	Done, Total  int64 // bytes of the transfer so far, and in all
	Err          string
	// Path is where an incoming attachment was saved.
	Path string
}

// Conversation is one peer's thread: a user's, or a group's.
type Conversation struct {
	Peer string
	// Group is set for a group's conversation, with the group's name.
	Group  *GroupID
	Name   string
	Unread int
	Last   *Message
	// Verified: the user compared safety numbers with Peer.
	Verified bool
	// IdentityChanged: Peer's safety number changed since it was verified;
	// sending to them is refused until it is verified again.
	IdentityChanged bool
}

// msgRecord is a Message as stored (sealed).
type msgRecord struct {
	Seq       uint64       `json:"seq"`
	ID        []byte       `json:"id"`
	Peer      string       `json:"peer"`
	Outgoing  bool         `json:"out,omitempty"`
	Device    uint32       `json:"dev,omitempty"`
	Text      string       `json:"text,omitempty"`
	Content   []byte       `json:"content,omitempty"` // encoded content.Content of an attachment (its key, digest, blob id)
	Composed  int64        `json:"composed"`          // Unix ms
	Stored    int64        `json:"stored"`            // Unix ms this client stored it
	Server    int64        `json:"server,omitempty"`
	Delivered int64        `json:"delivered,omitempty"`
	Read      int64        `json:"read,omitempty"`
	State     MessageState `json:"state"`
	Err       string       `json:"err,omitempty"`
	ErrCode   string       `json:"err_code,omitempty"`
	Transfer  *xferState   `json:"xfer,omitempty"`
	// Groups: who wrote it (incoming; Peer is the group), whether it is a
	// notice, and, for what this account sent, how many members it went to
	// and who has it and has read it.
	From        string   `json:"from,omitempty"`
	Notice      bool     `json:"notice,omitempty"`
	Recipients  int      `json:"rcpt,omitempty"`
	DeliveredTo []string `json:"delivered_to,omitempty"`
	ReadBy      []string `json:"read_by,omitempty"`
	// Expire is when it disappears from this device (Unix ms; 0: never).
	Expire int64 `json:"expire,omitempty"`
}

// sender is who wrote r (me: this account).
func (r *msgRecord) sender(me string) string {
	switch {
	case r.From != "" || r.Notice:
		return r.From
	case r.Outgoing:
		return me
	}
	return r.Peer
}

// xferState is what the history shows of an attachment's transfer.
type xferState struct {
	State TransferState `json:"state"`
	Done  int64         `json:"done,omitempty"`
	Total int64         `json:"total,omitempty"`
	Err   string        `json:"err,omitempty"`
	Path  string        `json:"path,omitempty"`
	// Staged is the sealed copy of an outgoing attachment (ciphertext, in
	// Home/files), which is also what this client shows of it.
	Staged string `json:"staged,omitempty"`
}

// msgKey is the key of a message in nsMsg: the conversation's messages are
// one key range, in Seq order.
func msgKey(peer string, seq uint64) string { return peer + "/" + seqKey(seq) }

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// attachment returns the record's attachment content, if any. The record
// was checked when it arrived (or made here, before its upload gave it a
// blob id), so it is read without content.Decode's checks.
func (r *msgRecord) attachment() *content.Attachment {
	if r.Content == nil {
		return nil
	}
	var c content.Content
	if proto.Unmarshal(r.Content, &c) != nil {
		return nil
	}
	return c.GetAttachment()
}

// message is the public form of r; readSeq is its conversation's read
// mark, me this account.
func (r *msgRecord) message(readSeq uint64, me string) Message {
	m := Message{
		Seq: r.Seq, ID: MessageID(r.ID), Peer: r.Peer, Sender: r.sender(me), Outgoing: r.Outgoing, FromDevice: r.Device,
		Text: r.Text, Composed: msTime(r.Composed), ServerTime: msTime(r.Server), State: r.State,
		Delivered: msTime(r.Delivered), Read: msTime(r.Read), Err: r.Err, ErrCode: r.ErrCode,
		Unread:     !r.Outgoing && !r.Notice && r.Seq > readSeq && r.State != StateUnreadable,
		Notice:     r.Notice,
		Recipients: r.Recipients, DeliveredTo: r.DeliveredTo, ReadBy: r.ReadBy,
		Expires: msTime(r.Expire),
	}
	if a := r.attachment(); a != nil {
		m.Attachment = &Attachment{
			Kind: a.GetKind(), MIME: a.GetMime(), Name: a.GetFileName(), Size: int64(a.GetSize()),
			Width: int(a.GetWidth()), Height: int(a.GetHeight()), Duration: time.Duration(a.GetDurationMs()) * time.Millisecond,
			HasThumbnail: len(a.GetThumbnail()) > 0,
		}
		if x := r.Transfer; x != nil {
			m.Attachment.State, m.Attachment.Done, m.Attachment.Total = x.State, x.Done, x.Total
			m.Attachment.Err, m.Attachment.Path = x.Err, x.Path
		}
	}
	return m
}

// convRecord is a conversation's bookkeeping (sealed).
type convRecord struct {
	Last    uint64 `json:"last"`           // Seq of the newest message
	ReadSeq uint64 `json:"read,omitempty"` // incoming messages up to here are read
	Unread  int    `json:"unread,omitempty"`
}
