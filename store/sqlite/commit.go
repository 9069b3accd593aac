package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// Commit implements store.Store. Enqueue and Ack results are reset at the
// start and cleared again if Commit fails, so a retried batch never carries
// stale results. Queued[i].Payload aliases the Enqueue's Payload.
//
// A failing Enqueue is detected before it writes anything, so no savepoint
// is needed to keep the rest of the batch.
//
// Receipts count toward the recipient's queue length (they occupy the
// queue) but are queued even when that length is at or above a QueueLimit.
//
// On a full disk the batch's acknowledgements still commit, in the space
// of the reserve (reserve.go), and its other operations are refused one by
// one with ErrStorageFull (with no acknowledgements the whole Commit
// returns ErrStorageFull), until there is room for the reserve again.
func (s *Store) Commit(ctx context.Context, b *store.Batch) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	s.wmu.Lock()
	defer s.wmu.Unlock()

	if s.reserve.spent() {
		// Still short of space since the reserve went: keep what is left
		// for acknowledgements.
		return s.commitAcks(ctx, b, store.ErrStorageFull)
	}
	err := s.commit(ctx, b)
	if err == nil || !diskFull(err) {
		return err
	}
	full := fmt.Errorf("%w: %w", store.ErrStorageFull, err)
	if len(b.Acks) == 0 {
		return full // the reserve is for acknowledgements
	}
	s.log.Warn("the disk is full: committing acknowledgements in the reserved space, refusing writes until there is room", "err", err)
	s.reserve.release()
	return s.commitAcks(ctx, b, full)
}

// commitAcks commits only the batch's acknowledgements and refuses the
// rest one by one with ErrStorageFull; with no acknowledgements it
// returns full.
func (s *Store) commitAcks(ctx context.Context, b *store.Batch, full error) error {
	batchrules.ResetResults(b)
	if len(b.Acks) == 0 {
		return full
	}
	if err := s.commit(ctx, &store.Batch{Now: b.Now, Acks: b.Acks}); err != nil {
		if diskFull(err) {
			return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
		}
		return err
	}
	batchrules.RefuseAllButAcks(b)
	return nil
}

// commit is Commit's one transaction.
func (s *Store) commit(ctx context.Context, b *store.Batch) (err error) {
	batchrules.ResetResults(b)
	defer func() {
		if err != nil {
			batchrules.ResetResults(b)
			s.senders = batchrules.SenderCounts{} // counted inside the failed transaction
		}
	}()

	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE via _txlock
	if err != nil {
		return fmt.Errorf("sqlite: commit: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	c := committer{ctx: ctx, tx: tx, now: ns(b.Now), prepared: &s.commitStmts, counts: &s.counts, delta: make(map[store.DeviceAddr]int64), senders: &s.senders}
	for i, g := range b.GroupChanges {
		if g == nil {
			return fmt.Errorf("sqlite: commit: group change %d is nil", i)
		}
		if err := c.groupChange(g); err != nil {
			return fmt.Errorf("sqlite: commit: group change %d: %w", i, err)
		}
	}
	for i, e := range b.Enqueues {
		if e == nil {
			return fmt.Errorf("sqlite: commit: enqueue %d is nil", i)
		}
		if err := c.enqueue(e); err != nil {
			return fmt.Errorf("sqlite: commit: enqueue %d: %w", i, err)
		}
	}
	for i, g := range b.GroupSends {
		if g == nil {
			return fmt.Errorf("sqlite: commit: group send %d is nil", i)
		}
		if err := c.groupSend(g); err != nil {
			return fmt.Errorf("sqlite: commit: group send %d: %w", i, err)
		}
	}
	for i, a := range b.Acks {
		if a == nil {
			return fmt.Errorf("sqlite: commit: ack %d is nil", i)
		}
	}
	if err := c.ackAll(b.Acks); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	s.counts.Apply(c.delta)
	s.senders.ApplyDelta()
	return nil
}

// Statements used by Commit, prepared once when the store opens (prepareCommit).
const (
	stDedupClaim = iota
	stDedupGet
	stDedupRelease
	stRecipients
	stInsert
	stDeleteAcked
	stDeleteAckedList
	stDeviceExists
	stInsertReceipt
	stUserDevices
	stNextSeq
	stInsertShared
	stInsertSharedPayload
	stInsertGroupItem
	stUndoGroupItems
	stReleaseShared
	stDeleteShared
	stDeleteSharedPayload
	stGroupCreate
	stGroupAdvance
	stGroupExists
	stGroupLogAppend
	stSenderCount
	nStmts
)

var commitSQL = [nStmts]string{
	// Records a send's client id unless a live record has it: one row
	// changed means the send is new (a record that expired but was not yet
	// removed by Expire is taken over), none that it is a duplicate. This
	// replaced a SELECT before every enqueue and an INSERT after it.
	stDedupClaim: `INSERT INTO dedup (from_user, from_device, client_id, sent, expires)
		VALUES (?1, ?2, ?3, ?4, ?5)
		ON CONFLICT (from_user, from_device, client_id)
		DO UPDATE SET sent = excluded.sent, expires = excluded.expires
		WHERE dedup.expires <= ?4`,
	// A duplicate's original send time, for its answer.
	stDedupGet: `SELECT sent FROM dedup
		WHERE from_user = ? AND from_device = ? AND client_id = ?`,
	// Undoes a claim when the send is refused, so that a retry is not
	// taken for a duplicate of a send that was never queued.
	stDedupRelease: `DELETE FROM dedup
		WHERE from_user = ? AND from_device = ? AND client_id = ?`,
	stRecipients: `SELECT d.id, d.registration_id,
		(SELECT count(*) FROM signed_prekeys s WHERE s.user = d.user AND s.device = d.id) = 2
		FROM devices d WHERE d.user = ? ORDER BY d.id`,
	stInsert: `INSERT INTO queue
		(to_user, to_device, kind, from_user, from_device, client_id, payload, sent, expires)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING seq`,
	// Matching on the device as well as seq is what stops a device from
	// deleting (and miscounting) another device's items (ack.go).
	//
	// One large ack (a JSON array of seqs in ?1): each seq is a search of
	// the covering index queue_by_device.
	stDeleteAcked: `DELETE FROM queue
		WHERE seq IN (SELECT value FROM json_each(?1)) AND to_user = ?2 AND to_device = ?3
		RETURNING seq, to_user, to_device, kind, from_user, from_device, client_id, shared_id`,
	// A batch's small acks together (a JSON array of [seq, user, device]
	// in ?1; ackList): each seq is a rowid search, then its device is
	// compared.
	stDeleteAckedList: `DELETE FROM queue WHERE seq IN (
		SELECT q.seq FROM json_each(?1) AS j JOIN queue AS q ON q.seq = j.value ->> 0
		WHERE q.to_user = j.value ->> 1 AND q.to_device = j.value ->> 2)
		RETURNING seq, to_user, to_device, kind, from_user, from_device, client_id, shared_id`,
	// Whether a receipt's recipient (the message's sender) still has the
	// device; asked once per sender and transaction (ack.go).
	stDeviceExists: `SELECT 1 FROM devices WHERE user = ? AND id = ?`,
	// One receipt (ack.go). Without RETURNING: its seq is the last insert
	// rowid, and RETURNING cost more than the insert (BenchmarkAck).
	stInsertReceipt: `INSERT INTO queue
		(to_user, to_device, kind, from_user, from_device, client_id, payload, sent, expires)
		VALUES (?, ?, ?, ?, ?, ?, x'', ?, ?)`,
	stUserDevices: `SELECT id FROM devices WHERE user = ? ORDER BY id`,
	// The seq the next queue row gets (AUTOINCREMENT: one more than the
	// largest ever used); none before the first.
	stNextSeq: `SELECT seq + 1 FROM sqlite_sequence WHERE name = 'queue'`,
	// A group message or change, stored once (group.go).
	stInsertShared: `INSERT INTO shared (id, last_seq, refs, expires, group_id, from_user, from_device, client_id, sent)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stInsertSharedPayload: `INSERT INTO shared_payload (id, payload) VALUES (?, ?)`,
	// One device's reference to a shared row: what differs per device,
	// and empty sender, payload and expiry columns. Without RETURNING, as
	// for receipts.
	stInsertGroupItem: `INSERT INTO queue
		(to_user, to_device, kind, from_user, from_device, client_id, payload, sent, expires, shared_id)
		VALUES (?, ?, ?, '', 0, x'', x'', 0, 0, ?)`,
	// Drops references to shared rows (a JSON array of [id, how many] in
	// ?1); what it returns is what an acknowledged group message's
	// receipt needs.
	stReleaseShared: `UPDATE shared SET refs = refs - (j.value ->> 1)
		FROM json_each(?1) AS j WHERE shared.id = j.value ->> 0
		RETURNING shared.id, shared.refs, shared.from_user, shared.from_device, shared.client_id`,
	// The shared rows (a JSON array of ids in ?1) that lost their last
	// reference, and their payloads.
	// The items of a group send that was refused (?1 its shared id, ?2
	// the last seq it got).
	stUndoGroupItems:      `DELETE FROM queue WHERE seq BETWEEN ?1 AND ?2 AND shared_id = ?1`,
	stDeleteShared:        `DELETE FROM shared WHERE id IN (SELECT value FROM json_each(?1))`,
	stDeleteSharedPayload: `DELETE FROM shared_payload WHERE id IN (SELECT value FROM json_each(?1))`,
	stGroupCreate: `INSERT INTO groups (id, seq, state) VALUES (?1, 0, ?2)
		ON CONFLICT (id) DO NOTHING`,
	// Moves the head from ?2-1 to ?2; no row changed means a conflict (or
	// no such group).
	stGroupAdvance:   `UPDATE groups SET seq = ?2, state = ?3 WHERE id = ?1 AND seq = ?2 - 1`,
	stGroupExists:    `SELECT 1 FROM groups WHERE id = ?`,
	stGroupLogAppend: `INSERT INTO group_log (group_id, seq, change) VALUES (?, ?, ?)`,
	stSenderCount:    senderCountSQL,
}

// committer applies one batch inside one transaction.
type committer struct {
	ctx      context.Context
	tx       *sql.Tx
	now      int64
	prepared *[nStmts]*sql.Stmt // on the writer, prepared once (Open)
	stmts    [nStmts]*sql.Stmt  // prepared[i] bound to tx; closed by the tx on Commit/Rollback

	counts *queueCounts               // as of the last commit
	delta  map[store.DeviceAddr]int64 // this transaction's changes to counts
	// senders is the counted parts of queues by sender (share.go).
	senders *batchrules.SenderCounts
	// exists caches deviceExists. No other transaction can remove a device
	// while this one holds the write lock.
	exists map[store.DeviceAddr]bool
}

// deviceExists reports whether d is a device, asking the database once per
// transaction.
func (c *committer) deviceExists(d store.DeviceAddr) (bool, error) {
	if ok, seen := c.exists[d]; seen {
		return ok, nil
	}
	row, err := c.queryRow(stDeviceExists, d.User, d.Device)
	if err != nil {
		return false, err
	}
	var one int
	switch err := row.Scan(&one); {
	case err == nil:
	case errors.Is(err, sql.ErrNoRows):
	default:
		return false, fmt.Errorf("device lookup: %w", err)
	}
	if c.exists == nil {
		c.exists = make(map[store.DeviceAddr]bool)
	}
	c.exists[d] = one == 1
	return one == 1, nil
}

// queued returns d's queue length within the transaction.
func (c *committer) queued(d store.DeviceAddr) int64 {
	return c.counts.Get(d) + c.delta[d]
}

// stmt returns statement i within the transaction. The statements are
// parsed once, when the store opens, on its single writer connection;
// binding one to a transaction reuses that parse. Preparing them per
// batch instead cost most of a small batch (pprof, bench chat).
func (c *committer) stmt(i int) (*sql.Stmt, error) {
	if c.stmts[i] == nil {
		c.stmts[i] = c.tx.StmtContext(c.ctx, c.prepared[i])
	}
	return c.stmts[i], nil
}

// prepareCommit prepares every commit statement on the writer.
func prepareCommit(ctx context.Context, w *sql.DB) (*[nStmts]*sql.Stmt, error) {
	var out [nStmts]*sql.Stmt
	for i, q := range commitSQL {
		st, err := w.PrepareContext(ctx, q)
		if err != nil {
			for _, p := range out[:i] {
				p.Close()
			}
			return nil, fmt.Errorf("prepare commit statement %d: %w", i, err)
		}
		out[i] = st
	}
	return &out, nil
}

func (c *committer) exec(i int, args ...any) (sql.Result, error) {
	st, err := c.stmt(i)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(c.ctx, args...)
}

func (c *committer) queryRow(i int, args ...any) (*sql.Row, error) {
	st, err := c.stmt(i)
	if err != nil {
		return nil, err
	}
	return st.QueryRowContext(c.ctx, args...), nil
}

func (c *committer) enqueue(e *store.Enqueue) error {
	// Duplicate check first: a resend of an accepted message must be
	// answered as such even if the recipient's queue is now full.
	var err error
	if e.Duplicate, e.Sent, err = c.claimClientID(e.From, e.ClientID, e.Expires); err != nil || e.Duplicate {
		return err
	}
	if err := c.enqueueClaimed(e); err != nil || e.Err == nil {
		return err
	}
	return c.releaseClientID(e.From, e.ClientID) // refused
}

// claimClientID records the client id cid of device from as sent now,
// unless a live record already has it: then the send is a duplicate, and
// sent is the original send's time. Enqueues and GroupSends share the
// records.
func (c *committer) claimClientID(from store.DeviceAddr, cid [store.ClientIDSize]byte, expires time.Time) (duplicate bool, sent time.Time, err error) {
	res, err := c.exec(stDedupClaim, from.User, from.Device, cid[:], c.now, ns(expires))
	if err != nil {
		return false, time.Time{}, fmt.Errorf("dedup record: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, time.Time{}, fmt.Errorf("dedup record: %w", err)
	} else if n == 1 {
		return false, time.Time{}, nil
	}
	row, err := c.queryRow(stDedupGet, from.User, from.Device, cid[:])
	if err != nil {
		return false, time.Time{}, err
	}
	var t int64
	if err := row.Scan(&t); err != nil {
		return false, time.Time{}, fmt.Errorf("dedup lookup: %w", err)
	}
	return true, fromNS(t), nil
}

// releaseClientID undoes a claim, for a send that was refused, so that a
// retry is not taken for a duplicate of a send that was never queued.
func (c *committer) releaseClientID(from store.DeviceAddr, cid [store.ClientIDSize]byte) error {
	if _, err := c.exec(stDedupRelease, from.User, from.Device, cid[:]); err != nil {
		return fmt.Errorf("dedup release: %w", err)
	}
	return nil
}

// enqueueClaimed queues e, whose client id is claimed, for each of its
// recipient's devices, or sets e.Err and writes nothing.
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

	queued := make([]store.Message, 0, len(rcpts))
	for _, r := range rcpts {
		m := store.Message{
			To:       store.DeviceAddr{User: e.To, Device: r.Device},
			Kind:     store.KindMessage,
			From:     e.From,
			ClientID: e.ClientID,
			Payload:  e.Payload,
			Sent:     fromNS(c.now),
			Expires:  fromNS(ns(e.Expires)),
		}
		if payloads != nil {
			m.Payload = payloads[r.Device]
		}
		payload := m.Payload
		if payload == nil {
			payload = []byte{} // the column is NOT NULL
		}
		if err := c.insert(&m, payload); err != nil {
			return err
		}
		c.delta[m.To]++
		c.senders.QueuedFrom(m.To, e.From.User)
		queued = append(queued, m)
	}
	e.Sent = fromNS(c.now)
	e.Queued = queued
	return nil
}

func (c *committer) recipients(user string) ([]batchrules.Recipient, error) {
	st, err := c.stmt(stRecipients)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(c.ctx, user)
	if err != nil {
		return nil, fmt.Errorf("recipients: %w", err)
	}
	defer rows.Close()
	var rs []batchrules.Recipient
	for rows.Next() {
		var r batchrules.Recipient
		if err := rows.Scan(&r.Device, &r.RegistrationID, &r.Keyed); err != nil {
			return nil, fmt.Errorf("recipients: %w", err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recipients: %w", err)
	}
	return rs, nil
}

// insert adds m to the queue and sets m.Seq. It does not touch the counts.
func (c *committer) insert(m *store.Message, payload []byte) error {
	row, err := c.queryRow(stInsert, m.To.User, m.To.Device, uint8(m.Kind),
		m.From.User, m.From.Device, m.ClientID[:], payload, ns(m.Sent), ns(m.Expires))
	if err != nil {
		return err
	}
	if err := row.Scan(&m.Seq); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}
