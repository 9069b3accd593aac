// Package batchrules holds what the stores (store/sqlite,
// store/pebblestore and store/pgstore) decide the same way about a
// store.Batch, apart from how they write it: nil checks, result resets, the
// Sesame device-list check, group send validation, and (for the embedded
// stores) the in-memory count of a sender's share of a queue.
package batchrules

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/magpie-im/magpie/store"
)

// ResetResults clears every result field of b, so that a retried or failed
// batch never carries stale results.
func ResetResults(b *store.Batch) {
	for _, g := range b.GroupChanges {
		if g != nil {
			g.Err, g.Queued = nil, nil
		}
	}
	for _, e := range b.Enqueues {
		if e != nil {
			e.Err, e.Duplicate, e.Sent, e.Queued = nil, false, time.Time{}, nil
		}
	}
	for _, g := range b.GroupSends {
		if g != nil {
			g.Err, g.Duplicate, g.Sent, g.Queued, g.Full = nil, false, time.Time{}, nil, nil
		}
	}
	for _, a := range b.Acks {
		if a != nil {
			a.Receipts = nil
		}
	}
}

// RefuseAllButAcks marks b's writes other than acknowledgements refused
// with ErrStorageFull (the disk is full; the acks were committed alone).
func RefuseAllButAcks(b *store.Batch) {
	for _, g := range b.GroupChanges {
		g.Err = store.ErrStorageFull
	}
	for _, e := range b.Enqueues {
		e.Err = store.ErrStorageFull
	}
	for _, g := range b.GroupSends {
		g.Err = store.ErrStorageFull
	}
}

// Recipient is one device of a user as a send to the user sees it.
type Recipient struct {
	Device         uint32
	RegistrationID uint32
	// Keyed: the device has uploaded its registration id, signed prekey
	// and last-resort Kyber prekey, so a per-device send must include it.
	Keyed bool
}

// MatchDevices checks a per-device enqueue against the recipient's devices
// (Sesame: the sender must encrypt to every current device, and only to
// them). The expected set is every device with keys, less the sending
// device when writing to one's own account. It returns the devices to queue
// for and each one's payload, or a *store.MismatchError or ErrNoKeys.
func MatchDevices(e *store.Enqueue, all []Recipient) ([]Recipient, map[uint32][]byte, error) {
	expected := make(map[uint32]Recipient)
	for _, r := range all {
		if r.Keyed && !(e.To == e.From.User && r.Device == e.From.Device) {
			expected[r.Device] = r
		}
	}
	var mm store.MismatchError
	payloads := make(map[uint32][]byte, len(e.Devices))
	for _, d := range e.Devices {
		r, ok := expected[d.Device]
		_, dup := payloads[d.Device]
		switch {
		case !ok || dup:
			mm.Extra = append(mm.Extra, d.Device)
		case r.RegistrationID != d.RegistrationID:
			mm.Stale = append(mm.Stale, d.Device)
		}
		payloads[d.Device] = d.Payload
	}
	var rcpts []Recipient
	for _, r := range all {
		if _, ok := expected[r.Device]; !ok {
			continue
		}
		if _, named := payloads[r.Device]; !named {
			mm.Missing = append(mm.Missing, r.Device)
		}
		rcpts = append(rcpts, r)
	}
	if mm.Missing != nil || mm.Extra != nil || mm.Stale != nil {
		return nil, nil, &mm
	}
	if len(rcpts) == 0 && e.To != e.From.User {
		// Nobody to send to: no device of the recipient has keys yet. (A
		// copy to one's own account with no other device is simply empty.)
		return nil, nil, store.ErrNoKeys
	}
	return rcpts, payloads, nil
}

// CheckGroupSend refuses a group send to no device or to a device twice.
func CheckGroupSend(to []store.DeviceAddr) error {
	if len(to) == 0 {
		return errors.New("store: group send to no device")
	}
	seen := make(map[store.DeviceAddr]struct{}, len(to))
	for _, d := range to {
		if _, dup := seen[d]; dup {
			return fmt.Errorf("store: group send names %s/%d twice", d.User, d.Device)
		}
		seen[d] = struct{}{}
	}
	return nil
}

// SenderCounts is a sender's share of a recipient device's queue
// (Enqueue.SenderShare, GroupSend.SenderShare): so that one sender cannot
// fill a queue and shut everyone else out, no sender may hold more than
// the share in it.
//
// A sender's part is only needed once the whole queue is at least a share
// long, which honest use rarely reaches. Then the store counts it once
// and keeps it here, added to as the sender's items are queued (Delta,
// applied when the commit is durable) and forgotten, for the device,
// whenever the device's items go: the next check counts again. A failed
// commit forgets everything (the zero value).
type SenderCounts struct {
	N     map[SenderKey]int64
	Delta map[SenderKey]int64
}

// SenderKey names one sender's part of one device's queue.
type SenderKey struct {
	Dev    store.DeviceAddr
	Sender string
}

// Counted records n, counted within the current commit, for k.
func (s *SenderCounts) Counted(k SenderKey, n int64) {
	if s.N == nil {
		s.N = make(map[SenderKey]int64)
	}
	s.N[k] = n
}

// Over reports, for a counted k, whether it holds share items or more.
func (s *SenderCounts) Over(k SenderKey, share int) (over, counted bool) {
	n, ok := s.N[k]
	return ok && n+s.Delta[k] >= int64(share), ok
}

// QueuedFrom notes an item of sender queued for d, for a counted pair.
func (s *SenderCounts) QueuedFrom(d store.DeviceAddr, sender string) {
	k := SenderKey{d, sender}
	if _, ok := s.N[k]; !ok {
		return
	}
	if s.Delta == nil {
		s.Delta = make(map[SenderKey]int64)
	}
	s.Delta[k]++
}

// ForgetDevice drops d's counted pairs: its items went.
func (s *SenderCounts) ForgetDevice(d store.DeviceAddr) {
	for k := range s.N {
		if k.Dev == d {
			delete(s.N, k)
		}
	}
	for k := range s.Delta {
		if k.Dev == d {
			delete(s.Delta, k)
		}
	}
}

// ApplyDelta folds a durable commit's additions in.
func (s *SenderCounts) ApplyDelta() {
	for k, v := range s.Delta {
		if _, ok := s.N[k]; ok {
			s.N[k] += v
		}
	}
	s.Delta = nil
}

// QueueCounts is every device's queue length in memory, for the queue
// limit and QueueDepth: a store sets it from what it holds when it opens
// and applies each commit's changes only once the commit is durable. Only
// the process holding the store's lock writes it, so the two cannot drift.
type QueueCounts struct {
	mu    sync.Mutex
	n     map[store.DeviceAddr]int64 // devices with an empty queue are absent
	total int64
}

// Set replaces the counts with those counted from the store.
func (qc *QueueCounts) Set(n map[store.DeviceAddr]int64, total int64) {
	qc.mu.Lock()
	qc.n, qc.total = n, total
	qc.mu.Unlock()
}

// Get returns d's queue length.
func (qc *QueueCounts) Get(d store.DeviceAddr) int64 {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	return qc.n[d]
}

// Sum returns the length of all queues.
func (qc *QueueCounts) Sum() int64 {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	return qc.total
}

// Apply adds a durable commit's changes.
func (qc *QueueCounts) Apply(delta map[store.DeviceAddr]int64) {
	if len(delta) == 0 {
		return
	}
	qc.mu.Lock()
	defer qc.mu.Unlock()
	if qc.n == nil {
		qc.n = make(map[store.DeviceAddr]int64)
	}
	for d, k := range delta {
		if k == 0 {
			continue
		}
		// A negative length would be a bookkeeping bug; it is kept, not
		// hidden, so that tests reading the counts find it.
		if v := qc.n[d] + k; v != 0 {
			qc.n[d] = v
		} else {
			delete(qc.n, d)
		}
		qc.total += k
	}
}

// Snapshot returns a copy of the counts (for consistency checks in tests).
func (qc *QueueCounts) Snapshot() (map[store.DeviceAddr]int64, int64) {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	n := make(map[store.DeviceAddr]int64, len(qc.n))
	for d, k := range qc.n {
		n[d] = k
	}
	return n, qc.total
}

// CheckNil refuses a batch with a nil operation, naming the first.
func CheckNil(b *store.Batch) error {
	for i, g := range b.GroupChanges {
		if g == nil {
			return fmt.Errorf("group change %d is nil", i)
		}
	}
	for i, e := range b.Enqueues {
		if e == nil {
			return fmt.Errorf("enqueue %d is nil", i)
		}
	}
	for i, g := range b.GroupSends {
		if g == nil {
			return fmt.Errorf("group send %d is nil", i)
		}
	}
	for i, a := range b.Acks {
		if a == nil {
			return fmt.Errorf("ack %d is nil", i)
		}
	}
	return nil
}
