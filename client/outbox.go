package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/magpie-im/magpie/attach"
	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/username"
)

// The outbox holds what is waiting to be sent, in order: messages (which
// are also in the history) and read receipts. Sending is idempotent: an
// item keeps its message id however often it is tried, and the server
// stores a resend once.

var (
	// ErrEmptyMessage: a text that is empty or only white space.
	ErrEmptyMessage = errors.New("the message is empty")
	// ErrTextTooLong: a text over content.MaxText (64 KiB).
	ErrTextTooLong = content.ErrTextTooLong
	// ErrAlreadySent: the message left the outbox; it cannot be cancelled.
	ErrAlreadySent = errors.New("the message was already sent")
	// ErrIdentityChanged: a verified contact's safety number changed.
	// Sending to them is refused until the user compares safety numbers
	// again and marks them verified.
	ErrIdentityChanged = e2e.ErrIdentityChanged

	errBadID = errors.New("a message id is 32 hexadecimal digits")
)

// outboxItem is one thing to send (sealed in nsOutbox).
type outboxItem struct {
	Seq  uint64 `json:"seq"`  // its own key
	Msg  uint64 `json:"msg"`  // the message it sends (0 for a receipt)
	Peer string `json:"peer"` // whom to
	ID   []byte `json:"id"`   // the message id it is sent with
	// Payload is what a receipt sends (a message's is built from it).
	Payload   []byte `json:"payload,omitempty"`
	Tries     int    `json:"tries,omitempty"`
	NotBefore int64  `json:"not_before,omitempty"` // Unix ms: after a temporary refusal
	// Sealed is a group message as first encrypted (groupsend.go).
	Sealed *sealedGroupMessage `json:"sealed,omitempty"`
}

// SendOption changes how Send queues a message.
type SendOption func(*sendOptions)

type sendOptions struct{ id MessageID }

// WithID sends the message with id instead of a new random one: sending
// the same id again (a retry after a crash, say) returns the message
// queued the first time instead of queueing another.
func WithID(id MessageID) SendOption { return func(o *sendOptions) { o.id = id } }

// checkRecipient normalises a user name and refuses to queue for a contact
// whose verified safety number changed, or for a group this account cannot
// send to.
func (c *Client) checkRecipient(ctx context.Context, to string) (string, error) {
	if _, ok := c.Account(); !ok {
		return "", ErrNotRegistered
	}
	if strings.HasPrefix(to, groupPeerPrefix) {
		id, err := ParseGroupID(to)
		if err != nil {
			return "", err
		}
		return id.Peer(), c.checkGroupSend(ctx, id)
	}
	to, err := username.Normalize(to)
	if err != nil {
		return "", err
	}
	var pending bool
	err = c.view(ctx, func(t sealedTx) error {
		contact, err := e2e.LoadContact(t, to)
		pending = contact != nil && contact.Pending != nil
		return err
	})
	if err != nil {
		return "", err
	}
	if pending {
		return "", fmt.Errorf("%s's safety number changed since you verified it: %w", to, ErrIdentityChanged)
	}
	return to, nil
}

// Send queues a text message to user to and returns it (State queued, or
// later if the engine was quick). It is durable when Send returns: the
// engine sends it as soon as it is online, with the same id however many
// tries that takes. Sending the same text to the same user again while the
// first is still queued returns the first instead of a copy.
func (c *Client) Send(ctx context.Context, to, text string, opts ...SendOption) (*Message, error) {
	var o sendOptions
	for _, f := range opts {
		f(&o)
	}
	if strings.TrimSpace(text) == "" {
		return nil, ErrEmptyMessage
	}
	if len(text) > content.MaxText {
		return nil, ErrTextTooLong
	}
	to, err := c.checkRecipient(ctx, to)
	if err != nil {
		return nil, err
	}
	if o.id == (MessageID{}) {
		o.id = NewMessageID()
	}
	var m *Message
	var fresh bool
	err = c.update(ctx, func(t sealedTx) error {
		r, err := sentMessage(t, o.id)
		if err == nil && r == nil {
			r, err = queuedCopy(t, to, text)
		}
		if err != nil {
			return err
		}
		fresh = r == nil
		if fresh {
			r = &msgRecord{ID: o.id[:], Peer: to, Outgoing: true, Text: text, State: StateQueued,
				Composed: unixMs(c.opts.Now()), Stored: unixMs(c.opts.Now())}
			if err := addMessage(t, r); err != nil {
				return err
			}
			if err := queue(t, &outboxItem{Msg: r.Seq, Peer: to, ID: r.ID}); err != nil {
				return err
			}
		}
		m, err = c.publicMessage(t, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	if fresh {
		c.publish(Event{Kind: EventMessage, Message: m})
		c.kick(workerOutbox)
	}
	return m, nil
}

// retryWindow is how many of the newest outbox items Send looks through
// for a copy of a text being sent again: a person's retry is recent, and
// the look must stay cheap when much is queued.
const retryWindow = 64

// queuedCopy finds a recently queued text message to peer with the same
// text.
func queuedCopy(t sealedTx, peer, text string) (*msgRecord, error) {
	var found *msgRecord
	looked := 0
	err := t.Scan(nsOutbox, "", "", true, func(_ string, v []byte) (bool, error) {
		if looked++; looked > retryWindow {
			return false, nil
		}
		var it outboxItem
		if err := jsonRecord(v, &it); err != nil || it.Msg == 0 || it.Peer != peer {
			return err == nil, err
		}
		r, err := getMessage(t, it.Msg)
		if err != nil {
			return false, err
		}
		if r.Content == nil && r.Text == text && r.State == StateQueued {
			found = r
			return false, nil
		}
		return true, nil
	})
	return found, err
}

// queue adds an item at the end of the outbox.
func queue(t sealedTx, it *outboxItem) error {
	seq, err := nextSeq(t)
	if err != nil {
		return err
	}
	it.Seq = seq
	return putJSON(t, nsOutbox, seqKey(seq), it)
}

// queueReadReceipt queues a read receipt for the messages ids from peer.
func queueReadReceipt(t sealedTx, peer string, ids [][]byte, now time.Time) error {
	p, err := content.EncodeReadReceipt(ids)
	if err != nil {
		return err
	}
	id := NewMessageID()
	return queue(t, &outboxItem{Peer: peer, ID: id[:], Payload: p})
}

// Outbox lists the messages waiting to be sent, oldest first.
func (c *Client) Outbox(ctx context.Context) ([]Message, error) {
	var out []Message
	err := c.view(ctx, func(t sealedTx) error {
		seen := map[uint64]bool{}
		add := func(seq uint64) error {
			if seen[seq] {
				return nil
			}
			seen[seq] = true
			r, err := getMessage(t, seq)
			if err != nil {
				return err
			}
			m, err := c.publicMessage(t, r)
			if err == nil {
				out = append(out, *m)
			}
			return err
		}
		// Attachments still uploading are not in the outbox yet.
		err := t.Scan(nsTransfer, "", "", false, func(_ string, v []byte) (bool, error) {
			var j transferJob
			if err := jsonRecord(v, &j); err != nil || !j.Upload {
				return err == nil, err
			}
			return true, add(j.Seq)
		})
		if err != nil {
			return err
		}
		return t.Scan(nsOutbox, "", "", false, func(_ string, v []byte) (bool, error) {
			var it outboxItem
			if err := jsonRecord(v, &it); err != nil || it.Msg == 0 {
				return err == nil, err
			}
			return true, add(it.Msg)
		})
	})
	return out, err
}

// Cancel removes a message that is still queued (or uploading) from the
// outbox and the history. A message that has left fails with
// ErrAlreadySent.
func (c *Client) Cancel(ctx context.Context, seq uint64) error {
	c.mu.Lock()
	if c.eng.sending == seq {
		c.mu.Unlock()
		return fmt.Errorf("%w (it is being sent right now)", ErrAlreadySent)
	}
	if c.eng.cancelling == nil {
		c.eng.cancelling = map[uint64]bool{}
	}
	c.eng.cancelling[seq] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.eng.cancelling, seq)
		c.mu.Unlock()
	}()
	var staged string
	err := c.update(ctx, func(t sealedTx) error {
		r, err := getMessage(t, seq)
		if err != nil {
			return err
		}
		if !r.Outgoing || (r.State != StateQueued && r.State != StateUploading) {
			return ErrAlreadySent
		}
		if err := deleteQueued(t, seq); err != nil {
			return err
		}
		if r.Transfer != nil {
			staged = r.Transfer.Staged
		}
		return deleteMessage(t, r)
	})
	if err != nil {
		return err
	}
	if staged != "" {
		c.removeStaged(staged)
	}
	c.publish(Event{Kind: EventResync})
	return nil
}

// deleteQueued removes the outbox item and transfer job of message seq.
func deleteQueued(t sealedTx, seq uint64) error {
	if err := t.Delete(nsTransfer, seqKey(seq)); err != nil {
		return err
	}
	var del []string
	err := t.Scan(nsOutbox, "", "", false, func(k string, v []byte) (bool, error) {
		var it outboxItem
		if err := jsonRecord(v, &it); err == nil && it.Msg == seq {
			del = append(del, k)
		}
		return true, nil
	})
	for _, k := range del {
		if err == nil {
			err = t.Delete(nsOutbox, k)
		}
	}
	return err
}

// deleteMessage removes a message from the history and its indexes.
func deleteMessage(t sealedTx, r *msgRecord) error {
	if r.Expire != 0 {
		if err := t.Delete(nsExpire, expireKey(r.Expire, r.Seq)); err != nil {
			return err
		}
	}
	for _, d := range [][2]string{{nsMsg, msgKey(r.Peer, r.Seq)}, {nsSeq, seqKey(r.Seq)}, {nsOut, fmt.Sprintf("%x", r.ID)}} {
		if err := t.Delete(d[0], d[1]); err != nil {
			return err
		}
	}
	var conv convRecord
	if ok, err := getJSON(t, nsConv, r.Peer, &conv); err != nil || !ok || conv.Last != r.Seq {
		return err
	}
	conv.Last = 0
	err := t.Scan(nsMsg, r.Peer+"/", prefixEnd(r.Peer+"/"), true, func(k string, _ []byte) (bool, error) {
		seq, err := parseSeqKey(k[len(r.Peer)+1:])
		conv.Last = seq
		return false, err
	})
	if err != nil {
		return err
	}
	if conv.Last == 0 {
		return t.Delete(nsConv, r.Peer)
	}
	return putJSON(t, nsConv, r.Peer, conv)
}

// WaitSent waits until message seq has left the outbox (sent, or failed),
// and returns it. It returns early, with the message still queued and an
// error matching ErrOffline, when the engine could not reach the server;
// and with a nil error when the server refused it for now (Message.Err
// says why: the engine will try again).
func (c *Client) WaitSent(ctx context.Context, seq uint64) (*Message, error) {
	sub := c.Subscribe()
	defer sub.Close()
	c.mu.Lock()
	start := c.eng.attempts
	c.mu.Unlock()
	c.kickDial() // someone is waiting: do not sit out a backoff
	for {
		m, err := c.Message(ctx, seq)
		if err != nil {
			return nil, err
		}
		if (m.State != StateQueued && m.State != StateUploading) || (m.State == StateQueued && m.Err != "") {
			return m, nil
		}
		c.mu.Lock()
		e := c.eng
		c.mu.Unlock()
		if !e.running {
			return m, fmt.Errorf("%w: the engine is not running", ErrOffline)
		}
		if e.attempts > start && e.live == nil && e.status.State != ConnConnecting {
			return m, offlineErr(e.status.Err)
		}
		select {
		case <-ctx.Done():
			return m, ctx.Err()
		case _, ok := <-sub.Events():
			if !ok {
				return m, errors.New("client closed")
			}
		}
	}
}

// transcriptID is the client message id of the copy of message id sent to
// this user's other devices. It must differ from id (the server
// deduplicates per sender device and id) and be the same on every retry
// (so that the server stores it once).
func transcriptID(id MessageID) MessageID {
	sum := sha256.Sum256(append([]byte("magpie transcript id\x00"), id[:]...))
	return MessageID(sum[:16])
}

// flusher sends the outbox whenever there is something to send, until the
// connection ends.
func (c *Client) flusher(ctx context.Context, conn *clientconn.Conn, own bool) error {
	var retry time.Duration
	for c.sleep(ctx, workerOutbox, retry) {
		var err error
		if retry, err = c.flushOnce(ctx, conn, own); err != nil {
			return err
		}
	}
	return nil
}

// flushOnce sends every item that is due, oldest first. Order is kept per
// recipient: an item refused for now holds back later ones to the same
// peer, not to anyone else. It returns when to try again (0: only when
// kicked).
func (c *Client) flushOnce(ctx context.Context, conn *clientconn.Conn, own bool) (time.Duration, error) {
	var items []outboxItem
	err := c.view(ctx, func(t sealedTx) error {
		return t.Scan(nsOutbox, "", "", false, func(_ string, v []byte) (bool, error) {
			var it outboxItem
			if err := jsonRecord(v, &it); err != nil {
				return false, err
			}
			items = append(items, it)
			return true, nil
		})
	})
	if err != nil {
		return 0, err
	}
	var retry time.Duration
	held := map[string]bool{}
	for _, it := range items {
		now := c.opts.Now()
		if held[it.Peer] {
			continue
		}
		if wait := time.UnixMilli(it.NotBefore).Sub(now); it.NotBefore != 0 && wait > 0 {
			held[it.Peer] = true
			if retry == 0 || wait < retry {
				retry = wait
			}
			continue
		}
		err := c.sendItem(ctx, conn, &it, own)
		if err == nil {
			continue
		}
		var se *clientconn.ServerError
		switch {
		case errors.Is(err, errSkipped):
		case errors.As(err, &se) && (se.Temporary() || errors.Is(err, clientconn.ErrMismatchedDevices)):
			held[it.Peer] = true
			wait := se.RetryAfter
			if wait <= 0 {
				wait = min(time.Second<<min(it.Tries, 8), 5*time.Minute)
			}
			if retry == 0 || wait < retry {
				retry = wait
			}
			if err := c.deferItem(ctx, &it, now.Add(wait), se); err != nil {
				return 0, err
			}
		case errors.As(err, &se) || errors.Is(err, ErrIdentityChanged) || errors.Is(err, e2e.ErrNoContact) ||
			errors.Is(err, ErrNotMember) || errors.Is(err, ErrForbidden) || errors.Is(err, ErrUnknownGroup) || errors.Is(err, ErrGroupRefused):
			if err := c.failItem(ctx, &it, err); err != nil {
				return 0, err
			}
		default:
			return 0, err // the connection or the store: the session ends
		}
	}
	return retry, nil
}

// errSkipped: the item was cancelled (or is gone) and was not sent.
var errSkipped = errors.New("skipped")

// sendItem sends one outbox item and records that it was sent.
func (c *Client) sendItem(ctx context.Context, conn *clientconn.Conn, it *outboxItem, own bool) error {
	c.mu.Lock()
	if c.eng.cancelling[it.Msg] {
		c.mu.Unlock()
		return errSkipped
	}
	c.eng.sending = it.Msg
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.eng.sending = 0
		c.mu.Unlock()
	}()
	// Read the item again: a Cancel may have removed it since the scan.
	var payload []byte
	var r *msgRecord
	err := c.view(ctx, func(t sealedTx) error {
		if v, err := t.Get(nsOutbox, seqKey(it.Seq)); err != nil || v == nil {
			return errors.Join(err, errSkipped)
		}
		if it.Msg == 0 {
			payload = it.Payload
			return nil
		}
		var err error
		if r, err = getMessage(t, it.Msg); err != nil {
			return err
		}
		if r.Content != nil {
			payload = r.Content
		} else {
			payload, err = content.EncodeText(r.Text, msTime(r.Composed))
		}
		return err
	})
	if err != nil {
		return err
	}
	if gid, ok := groupOf(it.Peer); ok {
		res, recipients, err := c.sendGroupItem(ctx, conn, it, gid, payload)
		if err != nil {
			return err
		}
		return c.changeItem(ctx, it, func(t sealedTx) error { return t.Delete(nsOutbox, seqKey(it.Seq)) }, func(r *msgRecord) {
			r.Server, r.Err, r.Recipients = unixMs(res.ServerTime), "", recipients
			if r.State == StateQueued {
				r.State = StateSent
			}
			groupState(r)
		})
	}
	s, err := c.sesame(ctx, conn)
	if err != nil {
		return err
	}
	res, err := s.Send(ctx, it.Peer, [16]byte(it.ID), payload, false)
	me, _ := c.Account()
	if err == nil && r != nil && own && it.Peer != me.User {
		// Sesame: this user's other devices get a transcript, so the
		// conversation is complete on each of them.
		var cm *content.Content
		var transcript []byte
		if cm, err = content.Decode(payload); err == nil {
			if transcript, err = content.EncodeSent(it.Peer, [16]byte(it.ID), cm); err == nil {
				_, err = s.Send(ctx, me.User, transcriptID(MessageID(it.ID)), transcript, false)
			}
		}
	}
	if err != nil {
		return err
	}
	return c.changeItem(ctx, it, func(t sealedTx) error { return t.Delete(nsOutbox, seqKey(it.Seq)) }, func(r *msgRecord) {
		r.Server, r.Err = unixMs(res.ServerTime), ""
		if r.State == StateQueued {
			r.State = StateSent
		}
	})
}

// changeItem changes an outbox item (item) and, in the same transaction,
// its message (msg) if it has one, and publishes the message's change.
func (c *Client) changeItem(ctx context.Context, it *outboxItem, item func(t sealedTx) error, msg func(r *msgRecord)) error {
	if it.Msg == 0 {
		return c.update(ctx, item)
	}
	return c.changeMessage(ctx, it.Msg, func(t sealedTx, r *msgRecord) error {
		if err := item(t); err != nil {
			return err
		}
		msg(r)
		return nil
	})
}

// deferItem records a temporary refusal: the item waits until then, and
// its message says why.
func (c *Client) deferItem(ctx context.Context, it *outboxItem, then time.Time, why error) error {
	it.Tries++
	it.NotBefore = unixMs(then)
	return c.changeItem(ctx, it, func(t sealedTx) error { return putJSON(t, nsOutbox, seqKey(it.Seq), it) }, func(r *msgRecord) {
		r.Err = "not sent yet, will try again: " + why.Error()
	})
}

// failItem records a refusal for good: the item leaves the outbox and its
// message says why.
func (c *Client) failItem(ctx context.Context, it *outboxItem, why error) error {
	c.opts.Logger.Info("a message was refused", "to", it.Peer, "err", why)
	return c.changeItem(ctx, it, func(t sealedTx) error { return t.Delete(nsOutbox, seqKey(it.Seq)) }, func(r *msgRecord) {
		r.State, r.Err, r.ErrCode = StateFailed, why.Error(), failureCode(why)
	})
}

// failureCode classifies why a message failed (Message.ErrCode).
func failureCode(err error) string {
	switch {
	case errors.Is(err, ErrUnknownUser):
		return "unknown_user"
	case errors.Is(err, ErrIdentityChanged):
		return "identity_changed"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrNoKeys), errors.Is(err, e2e.ErrNoContact):
		return "no_keys"
	case errors.Is(err, ErrQuota):
		return "quota"
	case errors.Is(err, ErrAttachmentDigest), errors.Is(err, attach.ErrTampered):
		return "tampered"
	case errors.Is(err, ErrNotMember), errors.Is(err, ErrUnknownGroup):
		return "not_member"
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrGroupRefused):
		return "forbidden"
	}
	return "refused"
}
