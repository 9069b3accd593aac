package sqlite

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/magpie-im/magpie/store"
)

// ack applies one Ack inside the batch's transaction: one DELETE …
// RETURNING for all of its seqs and one prepared INSERT per receipt; the
// queue counts change in memory (counts.go). A DELETE and a counter update
// per seq, as before, cost more than twice the CPU per acknowledged message
// (BenchmarkAck: 44 → 19 µs, medians of 6 interleaved runs), and the
// single writer is what limits a draining device (BenchmarkDrain in
// package router). Batching the receipts too (INSERT … SELECT from
// json_each, or multi-row VALUES, with or without RETURNING) measured
// slower than one plain INSERT each, and a plain `seq = ?` DELETE for
// one-seq acks measured no faster than the json_each list
// (BenchmarkChatCommit).
//
// Receipts are queued in the order of the acknowledged items' seqs (the
// order they were delivered in), so a.Receipts is in Seq order.
func (c *committer) ack(a *store.Ack) error {
	list := appendSeqList(nil, a.Seqs)
	if list == nil {
		return nil // nothing that could name a stored item
	}
	gone, err := c.deleteAcked(a.Device, list)
	if err != nil {
		return err
	}
	if len(gone) == 0 {
		return nil // unknown, already acked, or another device's items
	}
	c.delta[a.Device] -= int64(len(gone))

	// One receipt per message (not per receipt) removed.
	slices.SortFunc(gone, func(x, y ackedItem) int { return cmp.Compare(x.seq, y.seq) })
	for _, it := range gone {
		if it.kind != store.KindMessage {
			continue
		}
		if err := c.insertReceipt(a, it); err != nil {
			return err
		}
	}
	return nil
}

// ackedItem is a queue item removed by an ack.
type ackedItem struct {
	seq  int64
	kind store.Kind
	from store.DeviceAddr
	cid  [store.ClientIDSize]byte
}

// deleteAcked removes the items of dev named in list (a JSON array of
// seqs) and returns them, in no particular order.
func (c *committer) deleteAcked(dev store.DeviceAddr, list []byte) ([]ackedItem, error) {
	st, err := c.stmt(stDeleteAcked)
	if err != nil {
		return nil, err
	}
	// A string, not a blob: json_each reads text.
	rows, err := st.QueryContext(c.ctx, string(list), dev.User, dev.Device)
	if err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	defer rows.Close()
	var gone []ackedItem
	for rows.Next() {
		var (
			it   ackedItem
			kind uint8
			cid  []byte
		)
		if err := rows.Scan(&it.seq, &kind, &it.from.User, &it.from.Device, &cid); err != nil {
			return nil, fmt.Errorf("delete: %w", err)
		}
		if it.cid, err = toClientID(cid); err != nil {
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
		if q == 0 || q > math.MaxInt64 {
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
