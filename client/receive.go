package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/internal/clientconn"
)

// receive handles the connection's pushes in order until it ends. Every
// item is stored before it is acknowledged; when storing fails (a full
// disk), receive returns the error without acknowledging, the session
// ends, and the server pushes the item again on the next connection.
func (c *Client) receive(ctx context.Context, conn *clientconn.Conn) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case p, ok := <-conn.Pushes():
			if !ok {
				return conn.Err()
			}
			if err := c.handlePush(ctx, conn, p); err != nil {
				return err
			}
		}
	}
}

func (c *Client) handlePush(ctx context.Context, conn *clientconn.Conn, p clientconn.Push) error {
	switch {
	case p.Drained:
		c.mu.Lock()
		c.eng.drained = true
		if c.eng.live == conn {
			c.eng.drainSeen = max(c.eng.drainSeen, p.DrainTok)
		}
		c.notifyLocked()
		c.mu.Unlock()
		return nil
	case p.KeysLow != nil:
		return c.ensureKeys(ctx, conn, *p.KeysLow)
	case p.Receipt != nil:
		if err := c.deliveryReceipt(ctx, p.Receipt); err != nil {
			return err
		}
		return conn.Ack(p.Receipt.Seq)
	case p.Envelope != nil && p.Envelope.GroupChange:
		if err := c.receiveGroupChange(ctx, conn, p.Envelope); err != nil {
			return fmt.Errorf("a change to a group: %w", err)
		}
		return conn.Ack(p.Envelope.Seq)
	case p.Envelope != nil:
		e := p.Envelope
		if e.Group != ([16]byte{}) {
			if err := c.learnGroup(ctx, conn, GroupID(e.Group)); err != nil {
				return err
			}
		}
		evs, err := c.receiveEnvelope(ctx, e)
		if err != nil {
			return fmt.Errorf("storing a message from %s: %w", e.From.User, err)
		}
		c.publish(evs...)
		c.kickFor(evs)
		if e.Ephemeral {
			return nil // never stored by the server, never acknowledged
		}
		return conn.Ack(e.Seq)
	}
	return nil
}

// deliveryReceipt records the server's word that a device of the recipient
// has a message this account sent.
func (c *Client) deliveryReceipt(ctx context.Context, rc *clientconn.Receipt) error {
	var seq uint64
	err := c.view(ctx, func(t sealedTx) error {
		r, err := sentMessage(t, MessageID(rc.ID))
		if r != nil {
			seq = r.Seq
		}
		return err
	})
	if err != nil || seq == 0 {
		return err // a transcript's or a receipt's receipt
	}
	return c.changeMessage(ctx, seq, func(_ sealedTx, r *msgRecord) error {
		if _, ok := groupOf(r.Peer); ok {
			me, _ := c.Account()
			if rc.Recipient.User == me.User || !groupDelivered(r, rc.Recipient.User, unixMs(rc.Delivered), false) {
				return errUnchanged
			}
			return nil
		}
		if r.Peer != rc.Recipient.User || r.Delivered != 0 {
			return errUnchanged // not to that user, or a repeat
		}
		r.Delivered = unixMs(rc.Delivered)
		if r.State == StateSent || r.State == StateQueued {
			r.State = StateDelivered
		}
		if r.Server == 0 {
			r.Server = r.Delivered
		}
		return nil
	})
}

// storeErrKV is an e2e.KV that remembers whether the store itself failed,
// to tell a message that cannot be decrypted (acknowledged, shown as
// unreadable) from a state that cannot be read or written (not
// acknowledged: the server keeps it).
type storeErrKV struct {
	sealedTx
	err error
}

func (k *storeErrKV) note(err error) error {
	if err != nil && k.err == nil && !errors.Is(err, ErrCorrupt) {
		k.err = err
	}
	return err
}

func (k *storeErrKV) Get(ns, key string) ([]byte, error) {
	v, err := k.sealedTx.Get(ns, key)
	return v, k.note(err)
}

func (k *storeErrKV) Put(ns, key string, v []byte) error { return k.note(k.sealedTx.Put(ns, key, v)) }

func (k *storeErrKV) Delete(ns, key string) error { return k.note(k.sealedTx.Delete(ns, key)) }

func (k *storeErrKV) Keys(ns, prefix string) ([]string, error) {
	v, err := k.sealedTx.Keys(ns, prefix)
	return v, k.note(err)
}

// receiveEnvelope decrypts an envelope and stores what it says in the same
// transaction as the session step, so that a crash cannot lose a message
// whose key the session has already spent. It returns the events to
// publish once committed, or the error that kept it from being stored.
func (c *Client) receiveEnvelope(ctx context.Context, e *clientconn.Envelope) ([]Event, error) {
	from := DeviceAddr(e.From)
	if e.Group != ([16]byte{}) {
		return c.receiveGroupMessage(ctx, e)
	}
	if !e2e.IsEnvelope(e.Payload) {
		// Not end-to-end ciphertext: never trusted, never shown as text.
		return c.storeUnreadable(ctx, e, e2e.ErrUnknownEnvelope)
	}
	self, err := c.identity(ctx)
	if err != nil {
		return nil, err
	}
	var evs []Event
	var cryptoErr error
	err = c.update(ctx, func(t sealedTx) error {
		evs, cryptoErr = nil, nil
		if !e.Ephemeral {
			if seen, err := received(t, from.User, from.Device, MessageID(e.ID)); err != nil || seen {
				return err // stored before; the ack was lost
			}
		}
		kv := &storeErrKV{sealedTx: t}
		d, err := e2e.Decrypt(kv, self, from.User, from.Device, e.Payload)
		if err != nil {
			if kv.err != nil {
				return kv.err
			}
			cryptoErr = err
			return err
		}
		if d.IdentityChanged {
			evs = append(evs, Event{Kind: EventIdentityChanged, Peer: from.User})
		}
		msg, err := content.Decode(d.Plaintext)
		if err != nil {
			if e.Ephemeral {
				return nil
			}
			return c.addUnreadable(t, e, err, &evs)
		}
		return c.storeContent(t, e, msg, &evs)
	})
	switch {
	case err == nil:
		return evs, nil
	case cryptoErr != nil && errors.Is(err, ratchet.ErrDuplicateMessage):
		return nil, nil // decrypted and stored before: the ack was lost
	case cryptoErr != nil && e.Ephemeral:
		return nil, nil // a lost typing indicator is not worth a line
	case cryptoErr != nil:
		return c.storeUnreadable(ctx, e, cryptoErr)
	}
	return nil, err
}

// storeUnreadable records an envelope that cannot be read, so the user
// sees that something arrived.
func (c *Client) storeUnreadable(ctx context.Context, e *clientconn.Envelope, why error) ([]Event, error) {
	if e.Ephemeral {
		return nil, nil
	}
	c.opts.Logger.Warn("a message could not be decrypted", "from", e.From.User, "device", e.From.Device, "err", why)
	var evs []Event
	err := c.update(ctx, func(t sealedTx) error {
		evs = nil
		if seen, err := received(t, e.From.User, e.From.Device, MessageID(e.ID)); err != nil || seen {
			return err
		}
		return c.addUnreadable(t, e, why, &evs)
	})
	return evs, err
}

func (c *Client) addUnreadable(t sealedTx, e *clientconn.Envelope, why error, evs *[]Event) error {
	r := &msgRecord{
		ID: e.ID[:], Peer: e.From.User, Device: e.From.Device, State: StateUnreadable,
		Err:      "could not be decrypted or read: " + why.Error(),
		Composed: unixMs(e.ServerTime), Stored: unixMs(c.opts.Now()), Server: unixMs(e.ServerTime),
	}
	if e.Group != ([16]byte{}) {
		r.Peer, r.From = GroupID(e.Group).Peer(), e.From.User
	}
	return c.addAndNote(t, r, evs)
}

// addAndNote adds a new message and notes its event.
func (c *Client) addAndNote(t sealedTx, r *msgRecord, evs *[]Event) error {
	if err := addMessage(t, r); err != nil {
		return err
	}
	m, err := c.publicMessage(t, r)
	if err != nil {
		return err
	}
	*evs = append(*evs, Event{Kind: EventMessage, Message: m})
	return nil
}

// composed is when a message says it was written, or the server's time for
// a sender that does not say (or says something absurd).
func composed(ms uint64, e *clientconn.Envelope) int64 {
	server := unixMs(e.ServerTime)
	// A sender's clock may be off, but not by more than a day into the
	// future: that would pin the message to the end of every list.
	if ms == 0 || int64(ms) > server+24*3600*1000 {
		return server
	}
	return int64(ms)
}

// storeContent stores what a decrypted envelope says, inside t.
func (c *Client) storeContent(t sealedTx, e *clientconn.Envelope, msg *content.Content, evs *[]Event) error {
	from := DeviceAddr(e.From)
	me, _ := c.Account()
	now := unixMs(c.opts.Now())
	switch {
	case msg.GetTyping() != nil:
		*evs = append(*evs, Event{Kind: EventTyping, Peer: from.User, Typing: msg.GetTyping().GetStarted()})
		return nil
	case e.Ephemeral:
		return nil // only typing indicators travel unstored
	case msg.GetText() != nil, msg.GetAttachment() != nil:
		r := &msgRecord{
			ID: e.ID[:], Peer: from.User, Device: from.Device, Text: msg.GetText().GetBody(),
			Composed: composed(msg.GetTimestampMs(), e), Stored: now, Server: unixMs(e.ServerTime), State: StateReceived,
		}
		if a := msg.GetAttachment(); a != nil {
			return c.addWithDownload(t, r, a, evs)
		}
		return c.addAndNote(t, r, evs)
	case msg.GetSent() != nil:
		s := msg.GetSent()
		if from.User != me.User {
			return c.addUnreadable(t, e, errors.New("a transcript from another user"), evs) // only our own devices speak for us
		}
		if r, err := sentMessage(t, MessageID(s.GetClientMessageId())); err != nil || r != nil {
			return err // we have it already
		}
		r := &msgRecord{
			ID: s.GetClientMessageId(), Peer: s.GetDestination(), Outgoing: true, Text: s.GetText().GetBody(),
			Composed: composed(s.GetTimestampMs(), e), Stored: now, Server: unixMs(e.ServerTime), State: StateSent,
		}
		if err := t.Put(nsIn, inKey(from.User, from.Device, MessageID(e.ID)), []byte{}); err != nil {
			return err
		}
		if a := s.GetAttachment(); a != nil {
			return c.addWithDownload(t, r, a, evs)
		}
		return c.addAndNote(t, r, evs)
	case msg.GetReceipt() != nil:
		return c.readReceipt(t, from.User, msg.GetReceipt(), evs)
	case msg.GetSenderKey() != nil:
		return c.receiveSenderKey(t, from, msg.GetSenderKey())
	case msg.GetSenderKeyRequest() != nil:
		return c.senderKeyRequest(t, from, msg.GetSenderKeyRequest())
	}
	return c.addUnreadable(t, e, errors.New("a kind of message this version of Magpie cannot show: update it"), evs)
}

// readReceipt records that peer read messages this account sent them.
func (c *Client) readReceipt(t sealedTx, peer string, rc *content.Receipt, evs *[]Event) error {
	if rc.GetKind() != content.Receipt_KIND_READ {
		return nil
	}
	now := unixMs(c.opts.Now())
	for _, id := range rc.GetMessageIds() {
		r, err := sentMessage(t, MessageID(id))
		if err != nil {
			return err
		}
		if r == nil || r.State == StateFailed {
			continue
		}
		if _, ok := groupOf(r.Peer); ok {
			// A member of the group it went to.
			in, err := c.groupMember(t, r.Peer, peer)
			if err != nil {
				return err
			}
			if !in || !groupDelivered(r, peer, now, true) {
				continue
			}
		} else {
			// Only the peer a message went to can say it was read.
			if r.Peer != peer || r.Read != 0 {
				continue
			}
			r.Read = now
			r.State = StateRead
			if r.Delivered == 0 {
				r.Delivered = now
			}
		}
		if err := putMessage(t, r); err != nil {
			return err
		}
		m, err := c.publicMessage(t, r)
		if err != nil {
			return err
		}
		*evs = append(*evs, Event{Kind: EventUpdate, Message: m})
	}
	return nil
}

// kickFor wakes the downloader for the committed new messages in evs that
// carry an attachment. Only after the commit: a job the downloader cannot
// see yet would be skipped until the next kick.
func (c *Client) kickFor(evs []Event) {
	for _, ev := range evs {
		if ev.Kind == EventMessage && ev.Message.Attachment != nil {
			c.kick(workerDownload)
			return
		}
	}
}
