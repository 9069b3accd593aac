package pgstore

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// Commit implements store.Store: one transaction, run again from the start
// (results reset) if PostgreSQL aborts it for a deadlock or serialization
// failure.
//
// The transaction, in round trips:
//  1. BEGIN.
//  2. One pipeline: lock the row of every device the batch touches (the
//     recipients' devices, the acknowledging devices and the senders their
//     receipts go to) in one sorted SELECT … FOR NO KEY UPDATE, so that
//     two commits wait for each other instead of deadlocking; claim the
//     client ids; read the senders' shares; delete the acknowledged items.
//  3. Group changes only: move each group's head.
//  4. Take every new item's seq from queue_seq. The recipient's row is
//     locked until COMMIT, so any later commit to that device takes a
//     larger seq and becomes visible after this one: the router, which
//     reads a queue in seq order, never sees a lower seq appear later.
//  5. One pipeline of multi-row (unnest) writes: the items, shared group
//     payloads and their references, queue lengths, senders' counts,
//     released claims, group logs.
//  6. COMMIT (synchronous_commit as the server has it; Open refuses off).
//
// Everything else (Sesame matching, queue limits, shares, dedup within
// the batch) is decided in Go from what step 2 read under the locks.
// Receipts count toward a queue's length but ignore its limit. A full disk
// is store.ErrStorageFull, and nothing is written.
func (s *Store) Commit(ctx context.Context, b *store.Batch) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if err := batchrules.CheckNil(b); err != nil {
		return fmt.Errorf("pgstore: commit: %w", err)
	}
	batchrules.ResetResults(b)
	if len(b.GroupChanges)+len(b.Enqueues)+len(b.GroupSends)+len(b.Acks) == 0 {
		return nil
	}
	err := s.inTx(ctx, "commit", func(tx pgx.Tx) error {
		batchrules.ResetResults(b) // an earlier attempt's
		c := &committer{ctx: ctx, tx: tx, b: b, now: ns(b.Now)}
		return c.run()
	})
	if err != nil {
		batchrules.ResetResults(b)
	}
	return err
}

// committer applies one batch inside one transaction.
type committer struct {
	ctx context.Context
	tx  pgx.Tx
	b   *store.Batch
	now int64

	// devs is every device locked, with its queue length as this
	// transaction has it; a device that is absent does not exist (or was
	// not locked, and nothing may be queued for it).
	devs   map[store.DeviceAddr]*device
	byUser map[string][]batchrules.Recipient // locked devices of each user, by id
	// senders is the share counts read under the locks, as this
	// transaction changes them; absent pairs are 0.
	senders map[batchrules.SenderKey]int64
	claims  map[claimKey]*claim
	gone    []removed // the acknowledged items deleted

	items   []item      // new items, in the order their seqs are assigned
	shared  []newShared // new shared rows
	qdelta  map[store.DeviceAddr]int64
	sdelta  map[batchrules.SenderKey]int64
	release map[int64]int64 // shared id → references dropped
	logs    []groupLog
}

type device struct {
	reg    uint32
	keyed  bool
	queued int64
}

// item is a queue row to insert; seq is filled in by assignSeqs, which
// also writes it to (*msgs)[idx].Seq, the result that reports it.
type item struct {
	to      store.DeviceAddr
	kind    store.Kind
	from    store.DeviceAddr
	cid     []byte
	payload []byte
	expires int64
	shared  int // 1 + index into committer.shared; 0 for a 1:1 item
	msgs    *[]store.Message
	idx     int
	seq     int64
}

// newShared is a group message or change stored once; its id is the seq
// of its first item (first, an index into committer.items).
type newShared struct {
	first   int
	refs    int64
	expires int64
	group   []byte
	from    store.DeviceAddr
	cid     []byte
	payload []byte
}

type groupLog struct {
	group  []byte
	seq    int64
	change []byte
}

type claimKey struct {
	from store.DeviceAddr
	cid  [store.ClientIDSize]byte
}

// claim is what the transaction knows of one (sender device, client id).
type claim struct {
	expires  int64 // written by the claim
	claimed  bool  // this transaction holds the record (new or taken over)
	sent     int64 // the live record's send time, when not claimed
	accepted bool  // a send of this batch was queued under it
	accExp   int64 // that send's expiry
}

// removed is an acknowledged item that step 2 deleted.
type removed struct {
	to     store.DeviceAddr
	seq    int64
	kind   store.Kind
	from   store.DeviceAddr // a group item's from its shared row
	cid    []byte
	shared int64 // 0 for a 1:1 item
}

func (c *committer) run() error {
	if err := c.lockAndRead(); err != nil {
		return err
	}
	c.qdelta = make(map[store.DeviceAddr]int64)
	c.sdelta = make(map[batchrules.SenderKey]int64)
	for i, g := range c.b.GroupChanges {
		if err := c.groupChange(g); err != nil {
			return fmt.Errorf("group change %d: %w", i, err)
		}
	}
	for _, e := range c.b.Enqueues {
		c.enqueue(e)
	}
	for _, g := range c.b.GroupSends {
		c.groupSend(g)
	}
	if err := c.acks(); err != nil {
		return err
	}
	if err := c.assignSeqs(); err != nil {
		return err
	}
	return c.write()
}

// lockAndRead is step 2 (Commit).
func (c *committer) lockAndRead() error {
	var (
		users          []string
		seenUser       = map[string]bool{}
		addrU          []string
		addrD          []int64
		ackU           []string
		ackD, ackS     []int64
		claimOrder     []claimKey
		shareU, shareS []string
	)
	addUser := func(u string) {
		if !seenUser[u] {
			seenUser[u] = true
			users = append(users, u)
		}
	}
	addAddr := func(d store.DeviceAddr) {
		addrU, addrD = append(addrU, d.User), append(addrD, int64(d.Device))
	}
	c.claims = make(map[claimKey]*claim)
	addClaim := func(from store.DeviceAddr, cid [store.ClientIDSize]byte, exp int64) {
		k := claimKey{from, cid}
		if _, ok := c.claims[k]; !ok {
			c.claims[k] = &claim{expires: exp}
			claimOrder = append(claimOrder, k)
		}
	}
	for _, g := range c.b.GroupChanges {
		for _, u := range g.Notify {
			addUser(u)
		}
	}
	for _, e := range c.b.Enqueues {
		addUser(e.To)
		addClaim(e.From, e.ClientID, ns(e.Expires))
		if e.SenderShare > 0 && e.To != e.From.User {
			shareU, shareS = append(shareU, e.To), append(shareS, e.From.User)
		}
	}
	for _, g := range c.b.GroupSends {
		if g.Err = batchrules.CheckGroupSend(g.To); g.Err != nil {
			continue // refused before its client id is claimed
		}
		addClaim(g.From, g.ClientID, ns(g.Expires))
		for _, d := range g.To {
			addAddr(d)
			if g.SenderShare > 0 && d.User != g.From.User {
				shareU, shareS = append(shareU, d.User), append(shareS, g.From.User)
			}
		}
	}
	seenAck := map[ackKey]bool{}
	for _, a := range c.b.Acks {
		addAddr(a.Device)
		for _, q := range a.Seqs {
			k := ackKey{a.Device, q}
			if q == 0 || q > math.MaxInt64 || seenAck[k] {
				continue // cannot name a stored item, or named before
			}
			seenAck[k] = true
			ackU, ackD, ackS = append(ackU, a.Device.User), append(ackD, int64(a.Device.Device)), append(ackS, int64(q))
		}
	}

	var bt pgx.Batch
	c.devs = make(map[store.DeviceAddr]*device)
	c.byUser = make(map[string][]batchrules.Recipient)
	bt.Queue(lockSQL, users, addrU, addrD, ackU, ackD, ackS).Query(c.scanLocked)
	if len(claimOrder) > 0 {
		cu, cd, cc, ce := make([]string, 0, len(claimOrder)), make([]int64, 0, len(claimOrder)), make([][]byte, 0, len(claimOrder)), make([]int64, 0, len(claimOrder))
		for _, k := range claimOrder {
			cu, cd, cc, ce = append(cu, k.from.User), append(cd, int64(k.from.Device)), append(cc, k.cid[:]), append(ce, c.claims[k].expires)
		}
		bt.Queue(claimSQL, cu, cd, cc, c.now, ce).Query(func(rows pgx.Rows) error {
			return c.scanClaims(rows, func(cl *claim, _ int64) { cl.claimed = true })
		})
		bt.Queue(claimSentSQL, cu, cd, cc).Query(func(rows pgx.Rows) error {
			return c.scanClaims(rows, func(cl *claim, sent int64) { cl.sent = sent })
		})
	}
	if len(shareU) > 0 {
		c.senders = make(map[batchrules.SenderKey]int64)
		bt.Queue(senderCountsSQL, shareU, shareS).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var (
					k batchrules.SenderKey
					n int64
				)
				if err := rows.Scan(&k.Dev.User, &k.Dev.Device, &k.Sender, &n); err != nil {
					return err
				}
				c.senders[k] = n
			}
			return rows.Err()
		})
	}
	if len(ackU) > 0 {
		bt.Queue(deleteAckedSQL, ackU, ackD, ackS).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var (
					r    removed
					kind int16
				)
				if err := rows.Scan(&r.to.User, &r.to.Device, &r.seq, &kind, &r.from.User, &r.from.Device, &r.cid, &r.shared); err != nil {
					return err
				}
				r.kind = store.Kind(kind)
				c.gone = append(c.gone, r)
			}
			return rows.Err()
		})
	}
	if err := c.tx.SendBatch(c.ctx, &bt).Close(); err != nil {
		return fmt.Errorf("lock and read: %w", err)
	}
	for _, rs := range c.byUser {
		slices.SortFunc(rs, func(x, y batchrules.Recipient) int { return cmp.Compare(x.Device, y.Device) })
	}
	return nil
}

type ackKey struct {
	dev store.DeviceAddr
	seq uint64
}

// lockSQL locks, in one sorted order shared by every transaction, the rows
// of: every device of the users in $1, the devices ($2, $3), and the
// senders of the messages among the acknowledged items ($4, $5, $6), whose
// receipts this transaction queues. LockRows runs above the Sort, so the
// rows are locked in that order. keyed is what batchrules.Recipient says.
const lockSQL = `
SELECT d.user_name, d.id, d.registration_id, d.queued,
	(SELECT count(*) FROM signed_prekeys s WHERE s.user_name = d.user_name AND s.device = d.id) = 2
FROM devices d
WHERE d.user_name = ANY($1::text[])
	OR (d.user_name, d.id) IN (SELECT * FROM unnest($2::text[], $3::bigint[]))
	OR (d.user_name, d.id) IN (
		SELECT coalesce(s.from_user, q.from_user), coalesce(s.from_device, q.from_device)
		FROM unnest($4::text[], $5::bigint[], $6::bigint[]) AS a(u, dev, seq)
		JOIN queue q ON q.to_user = a.u AND q.to_device = a.dev AND q.seq = a.seq
		LEFT JOIN shared s ON s.id = q.shared_id
		WHERE q.kind IN (1, 3))
ORDER BY d.user_name, d.id
FOR NO KEY UPDATE OF d`

func (c *committer) scanLocked(rows pgx.Rows) error {
	for rows.Next() {
		var (
			d     store.DeviceAddr
			st    device
			keyed bool
		)
		if err := rows.Scan(&d.User, &d.Device, &st.reg, &st.queued, &keyed); err != nil {
			return err
		}
		st.keyed = keyed
		c.devs[d] = &st
		c.byUser[d.User] = append(c.byUser[d.User], batchrules.Recipient{Device: d.Device, RegistrationID: st.reg, Keyed: keyed})
	}
	return rows.Err()
}

// claimSQL records each client id as sent now unless a live record has it
// (one that expired but was not yet removed by Expire is taken over), and
// returns those it recorded. ON CONFLICT waits for another transaction
// recording the same id, so two processes cannot both accept one send;
// sorting makes such waits deadlock-free.
const claimSQL = `
INSERT INTO dedup (from_user, from_device, client_id, sent, expires)
SELECT u, d, c, $4, e FROM unnest($1::text[], $2::bigint[], $3::bytea[], $5::bigint[]) AS t(u, d, c, e)
ORDER BY u, d, c
ON CONFLICT (from_user, from_device, client_id) DO UPDATE SET sent = excluded.sent, expires = excluded.expires
	WHERE dedup.expires <= excluded.sent
RETURNING from_user, from_device, client_id, sent`

// claimSentSQL reads the records after the claim: a duplicate's original
// send time.
const claimSentSQL = `
SELECT from_user, from_device, client_id, sent FROM dedup
WHERE (from_user, from_device, client_id) IN (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[]))`

func (c *committer) scanClaims(rows pgx.Rows, set func(*claim, int64)) error {
	for rows.Next() {
		var (
			k    claimKey
			cid  []byte
			sent int64
		)
		if err := rows.Scan(&k.from.User, &k.from.Device, &cid, &sent); err != nil {
			return err
		}
		if len(cid) != store.ClientIDSize {
			return fmt.Errorf("stored client id has %d bytes", len(cid))
		}
		k.cid = [store.ClientIDSize]byte(cid)
		if cl, ok := c.claims[k]; ok {
			set(cl, sent)
		}
	}
	return rows.Err()
}

// senderCountsSQL reads the share counts of the (recipient user, sender)
// pairs; the recipient's devices are locked.
const senderCountsSQL = `
SELECT to_user, to_device, sender, n FROM sender_counts
WHERE (to_user, sender) IN (SELECT * FROM unnest($1::text[], $2::text[]))`

// deleteAckedSQL deletes the acknowledged items (matching the device as
// well as the seq, so that a device cannot remove another's items) and
// returns them with a group item's sender and client id from its shared
// row (which the items do not change).
const deleteAckedSQL = `
WITH gone AS (
	DELETE FROM queue q USING unnest($1::text[], $2::bigint[], $3::bigint[]) AS a(u, dev, seq)
	WHERE q.to_user = a.u AND q.to_device = a.dev AND q.seq = a.seq
	RETURNING q.to_user, q.to_device, q.seq, q.kind, q.from_user, q.from_device, q.client_id, q.shared_id)
SELECT g.to_user, g.to_device, g.seq, g.kind, coalesce(s.from_user, g.from_user), coalesce(s.from_device, g.from_device),
	coalesce(s.client_id, g.client_id), coalesce(g.shared_id, 0)
FROM gone g LEFT JOIN shared s ON s.id = g.shared_id`

// send decides a send's dedup: it returns whether the send is to be
// evaluated (its claim is held and nothing of this batch was accepted
// under it), and otherwise fills in the duplicate's answer.
func (c *committer) dedup(from store.DeviceAddr, cid [store.ClientIDSize]byte, dup *bool, sent *int64) (*claim, bool) {
	cl := c.claims[claimKey{from, cid}]
	switch {
	case cl.accepted:
		*dup, *sent = true, c.now
	case !cl.claimed:
		*dup, *sent = true, cl.sent
	default:
		return cl, true
	}
	return nil, false
}

func (c *committer) enqueue(e *store.Enqueue) {
	var sent int64
	cl, fresh := c.dedup(e.From, e.ClientID, &e.Duplicate, &sent)
	if !fresh {
		e.Sent = fromNS(sent)
		return
	}
	rcpts := c.byUser[e.To]
	if len(rcpts) == 0 {
		e.Err = store.ErrNotFound
		return
	}
	var payloads map[uint32][]byte
	if e.Devices != nil {
		if rcpts, payloads, e.Err = batchrules.MatchDevices(e, rcpts); e.Err != nil {
			return
		}
	}
	for _, r := range rcpts {
		d := store.DeviceAddr{User: e.To, Device: r.Device}
		if e.QueueLimit > 0 && c.devs[d].queued >= int64(e.QueueLimit) {
			e.Err = store.ErrQueueFull
			return
		}
	}
	if e.SenderShare > 0 && e.To != e.From.User {
		for _, r := range rcpts {
			if c.overShare(store.DeviceAddr{User: e.To, Device: r.Device}, e.From.User, e.SenderShare) {
				e.Err = store.ErrSenderShare
				return
			}
		}
	}
	cl.accepted, cl.accExp = true, ns(e.Expires)
	e.Sent = fromNS(c.now)
	e.Queued = make([]store.Message, 0, len(rcpts))
	for _, r := range rcpts {
		m := store.Message{
			To: store.DeviceAddr{User: e.To, Device: r.Device}, Kind: store.KindMessage, From: e.From,
			ClientID: e.ClientID, Payload: e.Payload, Sent: e.Sent, Expires: fromNS(ns(e.Expires)),
		}
		if payloads != nil {
			m.Payload = payloads[r.Device]
		}
		c.add(item{to: m.To, kind: m.Kind, from: e.From, cid: e.ClientID[:], payload: nonNil(m.Payload),
			expires: ns(m.Expires), msgs: &e.Queued, idx: len(e.Queued)})
		e.Queued = append(e.Queued, m)
	}
}

// add queues it and counts it in its device's queue and its sender's share.
func (c *committer) add(it item) {
	c.items = append(c.items, it)
	c.devs[it.to].queued++
	c.qdelta[it.to]++
	if it.kind == store.KindMessage || it.kind == store.KindGroupMessage {
		k := batchrules.SenderKey{Dev: it.to, Sender: it.from.User}
		c.sdelta[k]++
		if c.senders != nil {
			c.senders[k]++
		}
	}
}

// overShare reports whether sender holds share items or more in d's queue.
func (c *committer) overShare(d store.DeviceAddr, sender string, share int) bool {
	return c.senders[batchrules.SenderKey{Dev: d, Sender: sender}] >= int64(share)
}

func (c *committer) groupSend(g *store.GroupSend) {
	if g.Err != nil {
		return // refused by CheckGroupSend
	}
	var sent int64
	cl, fresh := c.dedup(g.From, g.ClientID, &g.Duplicate, &sent)
	if !fresh {
		g.Sent = fromNS(sent)
		return
	}
	for _, d := range g.To {
		if c.devs[d] == nil {
			g.Err = store.ErrNotFound
			return
		}
	}
	to := g.To
	if g.QueueLimit > 0 || g.SenderShare > 0 {
		to = make([]store.DeviceAddr, 0, len(g.To))
		for _, d := range g.To {
			over := g.QueueLimit > 0 && c.devs[d].queued >= int64(g.QueueLimit) ||
				g.SenderShare > 0 && d.User != g.From.User && c.overShare(d, g.From.User, g.SenderShare)
			if over {
				g.Full = append(g.Full, d)
			} else {
				to = append(to, d)
			}
		}
	}
	if len(to) == 0 {
		g.Err = store.ErrQueueFull
		return
	}
	cl.accepted, cl.accExp = true, ns(g.Expires)
	g.Sent = fromNS(c.now)
	g.Queued = c.addShared(store.Message{
		Kind: store.KindGroupMessage, From: g.From, ClientID: g.ClientID, Payload: g.Payload,
		Sent: g.Sent, Expires: fromNS(ns(g.Expires)), Group: g.Group,
	}, to, &g.Queued)
}

// addShared stores m's payload once and queues a reference to it for each
// device of to (locked, existing); it returns the items' results, which
// the caller must store in *msgs.
func (c *committer) addShared(m store.Message, to []store.DeviceAddr, msgs *[]store.Message) []store.Message {
	if len(to) == 0 {
		return nil
	}
	cid := []byte{}
	if m.Kind != store.KindGroupChange {
		cid = m.ClientID[:]
	}
	c.shared = append(c.shared, newShared{first: len(c.items), refs: int64(len(to)), expires: ns(m.Expires),
		group: m.Group[:], from: m.From, cid: cid, payload: nonNil(m.Payload)})
	out := make([]store.Message, 0, len(to))
	for _, d := range to {
		c.add(item{to: d, kind: m.Kind, from: m.From, shared: len(c.shared), msgs: msgs, idx: len(out)})
		m.To = d
		out = append(out, m)
	}
	return out
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{} // the columns are NOT NULL
	}
	return b
}

// acks applies the acknowledged items deleted in step 2: queue lengths,
// shares and shared references drop, and each message's sender gets a
// receipt, Ack by Ack in seq order. A seq named by several Acks of one
// device belongs to the first.
func (c *committer) acks() error {
	if len(c.gone) == 0 {
		return nil
	}
	owner := make(map[ackKey]int)
	for i, a := range c.b.Acks {
		for _, q := range a.Seqs {
			if _, ok := owner[ackKey{a.Device, q}]; !ok {
				owner[ackKey{a.Device, q}] = i
			}
		}
	}
	per := make([][]removed, len(c.b.Acks))
	var unlocked []store.DeviceAddr
	for _, r := range c.gone {
		i, ok := owner[ackKey{r.to, uint64(r.seq)}]
		if !ok {
			return fmt.Errorf("delete: removed item %d of %s/%d, which no ack named", r.seq, r.to.User, r.to.Device)
		}
		per[i] = append(per[i], r)
		if (r.kind == store.KindMessage || r.kind == store.KindGroupMessage) && c.devs[r.from] == nil {
			unlocked = append(unlocked, r.from)
		}
	}
	if len(unlocked) > 0 {
		// An item committed after step 2's lock read its senders (an ack
		// of a seq the device had not been sent yet): lock its sender now.
		// Out of the sorted order, so this can deadlock; inTx retries.
		if err := c.lockMore(unlocked); err != nil {
			return err
		}
	}
	for i, a := range c.b.Acks {
		items := per[i]
		slices.SortFunc(items, func(x, y removed) int { return cmp.Compare(x.seq, y.seq) })
		for _, r := range items {
			c.devs[a.Device].queued--
			c.qdelta[a.Device]--
			if r.shared != 0 {
				if c.release == nil {
					c.release = make(map[int64]int64)
				}
				c.release[r.shared]++
			}
			if r.kind != store.KindMessage && r.kind != store.KindGroupMessage {
				continue
			}
			c.sdelta[batchrules.SenderKey{Dev: a.Device, Sender: r.from.User}]--
			if c.devs[r.from] == nil {
				continue // the sender's device is gone: nobody to tell
			}
			if len(r.cid) != store.ClientIDSize {
				return fmt.Errorf("stored client id has %d bytes", len(r.cid))
			}
			m := store.Message{To: r.from, Kind: store.KindReceipt, From: a.Device,
				ClientID: [store.ClientIDSize]byte(r.cid), Sent: fromNS(c.now), Expires: fromNS(ns(a.Expires))}
			c.add(item{to: m.To, kind: m.Kind, from: m.From, cid: r.cid, payload: []byte{}, expires: ns(m.Expires),
				msgs: &a.Receipts, idx: len(a.Receipts)})
			a.Receipts = append(a.Receipts, m)
		}
	}
	return nil
}

// lockMore locks the rows of devs that exist, in sorted order.
func (c *committer) lockMore(devs []store.DeviceAddr) error {
	u, d := make([]string, len(devs)), make([]int64, len(devs))
	for i, a := range devs {
		u[i], d[i] = a.User, int64(a.Device)
	}
	rows, err := c.tx.Query(c.ctx, lockSQL, []string{}, u, d, []string{}, []int64{}, []int64{})
	if err != nil {
		return fmt.Errorf("lock senders: %w", err)
	}
	defer rows.Close()
	return c.scanLocked(rows)
}

// assignSeqs is step 4: one seq per new item from queue_seq, in increasing
// order over c.items, so that each device's items are in batch order.
func (c *committer) assignSeqs() error {
	if len(c.items) == 0 {
		return nil
	}
	rows, err := c.tx.Query(c.ctx, `SELECT nextval('queue_seq') FROM generate_series(1, $1::int)`, len(c.items))
	if err != nil {
		return fmt.Errorf("seqs: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("seqs: %w", err)
	}
	if len(seqs) != len(c.items) {
		return fmt.Errorf("seqs: got %d, want %d", len(seqs), len(c.items))
	}
	slices.Sort(seqs)
	for i := range c.items {
		it := &c.items[i]
		it.seq = seqs[i]
		(*it.msgs)[it.idx].Seq = uint64(seqs[i])
	}
	return nil
}

// write is step 5.
func (c *committer) write() error {
	var bt pgx.Batch
	c.queueItems(&bt)
	c.queueShared(&bt)
	c.queueCounts(&bt)
	c.queueClaims(&bt)
	if len(c.logs) > 0 {
		g, q, ch := make([][]byte, len(c.logs)), make([]int64, len(c.logs)), make([][]byte, len(c.logs))
		for i, l := range c.logs {
			g[i], q[i], ch[i] = l.group, l.seq, l.change
		}
		bt.Queue(`INSERT INTO group_log (group_id, seq, change) SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[])`, g, q, ch)
	}
	if bt.Len() == 0 {
		return nil
	}
	if err := c.tx.SendBatch(c.ctx, &bt).Close(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (c *committer) queueItems(bt *pgx.Batch) {
	var (
		tu, fu          []string
		td, sq, fd, exp []int64
		kd              []int16
		ci, pl          [][]byte
		gu              []string
		gd, gs, gid     []int64
		gk              []int16
	)
	for _, it := range c.items {
		if it.shared != 0 {
			gu, gd, gs, gk = append(gu, it.to.User), append(gd, int64(it.to.Device)), append(gs, it.seq), append(gk, int16(it.kind))
			gid = append(gid, c.items[c.shared[it.shared-1].first].seq)
			continue
		}
		tu, td, sq, kd = append(tu, it.to.User), append(td, int64(it.to.Device)), append(sq, it.seq), append(kd, int16(it.kind))
		fu, fd, ci, pl, exp = append(fu, it.from.User), append(fd, int64(it.from.Device)), append(ci, it.cid), append(pl, it.payload), append(exp, it.expires)
	}
	if len(tu) > 0 {
		bt.Queue(`INSERT INTO queue (to_user, to_device, seq, kind, from_user, from_device, client_id, payload, sent, expires)
			SELECT u, d, s, k, fu, fd, c, p, $9, e
			FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::smallint[], $5::text[], $6::bigint[], $7::bytea[], $8::bytea[], $10::bigint[])
				AS t(u, d, s, k, fu, fd, c, p, e)`,
			tu, td, sq, kd, fu, fd, ci, pl, c.now, exp)
	}
	if len(gu) > 0 {
		bt.Queue(`INSERT INTO queue (to_user, to_device, seq, kind, shared_id)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::smallint[], $5::bigint[])`, gu, gd, gs, gk, gid)
	}
}

// queueShared inserts the new shared rows and drops the references of the
// acknowledged group items, one row at a time in id order (another
// transaction may be dropping references to the same rows: the order
// keeps the two from deadlocking), deleting the rows left with none.
func (c *committer) queueShared(bt *pgx.Batch) {
	if n := len(c.shared); n > 0 {
		id, refs, exp, fd := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		grp, ci, pl := make([][]byte, n), make([][]byte, n), make([][]byte, n)
		fu := make([]string, n)
		for i, s := range c.shared {
			id[i], refs[i], exp[i], fd[i] = c.items[s.first].seq, s.refs, s.expires, int64(s.from.Device)
			grp[i], ci[i], pl[i], fu[i] = s.group, s.cid, s.payload, s.from.User
		}
		bt.Queue(`INSERT INTO shared (id, refs, expires, group_id, from_user, from_device, client_id, sent, payload)
			SELECT i, r, e, g, fu, fd, c, $9, p
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::text[], $6::bigint[], $7::bytea[], $8::bytea[])
				AS t(i, r, e, g, fu, fd, c, p)`, id, refs, exp, grp, fu, fd, ci, pl, c.now)
	}
	queueRelease(bt, c.release)
}

// queueRelease drops references to shared rows (id → how many), in id
// order, and deletes the rows left with none.
func queueRelease(bt *pgx.Batch, release map[int64]int64) {
	if len(release) == 0 {
		return
	}
	ids := make([]int64, 0, len(release))
	for id := range release {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		bt.Queue(`UPDATE shared SET refs = refs - $2 WHERE id = $1`, id, release[id]).Exec(checkOne("shared row"))
	}
	bt.Queue(`DELETE FROM shared WHERE id = ANY($1::bigint[]) AND refs = 0`, ids)
}

// checkOne fails a statement that was to change one row and did not: a
// bookkeeping bug, which must not commit.
func checkOne(what string) func(ct pgconn.CommandTag) error {
	return func(ct pgconn.CommandTag) error {
		if n := ct.RowsAffected(); n != 1 {
			return fmt.Errorf("%s: %d rows changed, want 1", what, n)
		}
		return nil
	}
}

// queueCounts writes the queue lengths and senders' counts that changed.
func (c *committer) queueCounts(bt *pgx.Batch) {
	queueDeltas(bt, c.qdelta, c.sdelta)
}

// queueDeltas adds qdelta to the devices' queue lengths and sdelta to the
// senders' counts (deleting those that reach zero). The devices are
// locked, and every count's row is its device's.
func queueDeltas(bt *pgx.Batch, qdelta map[store.DeviceAddr]int64, sdelta map[batchrules.SenderKey]int64) {
	var (
		du    []string
		dd, n []int64
	)
	for d, k := range qdelta {
		if k != 0 {
			du, dd, n = append(du, d.User), append(dd, int64(d.Device)), append(n, k)
		}
	}
	if len(du) > 0 {
		want := int64(len(du))
		bt.Queue(`UPDATE devices d SET queued = d.queued + x.n
			FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS x(u, id, n)
			WHERE d.user_name = x.u AND d.id = x.id`, du, dd, n).Exec(func(ct pgconn.CommandTag) error {
			if ct.RowsAffected() != want {
				return fmt.Errorf("queue lengths: %d devices updated, want %d", ct.RowsAffected(), want)
			}
			return nil
		})
	}
	var (
		pu, ps, mu, ms []string
		pd, pn, md, mn []int64
	)
	for k, v := range sdelta {
		switch {
		case v > 0:
			pu, pd, ps, pn = append(pu, k.Dev.User), append(pd, int64(k.Dev.Device)), append(ps, k.Sender), append(pn, v)
		case v < 0:
			mu, md, ms, mn = append(mu, k.Dev.User), append(md, int64(k.Dev.Device)), append(ms, k.Sender), append(mn, v)
		}
	}
	if len(pu) > 0 {
		bt.Queue(`INSERT INTO sender_counts (to_user, to_device, sender, n)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
			ON CONFLICT (to_user, to_device, sender) DO UPDATE SET n = sender_counts.n + excluded.n`, pu, pd, ps, pn)
	}
	if len(mu) > 0 {
		want := int64(len(mu))
		bt.Queue(`UPDATE sender_counts c SET n = c.n + x.n
			FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS x(u, d, s, n)
			WHERE c.to_user = x.u AND c.to_device = x.d AND c.sender = x.s`, mu, md, ms, mn).Exec(func(ct pgconn.CommandTag) error {
			if ct.RowsAffected() != want {
				return fmt.Errorf("sender counts: %d updated, want %d", ct.RowsAffected(), want)
			}
			return nil
		})
		bt.Queue(`DELETE FROM sender_counts c USING unnest($1::text[], $2::bigint[], $3::text[]) AS x(u, d, s)
			WHERE c.to_user = x.u AND c.to_device = x.d AND c.sender = x.s AND c.n = 0`, mu, md, ms)
	}
}

// queueClaims releases the claims of sends that were refused, so that a
// retry is not taken for a duplicate, and gives a claim the expiry of the
// send accepted under it when that was not the first one of the batch.
func (c *committer) queueClaims(bt *pgx.Batch) {
	var (
		ru, uu []string
		rd, ud []int64
		rc, uc [][]byte
		ue     []int64
	)
	for k, cl := range c.claims {
		switch {
		case !cl.claimed:
		case !cl.accepted:
			ru, rd, rc = append(ru, k.from.User), append(rd, int64(k.from.Device)), append(rc, k.cid[:])
		case cl.accExp != cl.expires:
			uu, ud, uc, ue = append(uu, k.from.User), append(ud, int64(k.from.Device)), append(uc, k.cid[:]), append(ue, cl.accExp)
		}
	}
	if len(ru) > 0 {
		bt.Queue(`DELETE FROM dedup WHERE (from_user, from_device, client_id) IN
			(SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[]))`, ru, rd, rc)
	}
	if len(uu) > 0 {
		bt.Queue(`UPDATE dedup SET expires = x.e FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bigint[]) AS x(u, d, c, e)
			WHERE from_user = x.u AND from_device = x.d AND client_id = x.c`, uu, ud, uc, ue)
	}
}
