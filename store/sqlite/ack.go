package sqlite

import (
	"cmp"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/magpie-im/magpie/store"
)

// ackAll applies a batch's Acks inside its transaction: the DELETE …
// RETURNINGs below, then one prepared INSERT per receipt; the queue counts
// change in memory (counts.go).
//
// A chat's Acks name one or two seqs each, and a statement per Ack cost
// more in binding, the IN list's ephemeral table and cursors than in
// deleting: all of a batch's small Acks go in one statement
// (BenchmarkChatCommit: 130 → 108 µs of store CPU per message). A draining
// device's Acks name hundreds, and for those the one-device statement,
// which searches the covering index by device and seq, costs about a sixth
// less than the joined one (BenchmarkAck: 16.5 against 19.9 µs per
// message), so each large Ack keeps its own. A DELETE and a counter
// update per seq, as at first, cost more than twice the CPU per
// acknowledged message (BenchmarkAck: 44 → 19 µs). Batching the receipts
// too (INSERT … SELECT from json_each, or multi-row VALUES, with or
// without RETURNING) measured slower than one plain INSERT each.
//
// A group item (group.go) names a shared row, which holds its sender and
// client id: releaseShared drops the batch's references to shared rows in
// one statement, and what it returns fills in the receipts' senders.
//
// A seq named twice for the same device is removed once, and its receipt
// goes to one of the Acks that name it. Each Ack's receipts are queued in
// the order of its acknowledged items' seqs (the order they were delivered
// in), Ack by Ack, so a.Receipts is in Seq order.
func (c *committer) ackAll(acks []*store.Ack) error {
	per := make([][]ackedItem, len(acks))
	small := make([]int, 0, len(acks))
	if len(c.senders.N) > 0 {
		for _, a := range acks {
			c.senders.ForgetDevice(a.Device) // its items go: count again
		}
	}
	for i, a := range acks {
		if len(a.Seqs) < largeAck {
			small = append(small, i)
			continue
		}
		if list := appendSeqList(nil, a.Seqs); list != nil {
			var err error
			if per[i], err = c.deleteAcked(stDeleteAcked, string(list), a.Device.User, a.Device.Device); err != nil {
				return fmt.Errorf("ack %d: %w", i, err)
			}
		}
	}
	if list, owner := ackList(acks, small); owner != nil {
		gone, err := c.deleteAcked(stDeleteAckedList, string(list))
		if err != nil {
			return err
		}
		for _, it := range gone {
			i, ok := owner[ackKey{it.to, it.seq}]
			if !ok {
				// The DELETE matches the list's (seq, device) pairs exactly.
				return fmt.Errorf("delete: removed item %d of %s/%d, which no ack named", it.seq, it.to.User, it.to.Device)
			}
			per[i] = append(per[i], it)
		}
	}
	if err := c.releaseShared(per); err != nil {
		return err
	}
	for i, a := range acks {
		items := per[i]
		if len(items) == 0 {
			continue // unknown, already acked, or another device's items
		}
		c.delta[a.Device] -= int64(len(items))
		// One receipt per message (not per receipt or group change) removed.
		slices.SortFunc(items, func(x, y ackedItem) int { return cmp.Compare(x.seq, y.seq) })
		for _, it := range items {
			if it.kind != store.KindMessage && it.kind != store.KindGroupMessage {
				continue
			}
			if err := c.insertReceipt(a, it); err != nil {
				return fmt.Errorf("ack %d: %w", i, err)
			}
		}
	}
	return nil
}

// largeAck is the number of seqs from which an Ack gets a statement of its
// own (ackAll). Clients acknowledge a chat's pushes one or a few at a time
// and a drain's in hundreds, so anything between the two does.
const largeAck = 16

// ackKey is one acknowledged item: the acknowledging device and the seq.
type ackKey struct {
	dev store.DeviceAddr
	seq int64
}

// ackList returns the (seq, user, device) triples that acks[i], for i in
// which, name, as a JSON array for stDeleteAckedList, and, for each, the
// index of the first Ack that names it. Seqs that cannot name a stored
// item (0, and above the largest SQLite integer) are left out; owner is
// nil if none is left.
func ackList(acks []*store.Ack, which []int) (list []byte, owner map[ackKey]int) {
	list = append(list, '[')
	for _, i := range which {
		a := acks[i]
		for _, q := range a.Seqs {
			if !storableSeq(q) {
				continue
			}
			k := ackKey{a.Device, int64(q)}
			if _, seen := owner[k]; seen {
				continue
			}
			if owner == nil {
				owner = make(map[ackKey]int)
			}
			owner[k] = i
			if len(list) > 1 {
				list = append(list, ',')
			}
			list = append(list, '[')
			list = strconv.AppendUint(list, q, 10)
			list = append(list, ',')
			list = appendJSONString(list, a.Device.User)
			list = append(list, ',')
			list = strconv.AppendUint(list, uint64(a.Device.Device), 10)
			list = append(list, ']')
		}
	}
	return append(list, ']'), owner
}

// appendJSONString appends s as a JSON string. Usernames need no escaping
// (package username: ASCII letters, digits and underscore), so that is the
// fast path. What JSON requires escaping (RFC 8259 §7: the quotation mark,
// the backslash and control characters), and any non-ASCII byte, goes
// through encoding/json, whose output is always valid UTF-8: SQLite's
// json_each rejects malformed text, and that would fail the whole batch.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ackedItem is a queue item removed by an ack.
type ackedItem struct {
	seq  int64
	to   store.DeviceAddr
	kind store.Kind
	from store.DeviceAddr // for a group item, from its shared row (releaseShared)
	cid  [store.ClientIDSize]byte
	// shared is the shared row that a group item names; 0 for others
	// (shared ids start at 1).
	shared int64
}

// deleteAcked runs statement st (stDeleteAcked or stDeleteAckedList) with
// args and returns the items it removed, in no particular order. The JSON
// list in args is a string, not a blob: json_each reads text.
func (c *committer) deleteAcked(st int, args ...any) ([]ackedItem, error) {
	stmt, err := c.stmt(st)
	if err != nil {
		return nil, err
	}
	rows, err := stmt.QueryContext(c.ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	defer rows.Close()
	var gone []ackedItem
	for rows.Next() {
		var (
			it     ackedItem
			kind   uint8
			cid    []byte
			shared sql.NullInt64
		)
		if err := rows.Scan(&it.seq, &it.to.User, &it.to.Device, &kind, &it.from.User, &it.from.Device, &cid, &shared); err != nil {
			return nil, fmt.Errorf("delete: %w", err)
		}
		if shared.Valid {
			it.shared = shared.Int64 // sender and client id are in the shared row
		} else if it.cid, err = toClientID(cid); err != nil {
			return nil, fmt.Errorf("delete: %w", err)
		}
		it.kind = store.Kind(kind)
		gone = append(gone, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	return gone, nil
}

// insertReceipt queues the receipt for it (a message just acknowledged by
// a.Device) for its sender and appends it to a.Receipts, unless the
// sender's device no longer exists.
func (c *committer) insertReceipt(a *store.Ack, it ackedItem) error {
	r := store.Message{
		To:       it.from,
		Kind:     store.KindReceipt,
		From:     a.Device,
		ClientID: it.cid,
		Sent:     fromNS(c.now),
		Expires:  fromNS(ns(a.Expires)),
	}
	// Asked once per sender and transaction: an EXISTS in every receipt's
	// INSERT instead cost a drain 5–30% more CPU per message (BenchmarkAck).
	if ok, err := c.deviceExists(r.To); err != nil {
		return fmt.Errorf("receipt: %w", err)
	} else if !ok {
		return nil // the sender's device is gone: nobody to tell
	}
	res, err := c.exec(stInsertReceipt, r.To.User, r.To.Device, uint8(r.Kind),
		r.From.User, r.From.Device, r.ClientID[:], c.now, ns(r.Expires))
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	c.delta[r.To]++
	seq, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	r.Seq = uint64(seq)
	a.Receipts = append(a.Receipts, r)
	return nil
}

// appendSeqList appends seqs as a JSON array, leaving out those that cannot
// name a stored item (0, and above the largest SQLite integer); it returns
// nil if none is left.
func appendSeqList(b []byte, seqs []uint64) []byte {
	start := len(b)
	b = append(b, '[')
	for _, q := range seqs {
		if !storableSeq(q) {
			continue
		}
		if len(b) > start+1 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, q, 10)
	}
	if len(b) == start+1 {
		return nil
	}
	return append(b, ']')
}

// storableSeq reports whether q could name a stored item: seqs start at 1
// and are SQLite integers.
func storableSeq(q uint64) bool { return q != 0 && q <= math.MaxInt64 }
