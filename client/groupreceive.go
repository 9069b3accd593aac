package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/senderkey"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
)

// receiveGroupChange handles a change to a group's log that the server
// pushed: the next change is applied; a gap (a group this device has just
// been added to, say) is filled from the server's log first. Whatever the
// server sends, only changes that verify against the log this device
// holds are applied (applyChanges).
func (c *Client) receiveGroupChange(ctx context.Context, conn *clientconn.Conn, e *clientconn.Envelope) error {
	ch, err := group.Decode(e.Payload)
	if err != nil || ch.GroupID != e.Group || ch.Author != e.From.User {
		c.opts.Logger.Warn("ignored a malformed group change from the server", "err", err)
		return nil
	}
	id := GroupID(e.Group)
	var rec *groupRecord
	err = c.view(ctx, func(t sealedTx) error {
		var err error
		rec, _, err = c.loadGroup(t, id)
		return err
	})
	switch {
	case err != nil:
		return err
	case rec != nil && (ch.Seq <= rec.Seq || rec.Refused != ""):
		return nil // had it already, or follows this group no more
	case rec != nil && ch.Seq == rec.Seq+1:
		return c.applyFetched(ctx, id, ch.Seq, [][]byte{e.Payload})
	}
	from := uint64(0)
	if rec != nil {
		from = rec.Seq + 1
	}
	err = c.fetchLog(ctx, conn, id, from, nil)
	var se *clientconn.ServerError
	if errors.Is(err, ErrNotMember) || (errors.As(err, &se) && !se.Temporary()) {
		// Not a member now (added and removed since, a request turned
		// down): the log is not ours to read.
		c.opts.Logger.Info("could not read a group's log", "group", id.String(), "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	// The change pushed must be the one the log holds at its place: a
	// server that shows members different logs is refused.
	return c.update(ctx, func(t sealedTx) error {
		rec, _, err := c.loadGroup(t, id)
		if err != nil || rec == nil || rec.Seq != ch.Seq {
			return err
		}
		if sum := sha256.Sum256(e.Payload); !bytes.Equal(sum[:], rec.Head) && rec.Refused == "" {
			rec.Refused = fmt.Sprintf("change %d: the server pushed one change and its log holds another", ch.Seq)
			return putJSON(t, nsGroup, id.String(), rec)
		}
		return nil
	})
}

// receiveGroupMessage decrypts a group message and stores it, in one
// transaction with the sender key's step. Only a member allowed to send
// is heard; a message that names another group inside its ciphertext is
// refused (the server cannot move messages between groups).
func (c *Client) receiveGroupMessage(ctx context.Context, e *clientconn.Envelope) ([]Event, error) {
	id := GroupID(e.Group)
	from := e.From
	var evs []Event
	var refused error
	err := c.update(ctx, func(t sealedTx) error {
		evs, refused = nil, nil
		if !e.Ephemeral {
			if seen, err := received(t, from.User, from.Device, MessageID(e.ID)); err != nil || seen {
				return err
			}
		}
		rec, st, err := c.loadGroup(t, id)
		switch {
		case err != nil:
			return err
		case rec == nil:
			refused = fmt.Errorf("%w: a message for a group this device does not know", ErrUnknownGroup)
			return refused
		case !st.CanSend(from.User):
			refused = fmt.Errorf("%w: %s is not a member of %q, or may not send to it", ErrNotMember, from.User, st.Name)
			return refused
		}
		kv := &storeErrKV{sealedTx: t}
		d, err := e2e.GroupDecrypt(kv, from.User, from.Device, e.Payload)
		if err != nil {
			if kv.err != nil {
				return kv.err
			}
			refused = err
			return err
		}
		msg, err := content.Decode(d.Plaintext)
		if err == nil && !bytes.Equal(msg.GetGroupId(), id[:]) {
			err = errors.New("it names another group inside its ciphertext")
		}
		if err != nil {
			if e.Ephemeral {
				return nil
			}
			return c.addUnreadable(t, e, err, &evs)
		}
		return c.storeGroupContent(t, e, id, msg, &evs)
	})
	switch {
	case err == nil:
		return evs, nil
	case refused != nil && errors.Is(err, senderkey.ErrDuplicateMessage):
		return nil, nil // stored before; the ack was lost
	case refused != nil && (e.Ephemeral || errors.Is(err, ErrUnknownGroup)):
		if !e.Ephemeral {
			c.opts.Logger.Warn("refused a group message", "from", from.User, "err", err)
		}
		return nil, nil
	case refused != nil && errors.Is(err, senderkey.ErrNoSenderKey):
		// A chain this device was never given (it was added to the
		// account since): ask the sender for it, for what comes next.
		evs, err := c.storeUnreadable(ctx, e, fmt.Errorf("%w (this device did not have %s's key for the group yet; it asked for it: ask them to send again)", err, from.User))
		if err == nil {
			err = c.update(ctx, func(t sealedTx) error { return askSenderKey(t, id, from.User, c.opts.Now()) })
			c.kick(workerOutbox)
		}
		return evs, err
	case refused != nil:
		return c.storeUnreadable(ctx, e, err)
	}
	return nil, err
}

// askSenderKey queues a request for user's sender key for a group, at most
// one an hour.
func askSenderKey(t sealedTx, id GroupID, user string, now time.Time) error {
	k := id.String() + "/" + user
	var last int64
	if _, err := getJSON(t, nsGroupAsked, k, &last); err != nil {
		return err
	}
	if last != 0 && now.Sub(msTime(last)) < time.Hour {
		return nil
	}
	if err := putJSON(t, nsGroupAsked, k, unixMs(now)); err != nil {
		return err
	}
	mid := NewMessageID()
	return queue(t, &outboxItem{Peer: user, ID: mid[:], Payload: content.EncodeSenderKeyRequest(id)})
}

// senderKeyRequest hears a member's request for this device's sender key
// for a group: the next message to the group gives it to all their
// devices again.
func (c *Client) senderKeyRequest(t sealedTx, from DeviceAddr, r *content.SenderKeyRequest) error {
	id := GroupID(r.GetGroupId())
	rec, st, err := c.loadGroup(t, id)
	if err != nil || rec == nil || rec.Dist == nil || st.Role(from.User) == 0 {
		return err
	}
	return t.Delete(nsGroupGiven, givenKey(id, rec.Dist, from.User))
}

// storeGroupContent stores what a decrypted group message says.
func (c *Client) storeGroupContent(t sealedTx, e *clientconn.Envelope, id GroupID, msg *content.Content, evs *[]Event) error {
	from := e.From
	me, _ := c.Account()
	switch {
	case msg.GetTyping() != nil:
		*evs = append(*evs, Event{Kind: EventTyping, Peer: id.Peer(), Sender: from.User, Typing: msg.GetTyping().GetStarted()})
		return nil
	case e.Ephemeral:
		return nil
	case msg.GetText() != nil, msg.GetAttachment() != nil:
		r := &msgRecord{
			ID: e.ID[:], Peer: id.Peer(), From: from.User, Device: from.Device, Text: msg.GetText().GetBody(),
			Composed: composed(msg.GetTimestampMs(), e), Stored: unixMs(c.opts.Now()), Server: unixMs(e.ServerTime), State: StateReceived,
		}
		if from.User == me.User {
			// Sent from another device of this account: it is ours.
			if old, err := sentMessage(t, MessageID(e.ID)); err != nil || old != nil {
				return err
			}
			r.Outgoing, r.State = true, StateSent
			if err := t.Put(nsIn, inKey(from.User, from.Device, MessageID(e.ID)), []byte{}); err != nil {
				return err
			}
		}
		if a := msg.GetAttachment(); a != nil {
			return c.addWithDownload(t, r, a, evs)
		}
		return c.addAndNote(t, r, evs)
	}
	return c.addUnreadable(t, e, errors.New("a kind of group message this version of Magpie cannot show: update it"), evs)
}

// receiveSenderKey records a member device's sender key for a group,
// which came over the 1:1 session. Keys from anyone not in the group are
// dropped.
func (c *Client) receiveSenderKey(t sealedTx, from DeviceAddr, sk *content.SenderKeyDistribution) error {
	id := GroupID(sk.GetGroupId())
	rec, st, err := c.loadGroup(t, id)
	if err != nil {
		return err
	}
	if rec == nil || st.Role(from.User) == 0 {
		c.opts.Logger.Warn("dropped a sender key from someone not in the group", "from", from.User, "group", id.String())
		return nil
	}
	kv := &storeErrKV{sealedTx: t}
	if _, err := e2e.ProcessSenderKeyDistribution(kv, from.User, from.Device, sk.GetDistribution()); err != nil {
		if kv.err != nil {
			return kv.err
		}
		c.opts.Logger.Warn("dropped a malformed sender key", "from", from.User, "err", err)
	}
	return nil
}

// groupDelivered records that a member has a group message this account
// sent; read also that they read it.
func groupDelivered(r *msgRecord, user string, at int64, read bool) bool {
	changed := false
	if !slices.Contains(r.DeliveredTo, user) {
		r.DeliveredTo = append(r.DeliveredTo, user)
		changed = true
	}
	if read && !slices.Contains(r.ReadBy, user) {
		r.ReadBy = append(r.ReadBy, user)
		changed = true
	}
	if !changed {
		return false
	}
	if r.Delivered == 0 {
		r.Delivered = at
	}
	if read && r.Read == 0 {
		r.Read = at
	}
	groupState(r)
	return true
}

// groupState moves a group message this account sent to delivered (read)
// once every member it went to has it (has read it). Receipts can arrive
// before the send's answer says how many members it went to: the answer
// calls this too.
func groupState(r *msgRecord) {
	all := r.Recipients > 0
	switch {
	case r.State == StateFailed || r.State == StateQueued || r.State == StateUploading:
	case all && len(r.ReadBy) >= r.Recipients:
		r.State = StateRead
	case all && len(r.DeliveredTo) >= r.Recipients && r.State != StateRead:
		r.State = StateDelivered
	}
}

// groupMember reports whether user is in the group of conversation peer.
func (c *Client) groupMember(t sealedTx, peer, user string) (bool, error) {
	id, ok := groupOf(peer)
	if !ok {
		return false, nil
	}
	_, st, err := c.loadGroup(t, id)
	if err != nil || st == nil {
		return false, err
	}
	_, in := st.Members[user]
	return in, nil
}

// learnGroup fetches the log of a group this device has a message for but
// does not know (a device added to the account since the group's last
// change): the account is a member, so the server lets it read the log.
func (c *Client) learnGroup(ctx context.Context, conn *clientconn.Conn, id GroupID) error {
	var known bool
	err := c.view(ctx, func(t sealedTx) error {
		v, err := t.Get(nsGroup, id.String())
		known = v != nil
		return err
	})
	if err != nil || known {
		return err
	}
	err = c.fetchLog(ctx, conn, id, 0, nil)
	var se *clientconn.ServerError
	if errors.As(err, &se) && !se.Temporary() {
		return nil // not ours to read: the message is refused as from an unknown group
	}
	return err
}
