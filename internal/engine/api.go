package engine

import (
	"encoding/json"
	"time"

	"github.com/magpie-im/magpie/client"
)

// The JSON forms of the local API (docs/LOCAL_API.md). Both the handlers
// and the Go client (Remote) use them.

// Time is a time in the API: RFC 3339 with milliseconds, UTC, or "" for
// none.
type Time struct{ time.Time }

func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte(`""`), nil
	}
	return json.Marshal(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
}

func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "" {
		t.Time = time.Time{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	t.Time = v
	return err
}

// Message is a client.Message.
type Message struct {
	Seq         uint64      `json:"seq"`
	ID          string      `json:"id"`
	Peer        string      `json:"peer"`
	Outgoing    bool        `json:"outgoing"`
	FromDevice  uint32      `json:"from_device"`
	Text        string      `json:"text"`
	ComposedAt  Time        `json:"composed_at"`
	ServerTime  Time        `json:"server_time"`
	State       string      `json:"state"`
	DeliveredAt Time        `json:"delivered_at"`
	ReadAt      Time        `json:"read_at"`
	Error       string      `json:"error"`
	ErrorCode   string      `json:"error_code"`
	Unread      bool        `json:"unread"`
	Attachment  *Attachment `json:"attachment"`
	// Groups: who wrote it, whether it is a notice (a line about the
	// group, written by nobody), and, for a message this account sent to
	// a group, how many members it went to and who has it and has read it.
	Sender      string   `json:"sender"`
	Notice      bool     `json:"notice"`
	Recipients  int      `json:"recipients"`
	DeliveredTo []string `json:"delivered_to"`
	ReadBy      []string `json:"read_by"`
	// ExpiresAt is when the message disappears from this device (a group
	// whose messages disappear); null otherwise.
	ExpiresAt Time `json:"expires_at"`
}

// Attachment is a client.Attachment.
type Attachment struct {
	Kind       string `json:"kind"`
	MIME       string `json:"mime"`
	Name       string `json:"name"`
	Size       int64  `json:"size"`
	Width      int    `json:"width"`
	Height     int    `json:"height"`
	DurationMs int64  `json:"duration_ms"`
	Thumbnail  bool   `json:"thumbnail"`
	State      string `json:"state"`
	Done       int64  `json:"done"`
	Total      int64  `json:"total"`
	Error      string `json:"error"`
	Path       string `json:"path"`
}

func apiMessage(m *client.Message) Message {
	out := Message{
		Seq: m.Seq, ID: m.ID.String(), Peer: m.Peer, Outgoing: m.Outgoing, FromDevice: m.FromDevice,
		Text: m.Text, ComposedAt: Time{m.Composed}, ServerTime: Time{m.ServerTime}, State: string(m.State),
		DeliveredAt: Time{m.Delivered}, ReadAt: Time{m.Read}, Error: m.Err, ErrorCode: m.ErrCode, Unread: m.Unread,
		Sender: m.Sender, Notice: m.Notice, Recipients: m.Recipients,
		DeliveredTo: nonNil(m.DeliveredTo), ReadBy: nonNil(m.ReadBy), ExpiresAt: Time{m.Expires},
	}
	if a := m.Attachment; a != nil {
		out.Attachment = &Attachment{
			Kind: a.Kind, MIME: a.MIME, Name: a.Name, Size: a.Size, Width: a.Width, Height: a.Height,
			DurationMs: a.Duration.Milliseconds(), Thumbnail: a.HasThumbnail, State: string(a.State),
			Done: a.Done, Total: a.Total, Error: a.Err, Path: a.Path,
		}
	}
	return out
}

// nonNil is ss, or an empty list: the API's lists are never null.
func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

func apiMessages(ms []client.Message) []Message {
	out := make([]Message, 0, len(ms))
	for i := range ms {
		out = append(out, apiMessage(&ms[i]))
	}
	return out
}

// Conversation is a client.Conversation.
type Conversation struct {
	Peer            string   `json:"peer"`
	Unread          int      `json:"unread"`
	Last            *Message `json:"last"`
	Verified        bool     `json:"verified"`
	IdentityChanged bool     `json:"identity_changed"`
	// Group is the group's id (hex) for a group's conversation, else nil;
	// Name is the group's name.
	Group *string `json:"group"`
	Name  string  `json:"name"`
}

// Group is a client.Group.
type Group struct {
	ID           string        `json:"id"`
	Peer         string        `json:"peer"`
	Name         string        `json:"name"`
	Description  string        `json:"description"`
	Members      []GroupMember `json:"members"`
	Requests     []string      `json:"requests"`
	Settings     GroupSettings `json:"settings"`
	LinkOn       bool          `json:"link_on"`
	LinkApproval bool          `json:"link_approval"`
	Link         string        `json:"link"`
	HasAvatar    bool          `json:"has_avatar"`
	Role         string        `json:"role"`
	CanSend      bool          `json:"can_send"`
	Seq          uint64        `json:"seq"`
	Refused      string        `json:"refused"`
}

// GroupMember is a member of a group.
type GroupMember struct {
	User       string `json:"user"`
	Role       string `json:"role"`
	KeyChanged bool   `json:"key_changed"`
}

// GroupSettings are a group's settings.
type GroupSettings struct {
	AdminsOnlySend     bool  `json:"admins_only_send"`
	AdminsOnlyEditInfo bool  `json:"admins_only_edit_info"`
	DisappearAfterS    int64 `json:"disappear_after_s"`
}

func apiGroup(g *client.Group) Group {
	out := Group{
		ID: g.ID.String(), Peer: g.Peer, Name: g.Name, Description: g.Description,
		Members: make([]GroupMember, 0, len(g.Members)), Requests: nonNil(g.Requests),
		Settings: GroupSettings{
			AdminsOnlySend: g.Settings.AdminsOnlySend, AdminsOnlyEditInfo: g.Settings.AdminsOnlyEditInfo,
			DisappearAfterS: int64(g.Settings.DisappearAfter / time.Second),
		},
		LinkOn: g.LinkOn, LinkApproval: g.LinkApproval, Link: g.Link, HasAvatar: g.HasAvatar, Role: g.Role, CanSend: g.CanSend,
		Seq: g.Seq, Refused: g.Refused,
	}
	for _, m := range g.Members {
		out.Members = append(out.Members, GroupMember{User: m.User, Role: m.Role, KeyChanged: m.KeyChanged})
	}
	return out
}

// GroupInfo changes a group's name and description; a field left out
// keeps its value.
type GroupInfo struct {
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// GroupSettingsChange changes a group's settings; a field left out keeps
// its value.
type GroupSettingsChange struct {
	AdminsOnlySend     *bool  `json:"admins_only_send,omitempty"`
	AdminsOnlyEditInfo *bool  `json:"admins_only_edit_info,omitempty"`
	DisappearAfterS    *int64 `json:"disappear_after_s,omitempty"`
}

// GroupLink is a group's new join link, and the group.
type GroupLink struct {
	Link  string `json:"link"`
	Group Group  `json:"group"`
}

// Status is the engine's state and this client's identity.
type Status struct {
	User              string `json:"user"`
	Device            uint32 `json:"device"`
	Registered        bool   `json:"registered"`
	State             string `json:"state"`
	Error             string `json:"error"`
	Since             Time   `json:"since"`
	ServerFingerprint string `json:"server_fingerprint"`
	DeviceKey         string `json:"device_key"`
	Version           string `json:"version"`
	ReadReceipts      bool   `json:"read_receipts"`
	Outbox            int    `json:"outbox"`
	Home              string `json:"home"`
}

// Progress is a transfer's progress event.
type Progress struct {
	Seq   uint64 `json:"seq"`
	Phase string `json:"phase"` // upload, download
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

// PeerEvent is the data of typing, identity, read and group events.
type PeerEvent struct {
	Peer   string `json:"peer"`
	Typing *bool  `json:"typing,omitempty"`
	// Sender is who is typing: the peer, or a member of the group.
	Sender string `json:"sender,omitempty"`
}

// SignupPuzzle is the data of a signup_puzzle event: registering is
// solving the server's sign-up puzzle, of Bits bits (2^Bits hashes
// expected).
type SignupPuzzle struct {
	Bits int `json:"bits"`
}

// Contact is what the server says of a user.
type Contact struct {
	User    string          `json:"user"`
	Devices []ContactDevice `json:"devices"`
}

// ContactDevice is one of a contact's devices.
type ContactDevice struct {
	Device  uint32 `json:"device"`
	Created Time   `json:"created"`
	Key     string `json:"key"`
	HasKeys bool   `json:"has_keys"`
}

// Safety is a safety number to compare.
type Safety struct {
	User   string `json:"user"`
	Digits string `json:"digits"`
	Status string `json:"status"` // verified, unverified, changed
	QR     []byte `json:"qr"`     // the scannable payload (base64 in JSON)
}

// Verify is a request to mark a contact verified.
type Verify struct {
	Digits  string `json:"digits,omitempty"`
	Scanned []byte `json:"scanned,omitempty"`
}

// Settings are the user's preferences.
type Settings struct {
	ReadReceipts *bool `json:"read_receipts,omitempty"`
	// PlainTCP: dial plain tcp endpoints the operator did not mark safe.
	PlainTCP *bool `json:"plain_tcp,omitempty"`
}

// SendRequest queues a text.
type SendRequest struct {
	To   string `json:"to"`
	Text string `json:"text"`
	ID   string `json:"id,omitempty"`
}

// FileRequest queues a file by path (Unix socket only).
type FileRequest struct {
	Path string `json:"path"`
}

// Endpoint is one way to reach the server.
type Endpoint struct {
	Transport string `json:"transport"`
	Address   string `json:"address"`
	Priority  int    `json:"priority"`
	Key       string `json:"key"`
	Safe      bool   `json:"safe,omitempty"` // plain tcp the operator (or, for a relay, the user) vouched for
}

// ProbeResult is what a probe found for one endpoint.
type ProbeResult struct {
	Transport           string  `json:"transport"`
	Address             string  `json:"address"`
	Verdict             string  `json:"verdict"`
	ConnectMs           float64 `json:"connect_ms"`
	HandshakeMs         float64 `json:"handshake_ms"`
	RoundTripMs         float64 `json:"round_trip_ms"`
	ThroughputBytesPerS int64   `json:"throughput_bytes_per_s"`
	Stealthy            bool    `json:"stealthy"`
	Error               string  `json:"error,omitempty"`
}

// Error is the body of every error response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type errorBody struct {
	Error Error `json:"error"`
}
