package pebblestore

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// A group message or change is stored once, as a shared record (header,
// payload, and the devices it went to), and each device's queue holds an
// item that names it. The record goes with its last item, acknowledged or
// expired.

func (c *committer) groupChange(g *store.GroupChange) error {
	if g.Seq > math.MaxInt64 {
		g.Err = store.ErrConflict // no head can precede it
		return nil
	}
	gk := groupKey(nil, g.Group)
	v, exists, err := c.get(gk)
	if err != nil {
		return fmt.Errorf("group head: %w", err)
	}
	switch {
	case g.Seq == 0 && exists:
		g.Err = store.ErrConflict
		return nil
	case g.Seq > 0 && !exists:
		g.Err = store.ErrNotFound
		return nil
	case g.Seq > 0:
		if len(v) < 8 {
			return fmt.Errorf("group head: %w", errCorrupt)
		}
		if be64(v) != g.Seq-1 {
			g.Err = store.ErrConflict
			return nil
		}
	}
	head := make([]byte, 8, 8+len(g.State))
	putBE64(head, g.Seq)
	if err := c.b.Set(gk, append(head, g.State...), nil); err != nil {
		return err
	}
	if err := c.b.Set(groupLogKey(nil, g.Group, g.Seq), g.Change, nil); err != nil {
		return err
	}
	to, err := c.devicesOf(g.Notify)
	if err != nil {
		return err
	}
	g.Queued, err = c.insertShared(store.Message{
		Kind:    store.KindGroupChange,
		From:    g.From,
		Payload: g.Change,
		Sent:    time.Unix(0, c.now),
		Expires: time.Unix(0, g.Expires.UnixNano()),
		Group:   g.Group,
	}, to)
	return err
}

// devicesOf lists every device of the named users (each once; unknown
// users have none), users in order, devices by id.
func (c *committer) devicesOf(users []string) ([]store.DeviceAddr, error) {
	seen := make(map[string]bool, len(users))
	var out []store.DeviceAddr
	for _, u := range users {
		if seen[u] {
			continue
		}
		seen[u] = true
		rs, err := c.recipients(u)
		if err != nil {
			return nil, fmt.Errorf("devices of %q: %w", u, err)
		}
		for _, r := range rs {
			out = append(out, store.DeviceAddr{User: u, Device: r.Device})
		}
	}
	return out, nil
}

func (c *committer) groupSend(g *store.GroupSend) error {
	if g.Err = batchrules.CheckGroupSend(g.To); g.Err != nil {
		return nil
	}
	var err error
	if g.Duplicate, g.Sent, err = c.claimClientID(g.From, g.ClientID, g.Expires); err != nil || g.Duplicate {
		return err
	}
	to := g.To
	if g.QueueLimit > 0 || g.SenderShare > 0 {
		to = make([]store.DeviceAddr, 0, len(g.To))
		for _, d := range g.To {
			over := g.QueueLimit > 0 && c.queued(d) >= int64(g.QueueLimit)
			if !over && g.SenderShare > 0 && d.User != g.From.User {
				if over, err = c.overShare(d, g.From.User, g.SenderShare); err != nil {
					return err
				}
			}
			if over {
				g.Full = append(g.Full, d)
			} else {
				to = append(to, d)
			}
		}
	}
	queued, err := c.insertShared(store.Message{
		Kind:     store.KindGroupMessage,
		From:     g.From,
		ClientID: g.ClientID,
		Payload:  g.Payload,
		Sent:     time.Unix(0, c.now),
		Expires:  time.Unix(0, g.Expires.UnixNano()),
		Group:    g.Group,
	}, to)
	switch {
	case errors.Is(err, errNoDevice):
		g.Err, g.Full = store.ErrNotFound, nil
	case err != nil:
		return err
	case len(queued) == 0:
		g.Err = store.ErrQueueFull
	default:
		g.Sent, g.Queued = time.Unix(0, c.now), queued
		for _, m := range queued {
			c.senders.QueuedFrom(m.To, g.From.User)
		}
		return nil
	}
	return c.releaseClientID(g.From, g.ClientID, g.Expires)
}

var errNoDevice = errors.New("no such device")

// insertShared stores m once and queues an item naming it for each device
// of to, in order; errNoDevice, writing nothing, if one does not exist.
func (c *committer) insertShared(m store.Message, to []store.DeviceAddr) ([]store.Message, error) {
	if len(to) == 0 {
		return nil, nil
	}
	for _, d := range to {
		ok, err := c.deviceExists(d)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errNoDevice
		}
	}
	id := c.seq
	queued := make([]store.Message, 0, len(to))
	targets := make([]byte, 0, len(to)*(1+16+4+8))
	c.v = appendItem(c.v[:0], &item{kind: m.Kind, shared: id})
	for _, d := range to {
		seq := c.seq
		c.seq++
		if err := c.b.Set(queueKey(c.k[:0], d, seq), c.v, nil); err != nil {
			return nil, err
		}
		targets = appendTarget(targets, d, seq)
		queued = append(queued, m)
		queued[len(queued)-1].To, queued[len(queued)-1].Seq = d, seq
		c.delta[d]++
	}
	h := shared{refs: uint64(len(to)), expires: m.Expires.UnixNano(), sent: m.Sent.UnixNano(), kind: m.Kind, group: m.Group, from: m.From}
	if m.Kind != store.KindGroupChange {
		h.cid = m.ClientID
	}
	if err := errors.Join(
		c.b.Set(u64Key(c.k[:0], tShared, id), appendShared(nil, &h), nil),
		c.b.Set(u64Key(c.k[:0], tPayload, id), m.Payload, nil),
		c.b.Set(u64Key(c.k[:0], tTargets, id), targets, nil),
		c.b.Set(expiryKey(c.k[:0], tSharedExp, h.expires, id), nil, nil),
	); err != nil {
		return nil, err
	}
	return queued, nil
}
