package pebblestore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
	"github.com/magpie-im/magpie/store/sqlite"
)

// Commit implements store.Store: one Pebble batch, synced. Results are
// reset at the start and again if the commit fails.
//
// Receipts count toward their recipient's queue length but are queued even
// when it is at a QueueLimit. On a disk short of room (space.go) only the
// acknowledgements commit and the other operations are refused one by one
// with store.ErrStorageFull; with no acknowledgements Commit returns it.
func (s *Store) Commit(ctx context.Context, b *store.Batch) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	s.wmu.Lock()
	defer s.wmu.Unlock()

	if s.space.short() {
		return s.commitAcks(ctx, b)
	}
	err := s.commit(ctx, b)
	if err != nil && errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
	}
	return err
}

func (s *Store) commitAcks(ctx context.Context, b *store.Batch) error {
	batchrules.ResetResults(b)
	if len(b.Acks) == 0 {
		return store.ErrStorageFull
	}
	if err := s.commit(ctx, &store.Batch{Now: b.Now, Acks: b.Acks}); err != nil {
		return err
	}
	batchrules.RefuseAllButAcks(b)
	return nil
}

// commit applies b in one synced batch; wmu is held.
func (s *Store) commit(ctx context.Context, b *store.Batch) (err error) {
	batchrules.ResetResults(b)
	for i, g := range b.GroupChanges {
		if g == nil {
			return fmt.Errorf("pebblestore: commit: group change %d is nil", i)
		}
	}
	for i, e := range b.Enqueues {
		if e == nil {
			return fmt.Errorf("pebblestore: commit: enqueue %d is nil", i)
		}
	}
	for i, g := range b.GroupSends {
		if g == nil {
			return fmt.Errorf("pebblestore: commit: group send %d is nil", i)
		}
	}
	for i, a := range b.Acks {
		if a == nil {
			return fmt.Errorf("pebblestore: commit: ack %d is nil", i)
		}
	}
	c := &committer{
		ctx:     ctx,
		s:       s,
		b:       s.db.NewIndexedBatch(),
		now:     b.Now.UnixNano(),
		seq:     s.nextSeq,
		delta:   make(map[store.DeviceAddr]int64),
		senders: &s.senders,
	}
	defer c.b.Close()
	defer func() {
		if err != nil {
			batchrules.ResetResults(b)
			s.senders = batchrules.SenderCounts{} // counted inside the failed batch
		}
	}()
	for i, g := range b.GroupChanges {
		if err := c.groupChange(g); err != nil {
			return fmt.Errorf("pebblestore: commit: group change %d: %w", i, err)
		}
	}
	for i, e := range b.Enqueues {
		if err := c.enqueue(e); err != nil {
			return fmt.Errorf("pebblestore: commit: enqueue %d: %w", i, err)
		}
	}
	for i, g := range b.GroupSends {
		if err := c.groupSend(g); err != nil {
			return fmt.Errorf("pebblestore: commit: group send %d: %w", i, err)
		}
	}
	if err := c.ackAll(b.Acks); err != nil {
		return fmt.Errorf("pebblestore: commit: %w", err)
	}
	if c.b.Empty() {
		return nil
	}
	if c.seq != s.nextSeq {
		if err := c.b.Set(metaNextSeq, be64bytes(c.seq), nil); err != nil {
			return fmt.Errorf("pebblestore: commit: %w", err)
		}
	}
	if err := c.b.Commit(pebble.Sync); err != nil {
		// Seqs handed out in a batch whose sync failed may yet be on
		// disk: never hand them out again.
		s.nextSeq = c.seq
		return fmt.Errorf("pebblestore: commit: %w", err)
	}
	s.nextSeq = c.seq
	s.counts.Apply(c.delta)
	s.senders.ApplyDelta()
	return nil
}

func be64bytes(n uint64) []byte {
	var b [8]byte
	putBE64(b[:], n)
	return b[:]
}

// committer builds one batch.
type committer struct {
	ctx     context.Context
	s       *Store
	b       *pebble.Batch // indexed: reads see its own writes
	now     int64
	seq     uint64 // the next seq to assign
	delta   map[store.DeviceAddr]int64
	senders *batchrules.SenderCounts
	k, v    []byte // scratch; the batch copies what it is given
}

// get returns a copy of key's value in the batch's view, or nil, false.
func (c *committer) get(key []byte) ([]byte, bool, error) {
	v, closer, err := c.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	return out, true, closer.Close()
}

func (c *committer) queued(d store.DeviceAddr) int64 { return c.s.counts.Get(d) + c.delta[d] }

func (c *committer) recipients(user string) ([]sqlite.Recipient, error) {
	return c.s.recp.get(c.ctx, c.s.Store, user)
}

func (c *committer) deviceExists(d store.DeviceAddr) (bool, error) {
	rs, err := c.recipients(d.User)
	if err != nil {
		return false, err
	}
	for _, r := range rs {
		if r.Device == d.Device {
			return true, nil
		}
	}
	return false, nil
}

func (c *committer) enqueue(e *store.Enqueue) error {
	// Duplicate check first: a resend of an accepted message is answered
	// as such even if the recipient's queue is now full.
	var err error
	if e.Duplicate, e.Sent, err = c.claimClientID(e.From, e.ClientID, e.Expires); err != nil || e.Duplicate {
		return err
	}
	if err := c.enqueueClaimed(e); err != nil || e.Err == nil {
		return err
	}
	return c.releaseClientID(e.From, e.ClientID, e.Expires)
}

// claimClientID records from's client id cid as sent now unless a live
// record has it: then the send is a duplicate of the one sent at sent.
func (c *committer) claimClientID(from store.DeviceAddr, cid [store.ClientIDSize]byte, expires time.Time) (bool, time.Time, error) {
	c.k = dedupKey(c.k[:0], from, cid)
	v, ok, err := c.get(c.k)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("dedup record: %w", err)
	}
	if ok {
		if len(v) != 16 {
			return false, time.Time{}, fmt.Errorf("dedup record: %w", errCorrupt)
		}
		sent, exp := int64(be64(v)), int64(be64(v[8:]))
		if exp > c.now {
			return true, time.Unix(0, sent), nil
		}
		// Expired but not yet removed by Expire: taken over.
		if err := c.b.Delete(dedupExpiryKey(nil, exp, from, cid), nil); err != nil {
			return false, time.Time{}, err
		}
	}
	c.v = binaryAppend2(c.v[:0], uint64(c.now), uint64(expires.UnixNano()))
	if err := c.b.Set(c.k, c.v, nil); err != nil {
		return false, time.Time{}, err
	}
	c.k = dedupExpiryKey(c.k[:0], expires.UnixNano(), from, cid)
	return false, time.Time{}, c.b.Set(c.k, nil, nil)
}

// releaseClientID undoes a claim, for a send that was refused, so that a
// retry is not taken for a duplicate of a send that was never queued.
func (c *committer) releaseClientID(from store.DeviceAddr, cid [store.ClientIDSize]byte, expires time.Time) error {
	if err := c.b.Delete(dedupKey(c.k[:0], from, cid), nil); err != nil {
		return err
	}
	return c.b.Delete(dedupExpiryKey(c.k[:0], expires.UnixNano(), from, cid), nil)
}

func binaryAppend2(b []byte, x, y uint64) []byte {
	var buf [16]byte
	putBE64(buf[:], x)
	putBE64(buf[8:], y)
	return append(b, buf[:]...)
}

// enqueueClaimed queues e for each of its recipient's devices, or sets
// e.Err and writes nothing.
func (c *committer) enqueueClaimed(e *store.Enqueue) error {
	rcpts, err := c.recipients(e.To)
	if err != nil {
		return err
	}
	if len(rcpts) == 0 {
		e.Err = store.ErrNotFound
		return nil
	}
	var payloads map[uint32][]byte
	if e.Devices != nil {
		if rcpts, payloads, e.Err = batchrules.MatchDevices(e, rcpts); e.Err != nil {
			return nil
		}
	}
	if e.QueueLimit > 0 {
		for _, r := range rcpts {
			if c.queued(store.DeviceAddr{User: e.To, Device: r.Device}) >= int64(e.QueueLimit) {
				e.Err = store.ErrQueueFull
				return nil
			}
		}
	}
	if e.SenderShare > 0 && e.To != e.From.User {
		for _, r := range rcpts {
			over, err := c.overShare(store.DeviceAddr{User: e.To, Device: r.Device}, e.From.User, e.SenderShare)
			if err != nil {
				return err
			}
			if over {
				e.Err = store.ErrSenderShare
				return nil
			}
		}
	}
	sent := time.Unix(0, c.now)
	expires := time.Unix(0, e.Expires.UnixNano())
	queued := make([]store.Message, 0, len(rcpts))
	for _, r := range rcpts {
		m := store.Message{
			To:       store.DeviceAddr{User: e.To, Device: r.Device},
			Kind:     store.KindMessage,
			From:     e.From,
			ClientID: e.ClientID,
			Payload:  e.Payload,
			Sent:     sent,
			Expires:  expires,
		}
		if payloads != nil {
			m.Payload = payloads[r.Device]
		}
		if err := c.insert(&m); err != nil {
			return err
		}
		c.senders.QueuedFrom(m.To, e.From.User)
		queued = append(queued, m)
	}
	e.Sent = sent
	e.Queued = queued
	return nil
}

// insert queues m (a message or receipt), sets m.Seq and counts it.
func (c *committer) insert(m *store.Message) error {
	m.Seq = c.seq
	c.seq++
	it := item{kind: m.Kind, sent: m.Sent.UnixNano(), expires: m.Expires.UnixNano(), cid: m.ClientID, from: m.From, payload: m.Payload}
	c.k = queueKey(c.k[:0], m.To, m.Seq)
	c.v = appendItem(c.v[:0], &it)
	if err := c.b.Set(c.k, c.v, nil); err != nil {
		return err
	}
	c.v = appendDev(c.v[:0], m.To)
	if err := c.b.Set(expiryKey(c.k[:0], tItemExpiry, it.expires, m.Seq), c.v, nil); err != nil {
		return err
	}
	c.delta[m.To]++
	return nil
}

// overShare reports whether sender already holds share items (messages
// and group messages) in d's queue, counting them once the queue is at
// least a share long (batchrules.SenderCounts).
func (c *committer) overShare(d store.DeviceAddr, sender string, share int) (bool, error) {
	if share <= 0 || c.queued(d) < int64(share) {
		return false, nil
	}
	k := batchrules.SenderKey{Dev: d, Sender: sender}
	if over, counted := c.senders.Over(k, share); counted {
		return over, nil
	}
	n, err := c.countFrom(d, sender)
	if err != nil {
		return false, fmt.Errorf("count a sender's items: %w", err)
	}
	c.senders.Counted(k, n)
	over, _ := c.senders.Over(k, share)
	return over, nil
}

// countFrom counts sender's messages and group messages in d's queue, as
// the batch sees it.
func (c *committer) countFrom(d store.DeviceAddr, sender string) (int64, error) {
	prefix := queuePrefix(d)
	it, err := c.b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	var n int64
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return 0, err
		}
		m, err := decodeItem(v)
		if err != nil {
			it.Close()
			return 0, err
		}
		if m.kind != store.KindMessage && m.kind != store.KindGroupMessage {
			continue
		}
		from := m.from
		if m.shared != 0 {
			h, err := c.sharedHeader(m.shared)
			if err != nil {
				it.Close()
				return 0, err
			}
			from = h.from
		}
		if from.User == sender {
			n++
		}
	}
	return n, it.Close()
}

func (c *committer) sharedHeader(id uint64) (shared, error) {
	v, ok, err := c.get(u64Key(nil, tShared, id))
	if err != nil {
		return shared{}, err
	}
	if !ok {
		return shared{}, fmt.Errorf("shared item %d: %w", id, errCorrupt)
	}
	return decodeShared(v)
}

// prefixEnd returns the first key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func storableSeq(q uint64) bool { return q != 0 && q <= math.MaxInt64 }

// ackedItem is a removed queue item, as its receipt needs it.
type ackedItem struct {
	seq    uint64
	kind   store.Kind
	from   store.DeviceAddr
	cid    [store.ClientIDSize]byte
	shared uint64
}

// ackAll removes the acknowledged items, then queues a receipt for each
// message among them, ack by ack in seq order: after every enqueue of the
// batch, as the router expects.
func (c *committer) ackAll(acks []*store.Ack) error {
	if len(c.senders.N) > 0 {
		for _, a := range acks {
			c.senders.ForgetDevice(a.Device) // its items go: count again
		}
	}
	per := make([][]ackedItem, len(acks))
	for i, a := range acks {
		for _, q := range a.Seqs {
			if !storableSeq(q) {
				continue
			}
			it, ok, err := c.remove(a.Device, q)
			if err != nil {
				return fmt.Errorf("ack %d: %w", i, err)
			}
			if ok {
				per[i] = append(per[i], it)
			}
		}
	}
	if err := c.releaseShared(per); err != nil {
		return err
	}
	for i, a := range acks {
		items := per[i]
		if len(items) == 0 {
			continue
		}
		c.delta[a.Device] -= int64(len(items))
		slices.SortFunc(items, func(x, y ackedItem) int { return cmp.Compare(x.seq, y.seq) })
		for _, it := range items {
			if it.kind != store.KindMessage && it.kind != store.KindGroupMessage {
				continue
			}
			if err := c.receipt(a, it); err != nil {
				return fmt.Errorf("ack %d: %w", i, err)
			}
		}
	}
	return nil
}

// remove deletes item seq of d's queue, if there is one: the key names the
// device, so no device can remove another's items.
func (c *committer) remove(d store.DeviceAddr, seq uint64) (ackedItem, bool, error) {
	key := queueKey(nil, d, seq)
	v, ok, err := c.get(key)
	if err != nil || !ok {
		return ackedItem{}, false, err
	}
	m, err := decodeItem(v)
	if err != nil {
		return ackedItem{}, false, err
	}
	if err := c.b.SingleDelete(key, nil); err != nil {
		return ackedItem{}, false, err
	}
	if m.shared == 0 {
		if err := c.b.SingleDelete(expiryKey(c.k[:0], tItemExpiry, m.expires, seq), nil); err != nil {
			return ackedItem{}, false, err
		}
	}
	return ackedItem{seq: seq, kind: m.kind, from: m.from, cid: m.cid, shared: m.shared}, true, nil
}

// releaseShared drops the removed group items' references to their shared
// records, deleting a record with its last reference, and fills in each
// item's sender and client id from its record.
func (c *committer) releaseShared(per [][]ackedItem) error {
	var refs map[uint64]uint64
	for _, items := range per {
		for _, it := range items {
			if it.shared != 0 {
				if refs == nil {
					refs = make(map[uint64]uint64)
				}
				refs[it.shared]++
			}
		}
	}
	if refs == nil {
		return nil
	}
	headers := make(map[uint64]shared, len(refs))
	for id, n := range refs {
		h, err := c.sharedHeader(id)
		if err != nil {
			return err
		}
		if h.refs < n {
			return fmt.Errorf("shared item %d: %d references, %d released", id, h.refs, n)
		}
		headers[id] = h
		h.refs -= n
		if h.refs == 0 {
			if err := c.deleteShared(id, h.expires); err != nil {
				return err
			}
			continue
		}
		if err := c.b.Set(u64Key(c.k[:0], tShared, id), appendShared(c.v[:0], &h), nil); err != nil {
			return err
		}
	}
	for _, items := range per {
		for j := range items {
			if h, ok := headers[items[j].shared]; ok {
				items[j].from, items[j].cid = h.from, h.cid
			}
		}
	}
	return nil
}

func (c *committer) deleteShared(id uint64, expires int64) error {
	return errors.Join(
		c.b.Delete(u64Key(nil, tShared, id), nil),
		c.b.SingleDelete(u64Key(nil, tPayload, id), nil),
		c.b.SingleDelete(u64Key(nil, tTargets, id), nil),
		c.b.SingleDelete(expiryKey(nil, tSharedExp, expires, id), nil),
	)
}

// receipt queues a receipt of the removed item it for its sender's device,
// unless that device is gone.
func (c *committer) receipt(a *store.Ack, it ackedItem) error {
	if ok, err := c.deviceExists(it.from); err != nil {
		return fmt.Errorf("receipt: %w", err)
	} else if !ok {
		return nil // nobody to tell
	}
	r := store.Message{
		To:       it.from,
		Kind:     store.KindReceipt,
		From:     a.Device,
		ClientID: it.cid,
		Sent:     time.Unix(0, c.now),
		Expires:  time.Unix(0, a.Expires.UnixNano()),
	}
	if err := c.insert(&r); err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	a.Receipts = append(a.Receipts, r)
	return nil
}
