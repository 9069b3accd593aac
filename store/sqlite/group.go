package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// A group message or change is stored once, as a row of shared (sender,
// client id, group, send time, expiry, reference count) and one of
// shared_payload, and queued as one small row of queue per recipient
// device, which names the shared row (schema version 4). The queue row is
// an item like any other: its device's seq order, queue length, acks and
// Pending treat it as they treat a 1:1 item. shared.refs counts the queue
// rows; an ack batch drops as many references as it removes
// (releaseShared), and the shared row and its payload go with the last.
// Expire removes a shared row's items, and the row, at its expiry.
//
// The layout is what measured cheapest. Storage per recipient device
// beyond the payload (BenchmarkGroupSend, 1 KiB messages, user names of 8
// characters, the file's growth after a checkpoint): 81 bytes at 1,024
// devices and 86 at 50 with group items in queue_by_expiry like any item;
// 51 and 61 with them left out of it (the index is partial) and their
// expiry column empty, the shared row holding both. Of the 51, the queue
// row is 30 and its queue_by_device entry 24 (dbstat). Dropping the
// references of a drain of group items (BenchmarkGroupAck/drain, store
// CPU per item): 42.6 µs with an UPDATE per shared row, 35.3 µs with one
// UPDATE … FROM json_each per batch, 20.3 µs with that and the payload in
// a table of its own (an UPDATE rewrites the whole row, payload and all),
// against 18 µs for a drain of 1:1 items (BenchmarkAck/acks=16); medians
// of 6, 6 and 3 runs, alternated.

// groupChange appends g to its group's log, or sets g.Err and writes
// nothing.
func (c *committer) groupChange(g *store.GroupChange) error {
	if g.Seq > math.MaxInt64 {
		g.Err = store.ErrConflict // no head can precede it
		return nil
	}
	var (
		res sql.Result
		err error
	)
	if g.Seq == 0 {
		res, err = c.exec(stGroupCreate, g.Group[:], nonNil(g.State))
	} else {
		res, err = c.exec(stGroupAdvance, g.Group[:], int64(g.Seq), nonNil(g.State))
	}
	if err != nil {
		return fmt.Errorf("group head: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("group head: %w", err)
	} else if n == 0 {
		return c.headConflict(g)
	}
	if _, err := c.exec(stGroupLogAppend, g.Group[:], int64(g.Seq), nonNil(g.Change)); err != nil {
		return fmt.Errorf("group log: %w", err)
	}
	to, err := c.devicesOf(g.Notify)
	if err != nil {
		return err
	}
	g.Queued, err = c.insertShared(store.Message{
		Kind:    store.KindGroupChange,
		From:    g.From,
		Payload: g.Change,
		Sent:    fromNS(c.now),
		Expires: fromNS(ns(g.Expires)),
		Group:   g.Group,
	}, to)
	return err
}

// headConflict sets g.Err to why g, which did not move its group's head,
// was refused: the group exists (another change came first), or, for
// Seq > 0, there is no such group.
func (c *committer) headConflict(g *store.GroupChange) error {
	g.Err = store.ErrConflict
	if g.Seq == 0 {
		return nil
	}
	row, err := c.queryRow(stGroupExists, g.Group[:])
	if err != nil {
		return err
	}
	var one int
	switch err := row.Scan(&one); {
	case err == nil:
	case errors.Is(err, sql.ErrNoRows):
		g.Err = store.ErrNotFound
	default:
		return fmt.Errorf("group lookup: %w", err)
	}
	return nil
}

// devicesOf returns every device of the users named, users in order
// (each once), each user's devices by id; unknown users have none.
func (c *committer) devicesOf(users []string) ([]store.DeviceAddr, error) {
	st, err := c.stmt(stUserDevices)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(users))
	var out []store.DeviceAddr
	for _, u := range users {
		if seen[u] {
			continue
		}
		seen[u] = true
		rows, err := st.QueryContext(c.ctx, u)
		if err != nil {
			return nil, fmt.Errorf("devices of %q: %w", u, err)
		}
		for rows.Next() {
			d := store.DeviceAddr{User: u}
			if err := rows.Scan(&d.Device); err != nil {
				rows.Close()
				return nil, fmt.Errorf("devices of %q: %w", u, err)
			}
			out = append(out, d)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("devices of %q: %w", u, err)
		}
	}
	return out, nil
}

// groupSend queues g, or sets g.Err and writes nothing. Its client id is
// claimed in the same records as an Enqueue's (enqueue).
func (c *committer) groupSend(g *store.GroupSend) error {
	if g.Err = batchrules.CheckGroupSend(g.To); g.Err != nil {
		return nil
	}
	var err error
	if g.Duplicate, g.Sent, err = c.claimClientID(g.From, g.ClientID, g.Expires); err != nil || g.Duplicate {
		return err
	}
	return c.groupSendClaimed(g)
}

// groupSendClaimed queues g, whose client id is claimed, for each device
// of g.To whose queue has room, or sets g.Err, releases the claim and
// writes nothing. A device skipped for a full queue exists: it has items.
func (c *committer) groupSendClaimed(g *store.GroupSend) error {
	to := g.To
	if g.QueueLimit > 0 || g.SenderShare > 0 {
		to = make([]store.DeviceAddr, 0, len(g.To))
		for _, d := range g.To {
			over := g.QueueLimit > 0 && c.queued(d) >= int64(g.QueueLimit)
			if !over && g.SenderShare > 0 && d.User != g.From.User {
				var err error
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
		Sent:     fromNS(c.now),
		Expires:  fromNS(ns(g.Expires)),
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
		g.Sent, g.Queued = fromNS(c.now), queued
		for _, m := range queued {
			c.senders.QueuedFrom(m.To, g.From.User)
		}
		return nil
	}
	return c.releaseClientID(g.From, g.ClientID)
}

// errNoDevice: a device to queue for does not exist.
var errNoDevice = errors.New("no such device")

// insertShared stores m's payload once, queues a reference to it for each
// device of to, and returns the items queued (m for each device, with its
// seq); none, and nothing stored, if to is empty. If a device of to does
// not exist, it returns errNoDevice and leaves nothing queued.
//
// The shared row's id is the seq of its first queue row, and its last_seq
// that of its last, so that the rows need no index of their own for
// Expire to find them. The queue rows name the shared row, so its id is
// taken before they are inserted: AUTOINCREMENT gives the next row one
// more than the largest seq ever used, and a first row that gets another
// fails the commit.
//
// That a device exists is checked by the queue's foreign key as each item
// is inserted (an INSERT of one row checks it before writing), and the
// items already inserted are deleted again if one is refused: a lookup of
// every device first, in one statement, was 6.7% of the store's CPU for
// a group send to 1,024 devices (pprof, BenchmarkGroupSend).
func (c *committer) insertShared(m store.Message, to []store.DeviceAddr) ([]store.Message, error) {
	if len(to) == 0 {
		return nil, nil
	}
	row, err := c.queryRow(stNextSeq)
	if err != nil {
		return nil, err
	}
	id := int64(1)
	if err := row.Scan(&id); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("next seq: %w", err)
	}
	queued := make([]store.Message, 0, len(to))
	for _, d := range to {
		res, err := c.exec(stInsertGroupItem, d.User, d.Device, uint8(m.Kind), id)
		if foreignKeyViolation(err) {
			return nil, c.undoGroupItems(id, queued)
		}
		if err != nil {
			return nil, fmt.Errorf("insert: %w", err)
		}
		seq, err := res.LastInsertId()
		if err != nil {
			return nil, fmt.Errorf("insert: %w", err)
		}
		if len(queued) == 0 && seq != id {
			return nil, fmt.Errorf("insert: the first item of a group send got seq %d, not %d", seq, id)
		}
		queued = append(queued, m)
		queued[len(queued)-1].To, queued[len(queued)-1].Seq = d, uint64(seq)
	}
	last := int64(queued[len(queued)-1].Seq)
	if _, err := c.exec(stInsertShared, id, last, len(to), ns(m.Expires), m.Group[:],
		m.From.User, m.From.Device, clientIDColumn(m), ns(m.Sent)); err != nil {
		return nil, fmt.Errorf("insert shared: %w", err)
	}
	if _, err := c.exec(stInsertSharedPayload, id, nonNil(m.Payload)); err != nil {
		return nil, fmt.Errorf("insert shared payload: %w", err)
	}
	for _, q := range queued {
		c.delta[q.To]++
	}
	return queued, nil
}

// undoGroupItems deletes the items that insertShared queued, naming shared
// row id, before a device was refused, and returns errNoDevice.
func (c *committer) undoGroupItems(id int64, queued []store.Message) error {
	if len(queued) > 0 {
		if _, err := c.exec(stUndoGroupItems, id, int64(queued[len(queued)-1].Seq)); err != nil {
			return fmt.Errorf("undo: %w", err)
		}
	}
	return errNoDevice
}

// clientIDColumn is m's client id as stored in shared: none for a change.
func clientIDColumn(m store.Message) []byte {
	if m.Kind == store.KindGroupChange {
		return []byte{}
	}
	return m.ClientID[:]
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{} // the columns are NOT NULL
	}
	return b
}

// releaseShared drops the references that the acknowledged items hold,
// in one statement however many items and shared rows there are, deletes
// the rows that lose their last one, and fills in each group item's
// sender and client id (its queue row has neither) for its receipt.
func (c *committer) releaseShared(per [][]ackedItem) error {
	var refs map[int64]int64
	for _, items := range per {
		for _, it := range items {
			if it.shared != 0 {
				if refs == nil {
					refs = make(map[int64]int64)
				}
				refs[it.shared]++
			}
		}
	}
	if refs == nil {
		return nil
	}
	list := make([]byte, 0, 16*len(refs))
	list = append(list, '[')
	for id, n := range refs {
		if len(list) > 1 {
			list = append(list, ',')
		}
		list = append(list, '[')
		list = strconv.AppendInt(list, id, 10)
		list = append(list, ',')
		list = strconv.AppendInt(list, n, 10)
		list = append(list, ']')
	}
	list = append(list, ']')
	senders, gone, err := c.release(string(list), len(refs))
	if err != nil {
		return err
	}
	if gone != nil {
		for _, st := range []int{stDeleteShared, stDeleteSharedPayload} {
			if _, err := c.exec(st, string(gone)); err != nil {
				return fmt.Errorf("delete shared: %w", err)
			}
		}
	}
	for _, items := range per {
		for j := range items {
			if s, ok := senders[items[j].shared]; ok {
				items[j].from, items[j].cid = s.from, s.cid
			}
		}
	}
	return nil
}

// release runs stReleaseShared with list, which names n shared rows, and
// returns each one's sender and client id and, as a JSON array, the ids
// of those left with no reference (nil if none).
func (c *committer) release(list string, n int) (senders map[int64]ackedItem, gone []byte, err error) {
	st, err := c.stmt(stReleaseShared)
	if err != nil {
		return nil, nil, err
	}
	rows, err := st.QueryContext(c.ctx, list)
	if err != nil {
		return nil, nil, fmt.Errorf("release shared: %w", err)
	}
	defer rows.Close()
	senders = make(map[int64]ackedItem, n)
	for rows.Next() {
		var (
			s        ackedItem
			id, left int64
			cid      []byte
		)
		if err := rows.Scan(&id, &left, &s.from.User, &s.from.Device, &cid); err != nil {
			return nil, nil, fmt.Errorf("release shared: %w", err)
		}
		if len(cid) != 0 { // a change has none
			if s.cid, err = toClientID(cid); err != nil {
				return nil, nil, fmt.Errorf("release shared %d: %w", id, err)
			}
		}
		senders[id] = s
		if left == 0 {
			gone = append(gone, ',')
			gone = strconv.AppendInt(gone, id, 10)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("release shared: %w", err)
	}
	if len(senders) != n {
		return nil, nil, fmt.Errorf("release shared: %d of %d rows found", len(senders), n)
	}
	if gone != nil {
		gone[0] = '['
		gone = append(gone, ']')
	}
	return senders, gone, nil
}

// Group implements store.Store.
func (s *Store) Group(ctx context.Context, id [store.GroupIDSize]byte) (uint64, []byte, error) {
	if err := s.enter(); err != nil {
		return 0, nil, err
	}
	defer s.gate.Leave()

	var (
		seq   int64
		state []byte
	)
	err := s.r.QueryRowContext(ctx, `SELECT seq, state FROM groups WHERE id = ?`, id[:]).Scan(&seq, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, store.ErrNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("sqlite: group: %w", err)
	}
	return uint64(seq), state, nil
}

// GroupLog implements store.Store.
func (s *Store) GroupLog(ctx context.Context, id [store.GroupIDSize]byte, from uint64, limit int) ([][]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()

	if limit <= 0 || from > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT change FROM group_log WHERE group_id = ? AND seq >= ? ORDER BY seq LIMIT ?`,
		id[:], int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: group log: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var ch []byte
		if err := rows.Scan(&ch); err != nil {
			return nil, fmt.Errorf("sqlite: group log: %w", err)
		}
		out = append(out, ch)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: group log: %w", err)
	}
	return out, nil
}
