package sqlite

import (
	"fmt"

	"github.com/magpie-im/magpie/store"
)

// A sender's share of a recipient device's queue (Enqueue.SenderShare,
// GroupSend.SenderShare): so that one sender cannot fill a queue and shut
// everyone else out, no sender may hold more than the share in it.
//
// The queue's length is in memory (counts.go); a sender's part of it is
// only needed once the whole queue is at least a share long, which
// honest use rarely reaches. Then it is counted from the database once
// and kept in memory (senderCounts), added to as the sender's items are
// queued and forgotten, for the device, whenever the device's items go
// (acknowledgements, expiry): the next check counts again. A failed
// commit forgets everything.

type senderKey struct {
	dev    store.DeviceAddr
	sender string
}

// senderCounts are the counted parts, by device and sender, as of the
// last commit; the committer's changes go in delta until it commits.
type senderCounts struct {
	n     map[senderKey]int64
	delta map[senderKey]int64
}

// overShare reports whether sender already holds share items (messages
// and group messages) in d's queue.
func (c *committer) overShare(d store.DeviceAddr, sender string, share int) (bool, error) {
	if share <= 0 || c.queued(d) < int64(share) {
		return false, nil
	}
	k := senderKey{d, sender}
	n, ok := c.senders.n[k]
	if !ok {
		row, err := c.queryRow(stSenderCount, d.User, d.Device, sender)
		if err != nil {
			return false, err
		}
		if err := row.Scan(&n); err != nil {
			return false, fmt.Errorf("count a sender's items: %w", err)
		}
		if c.senders.n == nil {
			c.senders.n = make(map[senderKey]int64)
		}
		// As of now in this transaction (its earlier inserts included);
		// later ones go to delta; a failed commit forgets it all.
		c.senders.n[k] = n
	}
	return n+c.senders.delta[k] >= int64(share), nil
}

// queuedFrom notes an item of sender queued for d, for a counted pair.
func (c *committer) queuedFrom(d store.DeviceAddr, sender string) {
	k := senderKey{d, sender}
	if _, ok := c.senders.n[k]; !ok {
		return
	}
	if c.senders.delta == nil {
		c.senders.delta = make(map[senderKey]int64)
	}
	c.senders.delta[k]++
}

// forgetDevice drops d's counted pairs: its items went.
func (s *senderCounts) forgetDevice(d store.DeviceAddr) {
	for k := range s.n {
		if k.dev == d {
			delete(s.n, k)
		}
	}
	for k := range s.delta {
		if k.dev == d {
			delete(s.delta, k)
		}
	}
}

// applyDelta folds a committed transaction's additions in.
func (s *senderCounts) applyDelta() {
	for k, v := range s.delta {
		if _, ok := s.n[k]; ok {
			s.n[k] += v
		}
	}
	s.delta = nil
}

// senderCountSQL counts sender's messages and group messages in one
// device's queue (a group item's sender is on its shared row).
const senderCountSQL = `SELECT count(*) FROM queue q LEFT JOIN shared s ON s.id = q.shared_id
	WHERE q.to_user = ?1 AND q.to_device = ?2 AND q.kind IN (1, 3) AND coalesce(nullif(q.from_user, ''), s.from_user) = ?3`
