// Package client is the Magpie client SDK.
//
// Two levels:
//   - Conn is one connection to a server: register, look up users, send
//     envelopes, receive pushes, acknowledge them. It keeps no state.
//   - Client is a device: its key, its server and its history live in a home
//     directory, so that messages survive restarts, unsent messages are
//     retried with the same id, and a message redelivered after a crash
//     reaches the application once.
//
// Every payload a Client sends is end-to-end ciphertext (package e2e: a
// Signal-protocol session per device); the server sees only opaque bytes.
// The local state is encrypted at rest under a key from an Unlocker.
package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"sync"
	"time"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/internal/clientstore"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
)

// ErrNotInitialized means the home directory has no client yet.
var ErrNotInitialized = clientstore.ErrNotInitialized

// ErrNotRegistered means the device has no account yet.
var ErrNotRegistered = errors.New("this device has no account yet: run `magpie register NAME` first")

// Options configure a Client.
type Options struct {
	Dial   DialOptions
	Logger *slog.Logger
	Now    func() time.Time
	// Unlocker supplies the key for the local state (required).
	Unlocker Unlocker
	// OnIdentityChange is called before sending to a contact whose safety
	// number changed since it was last seen (and who was not verified: a
	// verified contact's change stops the send with ErrIdentityChanged).
	OnIdentityChange func(user string)
}

// Sealer encrypts the client's state at rest.
type Sealer = clientstore.Sealer

// Unlocker supplies the key that encrypts a client's local state: Create
// makes a new one the first time (returning a header to keep beside the
// data), Unlock opens it later.
type Unlocker interface {
	Create() (Sealer, []byte, error)
	Unlock(header []byte) (Sealer, error)
}

const settingVault = "vault_header"

func unlock(ctx context.Context, st *clientstore.Store, u Unlocker, create bool) error {
	if u == nil {
		return errors.New("client: Options.Unlocker is required: the local state is encrypted")
	}
	h, err := st.Get(ctx, settingVault)
	if err != nil {
		return err
	}
	var sl Sealer
	switch {
	case h != nil:
		sl, err = u.Unlock(h)
	case create:
		if sl, h, err = u.Create(); err == nil {
			err = st.Set(ctx, settingVault, h)
		}
	default:
		return ErrNotInitialized
	}
	if err != nil {
		return err
	}
	st.SetSealer(sl)
	return nil
}

// Client is one device's state plus the logic to talk to its server.
type Client struct {
	st   *clientstore.Store
	key  link.KeyPair
	inv  invite.Invite
	opts Options

	mu   sync.Mutex
	name string
	dev  uint32
}

// Init prepares home for a new client of the server in inv: it creates the
// device's private key (once; re-running Init with a new invite keeps it) and
// records the invite.
func Init(ctx context.Context, home string, inv invite.Invite, u Unlocker) error {
	st, err := clientstore.Open(home, true)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := unlock(ctx, st, u, true); err != nil {
		return err
	}
	k, err := st.SecretSetting(ctx, clientstore.SettingDeviceKey)
	if err != nil {
		return err
	}
	if k == nil {
		kp, err := link.GenerateKey(rand.Reader)
		if err != nil {
			return fmt.Errorf("generating device key: %w", err)
		}
		if err := st.SetSecretSetting(ctx, clientstore.SettingDeviceKey, kp.Private[:]); err != nil {
			return err
		}
	}
	return st.Set(ctx, clientstore.SettingInvite, []byte(inv.String()))
}

// Open opens the client in home, which Init must have prepared.
func Open(ctx context.Context, home string, opts Options) (*Client, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	st, err := clientstore.Open(home, false)
	if err != nil {
		return nil, err
	}
	c := &Client{st: st, opts: opts}
	if err := unlock(ctx, st, opts.Unlocker, false); err != nil {
		st.Close()
		return nil, err
	}
	if err := c.load(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) load(ctx context.Context) error {
	invText, err := c.st.Get(ctx, clientstore.SettingInvite)
	if err != nil {
		return err
	}
	k, err := c.st.SecretSetting(ctx, clientstore.SettingDeviceKey)
	if err != nil {
		return err
	}
	if invText == nil || len(k) != 32 {
		return ErrNotInitialized
	}
	if c.inv, err = invite.Parse(string(invText)); err != nil {
		return fmt.Errorf("stored invite: %w", err)
	}
	if c.key, err = link.KeyPairFromPrivate([32]byte(k)); err != nil {
		return fmt.Errorf("stored device key: %w", err)
	}
	name, err := c.st.Get(ctx, clientstore.SettingUsername)
	if err != nil {
		return err
	}
	dev, err := c.st.Get(ctx, clientstore.SettingDeviceID)
	if err != nil {
		return err
	}
	c.name = string(name)
	if d, err := strconv.ParseUint(string(dev), 10, 32); err == nil {
		c.dev = uint32(d)
	}
	return nil
}

// SetKeepalive makes later connections ping the server every d when idle
// and give up on a path that stays silent for 2.5 × d (at least 1 s more
// than d), which is how a listening client notices a black-holed path.
// Shorter means faster failover and more pings for the server to answer.
func (c *Client) SetKeepalive(d time.Duration) {
	if d <= 0 {
		return
	}
	c.opts.Dial.Link.KeepaliveInterval = d
	c.opts.Dial.Link.IdleTimeout = max(d*5/2, d+time.Second)
}

// Close releases the local state.
func (c *Client) Close() error { return c.st.Close() }

// Invite returns the server this client uses.
func (c *Client) Invite() invite.Invite { return c.inv }

// PublicKey is this device's Noise static public key.
func (c *Client) PublicKey() [32]byte { return c.key.Public }

// Account returns the registered account, if any.
func (c *Client) Account() (DeviceAddr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return DeviceAddr{User: c.name, Device: c.dev}, c.name != ""
}

// Dial opens a Conn to the server as this device, through the first of its
// known endpoints that works (those that worked last are tried first), and
// refreshes the endpoint list in band.
func (c *Client) Dial(ctx context.Context) (*Conn, error) {
	eps, version, err := c.knownEndpoints(ctx)
	if err != nil {
		return nil, err
	}
	conn, e, err := DialEndpoints(ctx, c.inv.ServerKey, eps, c.key, c.opts.Dial)
	if err != nil {
		return nil, err
	}
	c.remember(ctx, e)
	if err := c.refreshEndpoints(ctx, conn, version); err != nil {
		conn.Close()
		return nil, err
	}
	// The server is the authority on registration: adopt what it says.
	if d, ok := conn.Device(); ok {
		if err := c.saveAccount(ctx, d); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

func (c *Client) saveAccount(ctx context.Context, d DeviceAddr) error {
	c.mu.Lock()
	same := c.name == d.User && c.dev == d.Device
	c.mu.Unlock()
	if same {
		return nil
	}
	if err := c.st.Set(ctx, clientstore.SettingUsername, []byte(d.User)); err != nil {
		return err
	}
	if err := c.st.Set(ctx, clientstore.SettingDeviceID, []byte(strconv.FormatUint(uint64(d.Device), 10))); err != nil {
		return err
	}
	c.mu.Lock()
	c.name, c.dev = d.User, d.Device
	c.mu.Unlock()
	return nil
}

// Register creates account name with this device as its first device.
func (c *Client) Register(ctx context.Context, name string) (DeviceAddr, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return DeviceAddr{}, err
	}
	defer conn.Close()
	if d, ok := conn.Device(); ok {
		return d, fmt.Errorf("this device is already registered as %q: %w", d.User, ErrAlreadyRegistered)
	}
	d, err := conn.Register(ctx, name)
	if err != nil {
		return DeviceAddr{}, err
	}
	if err := c.saveAccount(ctx, d); err != nil {
		return d, err
	}
	// An account is only reachable end to end once its keys are up.
	return d, c.ensureKeys(ctx, conn, conn.KeyCounts())
}

// Lookup asks the server about a user.
func (c *Client) Lookup(ctx context.Context, name string) (*UserInfo, error) {
	conn, err := c.connected(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.Lookup(ctx, name)
}

// connected dials and checks that this device has an account.
func (c *Client) connected(ctx context.Context) (*Conn, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := conn.Device(); !ok {
		conn.Close()
		return nil, ErrNotRegistered
	}
	if err := c.ensureKeys(ctx, conn, conn.KeyCounts()); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Sent describes an outgoing message the server has stored.
type Sent struct {
	ID         MessageID
	To         string
	ServerTime time.Time
	Devices    int
}

// NewMessageID returns a random message id.
func NewMessageID() MessageID {
	var id MessageID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return id
}

// SendText records a text message in the outbox, then connects and sends
// the whole outbox in order. If the connection fails the message stays in
// the outbox and is sent, with the same id, by the next Send, Sync or
// Listen.
func (c *Client) SendText(ctx context.Context, to, text string) (Sent, error) {
	if _, ok := c.Account(); !ok {
		return Sent{}, ErrNotRegistered
	}
	if _, err := content.EncodeText(text); err != nil {
		return Sent{}, err
	}
	id := NewMessageID()
	if err := c.st.AddOutgoing(ctx, to, id, text, c.opts.Now()); err != nil {
		return Sent{}, err
	}
	return c.flushOne(ctx, id)
}

// flushOne sends the outbox and reports the given message's result. An
// older outbox message that fails first keeps this one waiting: order is
// kept.
func (c *Client) flushOne(ctx context.Context, id MessageID) (Sent, error) {
	conn, err := c.connected(ctx)
	if err != nil {
		return Sent{}, fmt.Errorf("%w (the message is kept and will be retried)", err)
	}
	defer conn.Close()
	var mine Sent
	var mineErr error
	seen := false
	err = c.flushOutbox(ctx, conn, func(s Sent, err error) {
		if s.ID == id {
			mine, mineErr, seen = s, err, true
		}
	})
	switch {
	case seen:
		return mine, mineErr
	case err != nil:
		return Sent{}, fmt.Errorf("%w (the message is kept and will be retried)", err)
	default:
		return Sent{}, errors.New("message vanished from the outbox")
	}
}

// flushOutbox sends every unacknowledged outgoing message, oldest first.
// Messages refused for good (unknown user, too large) are dropped from the
// outbox and reported through each; temporary failures stop the flush and
// leave the rest for the next attempt.
func (c *Client) flushOutbox(ctx context.Context, conn *Conn, each func(Sent, error)) error {
	out, err := c.st.Outbox(ctx)
	if err != nil || len(out) == 0 {
		return err
	}
	others, err := c.otherOwnDevices(ctx, conn)
	if err != nil {
		return err
	}
	me, _ := c.Account()
	for _, m := range out {
		payload := m.Content // an attachment, already encoded
		if payload == nil {
			if payload, err = content.EncodeText(m.Body); err != nil {
				return err
			}
		}
		res, err := c.sendSecure(ctx, conn, m.Peer, m.ID, payload, false)
		if err == nil && others && m.Peer != me.User {
			// Sesame: this user's other devices get a transcript, so the
			// conversation is complete on each of them.
			var transcript []byte
			var cm *content.Content
			if cm, err = content.Decode(payload); err == nil {
				if transcript, err = content.EncodeSent(m.Peer, m.ID, cm); err == nil {
					_, err = c.sendSecure(ctx, conn, me.User, transcriptID(m.ID), transcript, false)
				}
			}
		}
		s := Sent{ID: m.ID, To: m.Peer, ServerTime: res.ServerTime, Devices: res.Devices}
		var se *ServerError
		switch {
		case err == nil:
			if err := c.st.MarkSent(ctx, m.ID, res.ServerTime); err != nil {
				return err
			}
			each(s, nil)
		case errors.As(err, &se) && !se.Temporary(), errors.Is(err, ErrIdentityChanged):
			if derr := c.st.Drop(ctx, m.ID); derr != nil {
				return derr
			}
			each(s, fmt.Errorf("message to %q not sent: %w", m.Peer, err))
		default:
			each(s, fmt.Errorf("message to %q not sent yet (kept for retry): %w", m.Peer, err))
			return err
		}
	}
	return nil
}

// transcriptID is the client message id of the copy of message id sent to
// this user's other devices. It must differ from id (the server
// deduplicates per sender device and id) and be the same on every retry
// (so that the server stores it once).
func transcriptID(id MessageID) MessageID {
	sum := sha256.Sum256(append([]byte("magpie transcript id\x00"), id[:]...))
	return MessageID(sum[:16])
}

// Typing tells to's connected devices that this user is typing.
func (c *Client) Typing(ctx context.Context, to string, started bool) (int, error) {
	conn, err := c.connected(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	r, err := c.sendSecure(ctx, conn, to, NewMessageID(), content.EncodeTyping(started), true)
	return r.Devices, err
}

// EventKind says what an Event is.
type EventKind int

const (
	EventMessage         EventKind = iota + 1 // a text message arrived
	EventReceipt                              // a message we sent reached a device
	EventTyping                               // a contact is typing (or stopped)
	EventSent                                 // an outbox message was stored by the server
	EventSendFailed                           // an outbox message was refused
	EventUnreadable                           // an envelope that could not be decrypted or decoded
	EventIdentityChanged                      // a contact's safety number changed
	EventSentElsewhere                        // this user sent a message from another device
)

// Event is something the application should show.
type Event struct {
	Kind   EventKind
	Peer   DeviceAddr // sender, or recipient for receipts and sends
	ID     MessageID
	Text   string
	Time   time.Time // server time
	Typing bool      // EventTyping: true while typing
	Err    error     // EventSendFailed, EventUnreadable
	// Attachment is set on messages that carry one; Client.Download
	// fetches it.
	Attachment *AttachmentInfo
}

// Sync connects, sends the outbox, and receives everything queued for this
// device, calling handle for each event; it returns once the server reports
// the queue drained.
func (c *Client) Sync(ctx context.Context, handle func(Event)) error {
	conn, err := c.connected(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return c.run(ctx, conn, handle, true)
}

// Listen stays connected, reconnecting with backoff, and calls handle for
// each event until ctx ends.
func (c *Client) Listen(ctx context.Context, handle func(Event)) error {
	if _, ok := c.Account(); !ok {
		return ErrNotRegistered
	}
	backoff := time.Second
	for {
		conn, err := c.connected(ctx)
		if err == nil {
			backoff = time.Second
			err = c.run(ctx, conn, handle, false)
			conn.Close()
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrNotRegistered) || errors.Is(err, ErrUnsupportedVersion) {
			return err
		}
		wait := jitter(backoff)
		c.opts.Logger.Warn("disconnected; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func jitter(d time.Duration) time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d/2)+1))
	if err != nil {
		return d
	}
	return d/2 + time.Duration(n.Int64())
}

// run sends the outbox (concurrently: pushes must keep flowing meanwhile) and
// handles pushes until the connection ends, ctx ends, or (untilDrained) the
// backlog has been received and the outbox sent.
func (c *Client) run(ctx context.Context, conn *Conn, handle func(Event), untilDrained bool) error {
	flushed := make(chan error, 1)
	go func() {
		flushed <- c.flushOutbox(ctx, conn, func(s Sent, err error) {
			ev := Event{Kind: EventSent, Peer: DeviceAddr{User: s.To}, ID: s.ID, Time: s.ServerTime, Err: err}
			if err != nil {
				ev.Kind = EventSendFailed
			}
			handle(ev)
		})
	}()
	drained, flushDone := false, false
	var flushErr error
	for {
		if untilDrained && drained && flushDone {
			return flushErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case flushErr = <-flushed:
			flushDone = true
			flushed = nil
		case p, ok := <-conn.Pushes():
			if !ok {
				return conn.Err()
			}
			if p.Drained {
				drained = true
				continue
			}
			if err := c.handlePush(ctx, conn, p, handle); err != nil {
				return err
			}
		}
	}
}

func (c *Client) handlePush(ctx context.Context, conn *Conn, p Push, handle func(Event)) error {
	if p.KeysLow != nil {
		return c.ensureKeys(ctx, conn, *p.KeysLow)
	}
	if r := p.Receipt; r != nil {
		if _, err := c.st.MarkDelivered(ctx, r.ID, r.Delivered); err != nil {
			return err
		}
		handle(Event{Kind: EventReceipt, Peer: r.Recipient, ID: r.ID, Time: r.Delivered})
		return conn.Ack(r.Seq)
	}
	e := p.Envelope
	var evs []Event
	if e2e.IsEnvelope(e.Payload) {
		var err error
		if evs, err = c.receiveSecure(ctx, e); err != nil {
			return err // not acknowledged: the server will push it again
		}
	} else {
		// Not end-to-end ciphertext: never trusted, never shown as text.
		evs = []Event{{Kind: EventUnreadable, Peer: e.From, ID: e.ID, Time: e.ServerTime, Err: e2e.ErrUnknownEnvelope}}
	}
	for _, ev := range evs {
		if e.Ephemeral && ev.Kind == EventUnreadable {
			continue // a lost typing indicator is not worth a line
		}
		handle(ev)
	}
	if e.Ephemeral {
		return nil // never acknowledged: never stored
	}
	return conn.Ack(e.Seq)
}

// HistoryMessage is one message of the local history.
type HistoryMessage = clientstore.Message

// History returns up to limit recent messages with peer ("" for all),
// oldest first.
func (c *Client) History(ctx context.Context, peer string, limit int) ([]HistoryMessage, error) {
	return c.st.History(ctx, peer, limit)
}
