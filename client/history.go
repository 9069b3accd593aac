package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/magpie-im/magpie/e2e"
)

// ErrNoMessage means no message has that Seq (or id).
var ErrNoMessage = errors.New("no such message")

// addMessage stores a new message: it gives it the next Seq and indexes it
// (by id, for receipts and deduplication, and in its conversation).
func addMessage(t sealedTx, r *msgRecord) error {
	seq, err := nextSeq(t)
	if err != nil {
		return err
	}
	r.Seq = seq
	if err := setExpiry(t, r); err != nil {
		return err
	}
	if err := putJSON(t, nsMsg, msgKey(r.Peer, seq), r); err != nil {
		return err
	}
	if err := t.Put(nsSeq, seqKey(seq), []byte(r.Peer)); err != nil {
		return err
	}
	if r.Outgoing {
		err = t.Put(nsOut, hex.EncodeToString(r.ID), []byte(seqKey(seq)))
	} else {
		err = t.Put(nsIn, inKey(r.sender(""), r.Device, MessageID(r.ID)), []byte(seqKey(seq)))
	}
	if err != nil {
		return err
	}
	var conv convRecord
	if _, err := getJSON(t, nsConv, r.Peer, &conv); err != nil {
		return err
	}
	conv.Last = seq
	if !r.Outgoing && !r.Notice && r.State == StateReceived {
		conv.Unread++
	}
	return putJSON(t, nsConv, r.Peer, conv)
}

// inKey indexes a received message by its sender's device and id: a
// redelivery has the same, a different sender's reuse of the id does not.
func inKey(peer string, device uint32, id MessageID) string {
	return fmt.Sprintf("%s/%d/%x", peer, device, id[:])
}

// received reports whether the message was stored before.
func received(t sealedTx, peer string, device uint32, id MessageID) (bool, error) {
	v, err := t.Get(nsIn, inKey(peer, device, id))
	return v != nil, err
}

// getMessage reads the message with seq.
func getMessage(t sealedTx, seq uint64) (*msgRecord, error) {
	peer, err := t.Get(nsSeq, seqKey(seq))
	if err != nil {
		return nil, err
	}
	if peer == nil {
		return nil, ErrNoMessage
	}
	var r msgRecord
	if ok, err := getJSON(t, nsMsg, msgKey(string(peer), seq), &r); err != nil || !ok {
		return nil, errors.Join(err, ErrNoMessage)
	}
	return &r, nil
}

// sentMessage reads the message this account sent with id, if it is here.
func sentMessage(t sealedTx, id MessageID) (*msgRecord, error) {
	k, err := t.Get(nsOut, hex.EncodeToString(id[:]))
	if err != nil || k == nil {
		return nil, err
	}
	seq, err := parseSeqKey(string(k))
	if err != nil {
		return nil, fmt.Errorf("%w: index of %x: %w", ErrCorrupt, id[:], err)
	}
	return getMessage(t, seq)
}

func putMessage(t sealedTx, r *msgRecord) error {
	return putJSON(t, nsMsg, msgKey(r.Peer, r.Seq), r)
}

// readSeq is the read mark of peer's conversation.
func readSeq(t sealedTx, peer string) (uint64, error) {
	var conv convRecord
	_, err := getJSON(t, nsConv, peer, &conv)
	return conv.ReadSeq, err
}

// publicMessage is r as the application sees it.
func (c *Client) publicMessage(t sealedTx, r *msgRecord) (*Message, error) {
	rs, err := readSeq(t, r.Peer)
	if err != nil {
		return nil, err
	}
	me, _ := c.Account()
	m := r.message(rs, me.User)
	return &m, nil
}

// Message returns the message with seq.
func (c *Client) Message(ctx context.Context, seq uint64) (*Message, error) {
	var m *Message
	err := c.view(ctx, func(t sealedTx) error {
		r, err := getMessage(t, seq)
		if err != nil {
			return err
		}
		m, err = c.publicMessage(t, r)
		return err
	})
	return m, err
}

// HistoryQuery selects messages of one conversation.
type HistoryQuery struct {
	// Before: only messages with a smaller Seq (0: from the newest).
	Before uint64
	// Limit: at most this many, the newest of those selected (50 if 0).
	Limit int
	// Search: only messages whose text contains this, ignoring case.
	Search string
}

// History returns messages of the conversation with peer, oldest first, and
// whether older ones (that match) exist. A page is the newest Limit
// messages before q.Before, so paging back passes the first one's Seq.
func (c *Client) History(ctx context.Context, peer string, q HistoryQuery) (msgs []Message, more bool, err error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	search := strings.ToLower(q.Search)
	to := prefixEnd(peer + "/")
	if q.Before != 0 {
		to = msgKey(peer, q.Before)
	}
	me, _ := c.Account()
	err = c.view(ctx, func(t sealedTx) error {
		rs, err := readSeq(t, peer)
		if err != nil {
			return err
		}
		// Rows are opened one by one: one that does not decrypt or decode
		// (a damaged disk block) is reported in its place, and the rest
		// of the conversation still reads.
		return t.r.Scan(nsMsg, peer+"/", to, true, func(k string, v []byte) (bool, error) {
			var r msgRecord
			pt, err := t.open(nsMsg, k, v)
			if err == nil {
				err = jsonRecord(pt, &r)
			}
			if err != nil {
				c.opts.Logger.Warn("an unreadable history record", "key", k, "err", err)
				if search != "" {
					return true, nil
				}
				if len(msgs) == q.Limit {
					more = true
					return false, nil
				}
				msgs = append(msgs, damagedMessage(peer, k))
				return true, nil
			}
			if search != "" && !strings.Contains(strings.ToLower(r.Text+" "+attachmentName(&r)), search) {
				return true, nil
			}
			if len(msgs) == q.Limit {
				more = true
				return false, nil
			}
			msgs = append(msgs, r.message(rs, me.User))
			return true, nil
		})
	})
	slices.Reverse(msgs)
	return msgs, more, err
}

// ErrCodeDamaged is the Message.ErrCode of a placeholder for a message
// whose stored record could not be read.
const ErrCodeDamaged = "damaged"

// damagedMessage stands in the history for the message stored under key
// (peer/seq) whose record does not decrypt or decode.
func damagedMessage(peer, key string) Message {
	seq, _ := parseSeqKey(strings.TrimPrefix(key, peer+"/"))
	return Message{Seq: seq, Peer: peer, State: StateUnreadable, ErrCode: ErrCodeDamaged,
		Err: "this client's stored copy of the message is damaged and cannot be read"}
}

func attachmentName(r *msgRecord) string {
	if a := r.attachment(); a != nil {
		return a.GetFileName()
	}
	return ""
}

// Conversations lists the conversations, the most recent first.
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	var out []Conversation
	me, _ := c.Account()
	err := c.view(ctx, func(t sealedTx) error {
		kv := t
		return t.Scan(nsConv, "", "", false, func(peer string, v []byte) (bool, error) {
			var conv convRecord
			if err := jsonRecord(v, &conv); err != nil {
				return false, err
			}
			cv := Conversation{Peer: peer, Unread: conv.Unread}
			var r msgRecord
			if ok, err := getJSON(t, nsMsg, msgKey(peer, conv.Last), &r); errors.Is(err, ErrCorrupt) {
				c.opts.Logger.Warn("an unreadable history record", "key", msgKey(peer, conv.Last), "err", err)
				m := damagedMessage(peer, msgKey(peer, conv.Last))
				cv.Last = &m
			} else if err != nil {
				return false, err
			} else if ok {
				m := r.message(conv.ReadSeq, me.User)
				cv.Last = &m
			}
			if id, ok := groupOf(peer); ok {
				name, err := groupName(t, id)
				cv.Group, cv.Name = &id, name
				out = append(out, cv)
				return true, err
			}
			contact, err := e2e.LoadContact(kv, peer)
			if err != nil {
				return false, err
			}
			if contact != nil {
				cv.Verified, cv.IdentityChanged = contact.Verified, contact.Pending != nil
			}
			out = append(out, cv)
			return true, nil
		})
	})
	slices.SortFunc(out, func(a, b Conversation) int {
		var sa, sb uint64
		if a.Last != nil {
			sa = a.Last.Seq
		}
		if b.Last != nil {
			sb = b.Last.Seq
		}
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return strings.Compare(a.Peer, b.Peer)
	})
	return out, err
}

// maxReceiptIDs bounds the message ids in one read receipt.
const maxReceiptIDs = 256

// MarkRead marks every message of the conversation with peer as read, and
// (unless read receipts are off) tells peer which of theirs were read. It
// returns how many were unread. Applications call it when they show the
// conversation.
func (c *Client) MarkRead(ctx context.Context, peer string) (int, error) {
	sendReceipts := c.ReadReceipts()
	n := 0
	err := c.update(ctx, func(t sealedTx) error {
		n = 0
		var conv convRecord
		if ok, err := getJSON(t, nsConv, peer, &conv); err != nil || !ok {
			return err
		}
		if conv.ReadSeq >= conv.Last && conv.Unread == 0 {
			return nil
		}
		// Receipts go to whoever wrote the messages: the peer, or each
		// member of a group.
		ids := map[string][][]byte{}
		var senders []string
		err := t.r.Scan(nsMsg, msgKey(peer, conv.ReadSeq+1), prefixEnd(peer+"/"), false, func(k string, v []byte) (bool, error) {
			var r msgRecord
			pt, err := t.open(nsMsg, k, v)
			if err == nil {
				err = jsonRecord(pt, &r)
			}
			if err != nil {
				return true, nil // reported by History
			}
			if !r.Outgoing && !r.Notice && r.State == StateReceived {
				n++
				from := r.sender("")
				if ids[from] == nil {
					senders = append(senders, from)
				}
				ids[from] = append(ids[from], r.ID)
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		conv.ReadSeq, conv.Unread = conv.Last, 0
		if err := putJSON(t, nsConv, peer, conv); err != nil {
			return err
		}
		if !sendReceipts {
			return nil
		}
		for _, from := range senders {
			for list := ids[from]; len(list) > 0; {
				k := min(len(list), maxReceiptIDs)
				if err := queueReadReceipt(t, from, list[:k], c.opts.Now()); err != nil {
					return err
				}
				list = list[k:]
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		c.publish(Event{Kind: EventRead, Peer: peer})
		c.kick(workerOutbox)
	}
	return n, nil
}
