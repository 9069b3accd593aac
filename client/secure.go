package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/internal/clientstore"
	"github.com/magpie-im/magpie/wire"
	"google.golang.org/protobuf/proto"
)

// ErrIdentityChanged: a verified contact's safety number changed. Sending
// to them is refused until the user compares safety numbers again
// (`magpie verify NAME`, then `--confirm`).
var ErrIdentityChanged = e2e.ErrIdentityChanged

// identity returns this device's end-to-end identity.
func (c *Client) identity(ctx context.Context) (*e2e.Identity, error) {
	return e2e.LoadIdentity(c.st.KV(ctx))
}

// ensureKeys creates this device's identity the first time and uploads
// whatever the server lacks: all keys at first, rotated signed prekeys, and
// one-time prekeys when counts run low.
func (c *Client) ensureKeys(ctx context.Context, conn *Conn, counts KeyCounts) error {
	var upload *wire.SetKeysRequest
	err := c.st.Update(ctx, func(tx *clientstore.Tx) error {
		kv := tx.KV(ctx)
		self, err := e2e.CreateIdentity(kv, rand.Reader)
		if err != nil {
			return err
		}
		upload, err = e2e.KeysToUpload(kv, self, counts.PreKeys, counts.KyberPreKeys, c.opts.Now(), rand.Reader)
		return err
	})
	if err != nil || upload == nil {
		return err
	}
	if _, err := conn.SetKeys(ctx, upload); err != nil {
		return fmt.Errorf("uploading end-to-end keys: %w", err)
	}
	return nil
}

// errNeedSessions: no session with any device of the recipient yet.
var errNeedSessions = errors.New("no sessions")

// sendSecure encrypts plaintext for every device of user to that has keys
// (with one session each, started from prekey bundles as needed) and sends
// the per-device ciphertexts. When the server says the device list is out
// of date it reconciles (Sesame): sessions with removed devices are
// dropped, re-registered devices get new sessions, new devices are added,
// and the send is retried.
func (c *Client) sendSecure(ctx context.Context, conn *Conn, to string, id MessageID, plaintext []byte, ephemeral bool) (SendResult, error) {
	self, err := c.identity(ctx)
	if err != nil {
		return SendResult{}, err
	}
	me, _ := c.Account()
	// A verified contact whose key changed (seen in a message, a bundle or
	// a lookup) gets nothing until the user verifies again, even over
	// sessions that still work.
	if contact, err := e2e.LoadContact(c.st.KV(ctx), to); err != nil {
		return SendResult{}, err
	} else if contact != nil && contact.Pending != nil {
		return SendResult{}, fmt.Errorf("%s's safety number changed since you verified it; compare it again with `magpie verify %s`: %w", to, to, ErrIdentityChanged)
	}
	for attempt := 0; ; attempt++ {
		var payloads []DevicePayload
		err := c.st.Update(ctx, func(tx *clientstore.Tx) error {
			payloads = payloads[:0]
			kv := tx.KV(ctx)
			devs, err := e2e.SessionDevices(kv, to)
			if err != nil {
				return err
			}
			if len(devs) == 0 && to != me.User {
				return errNeedSessions
			}
			ids := make([]uint32, 0, len(devs))
			for d := range devs {
				ids = append(ids, d)
			}
			slices.Sort(ids)
			for _, d := range ids {
				p, err := e2e.Encrypt(kv, self, to, d, plaintext, rand.Reader)
				if err != nil {
					return err
				}
				payloads = append(payloads, DevicePayload{Device: d, RegistrationID: devs[d], Payload: p})
			}
			return nil
		})
		if errors.Is(err, errNeedSessions) && attempt < 3 {
			if err := c.startSessions(ctx, conn, to, nil); err != nil {
				return SendResult{}, err
			}
			continue
		}
		if err != nil {
			return SendResult{}, err
		}
		res, err := conn.SendPerDevice(ctx, to, id, ephemeral, payloads)
		var se *ServerError
		if !errors.As(err, &se) || se.Mismatch == nil || attempt >= 3 {
			return res, err
		}
		m := se.Mismatch
		if err := c.st.Update(ctx, func(tx *clientstore.Tx) error {
			for _, d := range append(slices.Clone(m.Extra), m.Stale...) {
				if err := e2e.DeleteSession(tx.KV(ctx), to, d); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return SendResult{}, err
		}
		if fetch := append(slices.Clone(m.Missing), m.Stale...); len(fetch) > 0 {
			if err := c.startSessions(ctx, conn, to, fetch); err != nil {
				return SendResult{}, err
			}
		}
	}
}

// startSessions fetches bundles for devices of user (nil: all) and starts
// sessions with them, checking the identity key against what the user
// trusts.
func (c *Client) startSessions(ctx context.Context, conn *Conn, user string, devices []uint32) error {
	resp, err := conn.GetBundles(ctx, user, devices)
	if err != nil {
		return err
	}
	self, err := c.identity(ctx)
	if err != nil {
		return err
	}
	var changed bool
	err = c.st.Update(ctx, func(tx *clientstore.Tx) error {
		var err error
		changed, err = e2e.StartSessions(tx.KV(ctx), self, resp, rand.Reader)
		if errors.Is(err, e2e.ErrIdentityChanged) {
			return nil // recorded as pending; reported below
		}
		return err
	})
	if err != nil {
		return err
	}
	contact, err := e2e.LoadContact(c.st.KV(ctx), user)
	if err != nil {
		return err
	}
	if contact != nil && contact.Pending != nil {
		return fmt.Errorf("%s's safety number changed since you verified it; compare it again with `magpie verify %s`: %w", user, user, ErrIdentityChanged)
	}
	if changed && c.opts.OnIdentityChange != nil {
		c.opts.OnIdentityChange(user)
	}
	return nil
}

// otherOwnDevices reports whether this account has other devices with keys,
// which must get a transcript of each sent message (Sesame).
func (c *Client) otherOwnDevices(ctx context.Context, conn *Conn) (bool, error) {
	me, _ := c.Account()
	u, err := conn.Lookup(ctx, me.User)
	if err != nil {
		return false, err
	}
	for _, d := range u.Devices {
		if d.Device != me.Device && d.RegistrationID != 0 {
			return true, nil
		}
	}
	return false, nil
}

// receiveSecure decrypts an envelope and stores what it says in the same
// transaction as the session step, so that a crash cannot lose a message
// whose key the session has already spent. It returns the events to show.
func (c *Client) receiveSecure(ctx context.Context, e *Envelope) ([]Event, error) {
	self, err := c.identity(ctx)
	if err != nil {
		return nil, err
	}
	var evs []Event
	err = c.st.Update(ctx, func(tx *clientstore.Tx) error {
		evs = evs[:0]
		d, err := e2e.Decrypt(tx.KV(ctx), self, e.From.User, e.From.Device, e.Payload)
		if err != nil {
			return err
		}
		if d.IdentityChanged {
			evs = append(evs, Event{Kind: EventIdentityChanged, Peer: e.From, Time: e.ServerTime})
		}
		msg, err := content.Decode(d.Plaintext)
		switch {
		case err != nil:
			evs = append(evs, Event{Kind: EventUnreadable, Peer: e.From, ID: e.ID, Time: e.ServerTime})
		case msg.GetTyping() != nil:
			evs = append(evs, Event{Kind: EventTyping, Peer: e.From, ID: e.ID, Time: e.ServerTime, Typing: msg.GetTyping().GetStarted()})
		case msg.GetText() != nil && !e.Ephemeral:
			text := msg.GetText().GetBody()
			fresh, err := tx.AddIncoming(ctx, clientstore.Message{
				Peer: e.From.User, PeerDevice: e.From.Device, ID: e.ID, Body: text,
				Created: c.opts.Now(), ServerTime: e.ServerTime,
			})
			if err != nil {
				return err
			}
			if fresh {
				evs = append(evs, Event{Kind: EventMessage, Peer: e.From, ID: e.ID, Text: text, Time: e.ServerTime})
			}
		case msg.GetAttachment() != nil && !e.Ephemeral:
			a := msg.GetAttachment()
			fresh, err := tx.AddIncoming(ctx, clientstore.Message{
				Peer: e.From.User, PeerDevice: e.From.Device, ID: e.ID, Body: describe(a), Content: d.Plaintext,
				Created: c.opts.Now(), ServerTime: e.ServerTime,
			})
			if err != nil {
				return err
			}
			if fresh {
				evs = append(evs, Event{Kind: EventMessage, Peer: e.From, ID: e.ID, Text: describe(a), Time: e.ServerTime, Attachment: a})
			}
		case msg.GetSent() != nil && !e.Ephemeral:
			me, _ := c.Account()
			if e.From.User != me.User {
				evs = append(evs, Event{Kind: EventUnreadable, Peer: e.From, ID: e.ID, Time: e.ServerTime})
				break // only our own devices may speak for us
			}
			s := msg.GetSent()
			body, stored := s.GetText().GetBody(), []byte(nil)
			if a := s.GetAttachment(); a != nil {
				body = describe(a)
				stored, _ = proto.Marshal(&content.Content{Body: &content.Content_Attachment{Attachment: a}})
			}
			fresh, err := tx.AddIncoming(ctx, clientstore.Message{
				Outgoing: true, Peer: s.GetDestination(), ID: MessageID(s.GetClientMessageId()),
				Body: body, Content: stored, Created: c.opts.Now(), ServerTime: e.ServerTime,
			})
			if err != nil {
				return err
			}
			if fresh {
				evs = append(evs, Event{Kind: EventSentElsewhere, Peer: DeviceAddr{User: s.GetDestination()}, ID: MessageID(s.GetClientMessageId()), Text: body, Time: e.ServerTime, Attachment: s.GetAttachment()})
			}
		default:
			evs = append(evs, Event{Kind: EventUnreadable, Peer: e.From, ID: e.ID, Time: e.ServerTime})
		}
		return nil
	})
	if errors.Is(err, ratchet.ErrDuplicateMessage) {
		// Already decrypted and stored (the ack was lost): nothing new.
		return nil, nil
	}
	if err != nil {
		return []Event{{Kind: EventUnreadable, Peer: e.From, ID: e.ID, Time: e.ServerTime, Err: err}}, nil
	}
	return evs, nil
}

// SafetyNumber looks up user's identity key on the server, records it (a
// first key is trusted on first use; a change is recorded) and returns the
// safety number to compare with them.
func (c *Client) SafetyNumber(ctx context.Context, user string) (*e2e.SafetyNumber, error) {
	conn, err := c.connected(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	u, err := conn.Lookup(ctx, user)
	if err != nil {
		return nil, err
	}
	if len(u.IdentityKey) == 0 {
		return nil, fmt.Errorf("%s has not set up end-to-end encryption yet: %w", u.Name, ErrNoKeys)
	}
	ik, err := curve.ParsePublicKey(u.IdentityKey)
	if err != nil {
		return nil, fmt.Errorf("%s's identity key: %w", u.Name, err)
	}
	self, err := c.identity(ctx)
	if err != nil {
		return nil, err
	}
	me, _ := c.Account()
	var sn *e2e.SafetyNumber
	err = c.st.Update(ctx, func(tx *clientstore.Tx) error {
		kv := tx.KV(ctx)
		if _, err := e2e.CheckIdentity(kv, u.Name, ik); err != nil && !errors.Is(err, e2e.ErrIdentityChanged) {
			return err
		}
		sn, err = e2e.ComputeSafetyNumber(kv, me.User, self, u.Name)
		return err
	})
	return sn, err
}

// MarkVerified records that the user compared safety numbers with user and
// they matched.
func (c *Client) MarkVerified(ctx context.Context, user string) error {
	return c.st.Update(ctx, func(tx *clientstore.Tx) error {
		return e2e.MarkVerified(tx.KV(ctx), user)
	})
}
