package sqlite

import (
	"fmt"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// overShare reports whether sender already holds share items (messages
// and group messages) in d's queue, counting them in the database once
// the queue is at least a share long (batchrules.SenderCounts).
func (c *committer) overShare(d store.DeviceAddr, sender string, share int) (bool, error) {
	if share <= 0 || c.queued(d) < int64(share) {
		return false, nil
	}
	k := batchrules.SenderKey{Dev: d, Sender: sender}
	if over, counted := c.senders.Over(k, share); counted {
		return over, nil
	}
	row, err := c.queryRow(stSenderCount, d.User, d.Device, sender)
	if err != nil {
		return false, err
	}
	var n int64
	if err := row.Scan(&n); err != nil {
		return false, fmt.Errorf("count a sender's items: %w", err)
	}
	// As of now in this transaction (its earlier inserts included); later
	// ones go to the delta; a failed commit forgets it all.
	c.senders.Counted(k, n)
	over, _ := c.senders.Over(k, share)
	return over, nil
}

// senderCountSQL counts sender's messages and group messages in one
// device's queue (a group item's sender is on its shared row).
const senderCountSQL = `SELECT count(*) FROM queue q LEFT JOIN shared s ON s.id = q.shared_id
	WHERE q.to_user = ?1 AND q.to_device = ?2 AND q.kind IN (1, 3) AND coalesce(nullif(q.from_user, ''), s.from_user) = ?3`
