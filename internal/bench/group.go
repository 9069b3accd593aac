package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the server's store, read for its size (GroupOptions.Store)

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/senderkey"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
)

// The group scenario (magpie bench group). Every member is a bench user
// with one device and real end-to-end keys on the server (the server fans
// a group message out to the devices that have keys, and a group's creator
// must have an identity key). Each group is created by its first member
// with a real signed Create (package group) naming the others with their
// identity keys, which the server verifies and queues for every member.
//
// Sending is what the SDK does for a group (client/groupsend.go): the
// sender encrypts the message once with its Sender Key chain for the group
// (e2e.GroupEncrypt: load the chain, step it, AES-CBC, XEdDSA signature,
// save it) and hands that one ciphertext to the server with one GroupSend,
// whatever the group's size; the server stores it once and queues a
// reference for every other member's device. The encryption is timed on
// its own. What differs from the SDK:
//
//   - The Sender Key distribution messages, which the SDK sends inside the
//     1:1 sessions once per chain and member, are handed over in memory
//     during setup: they are a cost per chain, not per message.
//   - The plaintext is the bench's bytes (its magic and the intended send
//     time), not a content.Content.
//   - Only --verify members of each group decrypt what they receive
//     (e2e.GroupDecrypt, signature checked, plaintext compared with the
//     message id). Every member of a real group decrypts on its own device;
//     here all of them share the tool's cores, and a decryption (about 80
//     µs, most of it the XEdDSA verification) for each of 49,000 copies a
//     second would take several cores from the server being measured. The
//     others count and time each copy by its message id, as soon as it
//     arrives. Either way the time is taken before any decryption.
//
// Latency is measured from each message's intended send time (open loop),
// per copy (the time each member device got it) and per message (the time
// the last member did: the message has then reached the whole group).

// GroupOptions configure the group scenario.
type GroupOptions struct {
	Groups  int // groups (default 1)
	Members int // members of each group, its creator included (2 to 1,024; default 1,024)
	// Senders is how many members of each group send (its first ones;
	// default min(Members, 8)). Messages go to random groups and, within
	// a group, to random senders.
	Senders  int
	Rate     float64       // group messages per second, all groups together (default 2)
	Duration time.Duration // how long to send (default 10 s)
	Size     int           // plaintext bytes (at least MinSize; default 1 KiB)
	// Verify is how many members of each group (its last ones) decrypt
	// every message they receive; the others count and time it. Negative
	// or at least Members: all. Default (0) is taken as 1; use NoVerify
	// for none.
	Verify   int
	NoVerify bool
	// Inflight bounds each sender's unacknowledged sends (default 64).
	Inflight int
	// Drain is how long to wait, after the last send, for the remaining
	// copies and receipts (default 10 s).
	Drain time.Duration
	// SetupConcurrency is how many users connect, upload keys or create
	// groups at once (default 32).
	SetupConcurrency int
	// Admin, if set, is the server's admin listener: the report then
	// carries the server's CPU time per delivered copy.
	Admin string
	// Store, if set, is the server's SQLite file (DATA/magpie.db), opened
	// read-only: the report then carries the bytes stored per message,
	// measured with StoreMessages messages held undelivered.
	Store string
	// StoreUsage, if set instead, reports the bytes the store holds, for a
	// server in the same process (tests): a Pebble store cannot be read
	// by another process while the server has it open.
	StoreUsage    func(context.Context) (int64, error)
	StoreMessages int // default 200
	// Progress, if set, gets one line a second while sending.
	Progress io.Writer
}

func (o *GroupOptions) setDefaults() error {
	if o.Groups == 0 {
		o.Groups = 1
	}
	if o.Members == 0 {
		o.Members = group.MaxMembers
	}
	if o.Rate == 0 {
		o.Rate = 2
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	switch {
	case o.Groups < 1:
		return errors.New("bench group: need at least one group")
	case o.Members < 2 || o.Members > group.MaxMembers:
		return fmt.Errorf("bench group: a group has 2 to %d members", group.MaxMembers)
	case o.Rate < 0:
		return errors.New("bench group: the rate must be positive")
	case o.Duration < 0:
		return errors.New("bench group: the duration must be positive")
	case o.Senders < 0 || o.Senders > o.Members:
		return fmt.Errorf("bench group: --senders must be between 1 and the members (%d)", o.Members)
	case o.StoreMessages < 0:
		return errors.New("bench group: --store-messages must be positive")
	}
	if err := checkSize("group", &o.Size); err != nil {
		return err
	}
	if o.Senders == 0 {
		o.Senders = min(o.Members, 8)
	}
	switch {
	case o.NoVerify:
		o.Verify = 0
	case o.Verify == 0:
		o.Verify = 1
	case o.Verify < 0 || o.Verify > o.Members:
		o.Verify = o.Members
	}
	defaultInt(&o.Inflight, 64)
	defaultInt(&o.SetupConcurrency, 32)
	defaultInt(&o.StoreMessages, 200)
	if o.Drain == 0 {
		o.Drain = 10 * time.Second
	}
	return nil
}

// GroupReport is the outcome of a group run.
type GroupReport struct {
	Groups    int     `json:"groups"`
	Members   int     `json:"members"`     // per group, the creator included
	Senders   int     `json:"senders"`     // per group
	Verifiers int     `json:"verifiers"`   // per group: members that decrypt every message
	Rate      float64 `json:"target_rate"` // group messages per second, all groups
	Size      int     `json:"size"`        // plaintext bytes
	DurationS float64 `json:"duration_s"`
	// SetupS: registering, uploading keys, creating the groups and
	// handing out the sender keys; CreateS is the groups' part.
	SetupS  float64 `json:"setup_s"`
	CreateS float64 `json:"create_s"`
	// ChangesDelivered counts the groups' Creates pushed to members.
	ChangesDelivered int64 `json:"changes_delivered"`

	Sent  int64 `json:"sent"`  // group sends attempted
	Acked int64 `json:"acked"` // acknowledged: stored and queued for every member device
	// Expected is the copies the acknowledged messages owe (each queued
	// for Members-1 devices); Delivered those that arrived, Complete the
	// messages that reached every member, Duplicates copies beyond a
	// message's count, Unexpected copies of no message this run sent.
	Expected   int64 `json:"expected_copies"`
	Delivered  int64 `json:"delivered_copies"`
	Complete   int64 `json:"complete"`
	Duplicates int64 `json:"duplicates"`
	Unexpected int64 `json:"unexpected"`
	// Late: copies of messages whose send failed (timed out) but that
	// the server had stored after all; they are in Delivered, and timed.
	// Missing: copies of acknowledged messages that had not arrived when
	// the drain wait ended.
	Late    int64 `json:"late_copies,omitempty"`
	Missing int64 `json:"missing_copies"`
	// Decrypted: copies the verifying members decrypted and checked, of
	// DecryptExpected, the copies they received.
	Decrypted       int64 `json:"decrypted"`
	DecryptExpected int64 `json:"decrypt_expected"`
	// Receipts: delivery receipts that reached the senders (one per copy
	// acknowledged by its recipient) by the end of the drain wait.
	Receipts   int64            `json:"receipts"`
	Errors     int64            `json:"errors"`
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`

	// OfferedPerS is the schedule's rate; AckedPerS acknowledged sends per
	// second of the send window; DeliveredPerS copies per second until the
	// last copy.
	OfferedPerS   float64 `json:"offered_per_s"`
	AckedPerS     float64 `json:"acked_per_s"`
	DeliveredPerS float64 `json:"delivered_copies_per_s"`

	Ack  Summary `json:"ack_latency"`  // intended send time → server ack
	Copy Summary `json:"copy_latency"` // intended send time → a member device has it (every copy)
	Last Summary `json:"last_latency"` // intended send time → the last member device has it (every message)

	// The sender's cost: one e2e.GroupEncrypt per message (its
	// distribution of latencies; means in Encrypt.Mean), and the one
	// ciphertext it uploads.
	Encrypt         Summary `json:"encrypt"`
	CiphertextBytes int     `json:"ciphertext_bytes"` // mean
	UploadsPerMsg   float64 `json:"uploads_per_message"`

	// With Admin: the server's CPU time from the first send until the
	// copies and receipts were in, per delivered copy and per message.
	ServerCPUS         float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPerCopyUs float64 `json:"server_cpu_per_copy_us,omitempty"`
	ServerCPUPerMsgUs  float64 `json:"server_cpu_per_message_us,omitempty"`

	// With Store: the bytes stored per message.
	Storage *GroupStorage `json:"storage,omitempty"`

	Timeline []Sample `json:"timeline,omitempty"`
}

// GroupStorage is what the server's store holds per group message, measured
// after the timed part: every member stops acknowledging, StoreMessages
// messages are sent (each acknowledged, so committed), and the bytes in use
// in the SQLite file are read before and after, read-only, from SQLite's
// dbstat table (per table and index: page size less unused bytes, so reused
// free space counts as well as new pages).
type GroupStorage struct {
	// Skipped says why there is no measurement.
	Skipped    string  `json:"skipped,omitempty"`
	Messages   int     `json:"messages"`
	Recipients int     `json:"recipients"`    // devices each message is queued for
	Payload    float64 `json:"payload_bytes"` // the ciphertext (a mean: its varints vary)
	Method     string  `json:"method"`
	Bytes      int64   `json:"bytes"` // growth in all
	PerMessage float64 `json:"bytes_per_message"`
	// PerRecipient is (PerMessage - Payload) / Recipients: the issue's
	// budget is 64 bytes.
	PerRecipient float64 `json:"bytes_per_recipient_beyond_payload"`
	// Tables is the growth per table and index (dbstat only).
	Tables map[string]int64 `json:"tables,omitempty"`
	// Delivered: the held messages' copies delivered once the members
	// acknowledged again, of Messages × Recipients.
	Delivered int64 `json:"delivered_copies"`
}

// groupMember is one member of one group: a bench user with its device.
type groupMember struct {
	c      *clientconn.Conn
	d      *e2eDevice
	g      int // its group
	verify bool

	// hold: acknowledge nothing, keeping what was pushed in held (the
	// storage measurement).
	mu   sync.Mutex
	hold bool
	held []uint64
}

// ack acknowledges seqs, or keeps them while the member holds.
func (m *groupMember) ack(seqs []uint64) {
	m.mu.Lock()
	if m.hold {
		m.held = append(m.held, seqs...)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.c.Ack(seqs...) // an error ends the connection, and so its receive loop
}

func (m *groupMember) setHold(on bool) {
	m.mu.Lock()
	m.hold = on
	held := m.held
	if !on {
		m.held = nil
	}
	m.mu.Unlock()
	if !on && len(held) > 0 {
		m.c.Ack(held...)
	}
}

// benchGroup is one group of the run.
type benchGroup struct {
	id      [16]byte
	members []*groupMember // the first Senders send
	dist    []senderkey.DistributionID
}

// groupMsg is a message in flight: what its copies are checked against.
type groupMsg struct {
	intended time.Time
	left     atomic.Int32 // copies still to arrive
	storage  bool         // sent for the storage measurement, untimed
	want     int32        // copies it owes
	// failed: its send returned an error (a timeout, under overload), so
	// whether it was stored was unknown; copies that arrive anyway are
	// timed like any, and counted as late.
	failed atomic.Bool
	acked  atomic.Bool
}

// missing counts the copies of acknowledged messages (not the storage
// measurement's) still to arrive.
func (st *groupState) missing() int64 {
	var n int64
	st.msgs.Range(func(_, v any) bool {
		if m := v.(*groupMsg); m.acked.Load() && !m.storage {
			n += int64(max(0, m.left.Load()))
		}
		return true
	})
	return n
}

type groupState struct {
	chatState // sent, acked, received (copies), errors, ack, deliver (per copy)
	last      *Histogram
	encrypt   *Histogram

	msgs sync.Map // clientconn.MessageID → *groupMsg

	complete, duplicates, unexpected, decrypted, changes atomic.Int64
	storeCopies, verifyDue, ctBytes                      atomic.Int64
}

// RunGroup runs the group scenario against the server of inv.
func RunGroup(ctx context.Context, inv invite.Invite, o GroupOptions) (*GroupReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	run := runID()
	users := o.Groups * o.Members
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}
	progress("registering %d users with end-to-end keys", users)
	conns, err := registerAll(ctx, inv, "", run, users, o.SetupConcurrency)
	if err != nil {
		return nil, fmt.Errorf("bench group: setting up users: %w", err)
	}
	members := make([]*groupMember, users)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	tmpl, err := e2eKeyTemplate()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("bench group: %w", err)
	}
	if err := e2eForEach(ctx, users, o.SetupConcurrency, func(i int) error {
		d, err := setUpE2E(ctx, conns[i], userName(run, i), tmpl)
		if err != nil {
			return err
		}
		k := i % o.Members
		members[i] = &groupMember{c: conns[i], d: d, g: i / o.Members, verify: k >= o.Members-o.Verify}
		return nil
	}); err != nil {
		closeAll()
		return nil, fmt.Errorf("bench group: uploading keys: %w", err)
	}

	st := &groupState{
		chatState: chatState{ack: NewHistogram(), deliver: NewHistogram(), errKinds: map[string]int64{}, recvSignal: make(chan struct{}, 1)},
		last:      NewHistogram(), encrypt: NewHistogram(),
	}
	// Receiving starts before the groups exist: their Creates are pushed.
	var recvWG sync.WaitGroup
	for _, m := range members {
		recvWG.Add(1)
		go func() {
			defer recvWG.Done()
			m.receive(st)
		}()
	}
	defer func() {
		closeAll()
		recvWG.Wait()
	}()

	progress("creating %d groups of %d", o.Groups, o.Members)
	tCreate := time.Now()
	groups := make([]*benchGroup, o.Groups)
	if err := e2eForEach(ctx, o.Groups, max(1, o.SetupConcurrency/4), func(g int) error {
		var err error
		groups[g], err = createGroup(ctx, run, g, members[g*o.Members:(g+1)*o.Members], o.Senders)
		return err
	}); err != nil {
		return nil, fmt.Errorf("bench group: %w", err)
	}
	createS := time.Since(tCreate).Seconds()
	// Every member but the creator's device learns of its group's Create
	// (the creator's own device may too); wait for them, briefly, so that
	// the timed part starts on quiet queues.
	waitUntil(ctx, 10*time.Second, func() bool { return st.changes.Load() >= int64(users-o.Groups) })

	r := &GroupReport{
		Groups: o.Groups, Members: o.Members, Senders: o.Senders, Verifiers: o.Verify,
		Rate: o.Rate, Size: o.Size, DurationS: o.Duration.Seconds(), CreateS: createS,
		UploadsPerMsg: 1,
	}
	r.SetupS = time.Since(start).Seconds()
	progress("setup %.1fs (groups created in %.1fs); sending %.0f messages a second for %s", r.SetupS, createS, o.Rate, o.Duration)

	var cpu0 float64
	if o.Admin != "" {
		m, err := Scrape(ctx, o.Admin)
		if err != nil {
			return nil, fmt.Errorf("bench group: %w", err)
		}
		cpu0 = m["process_cpu_seconds_total"]
	}
	if err := runGroupSends(ctx, groups, o, st, r); err != nil {
		return r, err
	}
	if o.Admin != "" {
		if m, err := Scrape(ctx, o.Admin); err == nil {
			r.ServerCPUS = m["process_cpu_seconds_total"] - cpu0
			if r.Delivered > 0 {
				r.ServerCPUPerCopyUs = 1e6 * r.ServerCPUS / float64(r.Delivered)
			}
			if r.Acked > 0 {
				r.ServerCPUPerMsgUs = 1e6 * r.ServerCPUS / float64(r.Acked)
			}
		}
	}
	switch {
	case (o.Store != "" || o.StoreUsage != nil) && r.Missing > 0:
		r.Storage = &GroupStorage{Skipped: fmt.Sprintf("the server was still delivering (%d copies missing after the drain wait): measure at a rate it sustains", r.Missing)}
	case o.Store != "" || o.StoreUsage != nil:
		progress("measuring storage: %d messages held undelivered", o.StoreMessages)
		s, err := measureGroupStorage(ctx, members, groups, o, st)
		if err != nil {
			s = &GroupStorage{Skipped: "failed: " + err.Error()}
		}
		r.Storage = s
	}
	r.ChangesDelivered = st.changes.Load()
	r.Decrypted = st.decrypted.Load()
	r.Errors = st.errors.Load()
	st.mu.Lock()
	if len(st.errKinds) > 0 {
		r.ErrorKinds = st.errKinds
	}
	st.mu.Unlock()
	return r, ctx.Err()
}

// waitUntil polls cond until it holds, d passes or ctx ends.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// createGroup creates group g of ms: the first member makes the signed
// Create naming the others with their identity keys, and the server
// verifies and stores it. Then each sender makes its Sender Key chain for
// the group, and the verifying members process its distribution message.
func createGroup(ctx context.Context, run string, g int, ms []*groupMember, senders int) (*benchGroup, error) {
	id, err := group.NewID(rand.Reader)
	if err != nil {
		return nil, err
	}
	owner := ms[0]
	others := make([]group.Member, 0, len(ms)-1)
	for _, m := range ms[1:] {
		others = append(others, group.Member{User: m.d.addr.User, Key: m.d.self.Key.Public, Role: group.RoleMember})
	}
	signed, _, err := group.Create(id, owner.d.addr.User, owner.d.self.Key, fmt.Sprintf("bench %s %d", run, g), others, group.Settings{}, time.Now(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("group %d: making its Create: %w", g, err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := owner.c.GroupChange(cctx, id, signed); err != nil {
		return nil, fmt.Errorf("group %d: creating it (%d bytes): %w", g, len(signed), err)
	}
	bg := &benchGroup{id: id, members: ms, dist: make([]senderkey.DistributionID, senders)}
	for s := range senders {
		sd := ms[s].d
		if bg.dist[s], err = e2e.NewDistributionID(rand.Reader); err != nil {
			return nil, err
		}
		sd.mu.Lock()
		msg, err := e2e.SenderKeyDistribution(sd.kv, bg.dist[s], rand.Reader)
		sd.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("group %d: sender key of %s: %w", g, sd.addr.User, err)
		}
		for _, m := range ms {
			if !m.verify || m == ms[s] {
				continue
			}
			m.d.mu.Lock()
			_, err := e2e.ProcessSenderKeyDistribution(m.d.kv, sd.addr.User, sd.addr.Device, msg)
			m.d.mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("group %d: %s processing the sender key of %s: %w", g, m.d.addr.User, sd.addr.User, err)
			}
		}
	}
	return bg, nil
}

// receive handles m's pushes until its connection closes: copies of group
// messages (timed, then decrypted by a verifying member), receipts and
// group changes, acknowledged in batches as clients do.
func (m *groupMember) receive(st *groupState) {
	batchAcks(m.c.Pushes(), func(p clientconn.Push) {
		switch {
		case p.Envelope != nil:
			m.handle(st, p.Envelope)
		case p.Receipt != nil:
			st.receipts.Add(1)
		}
	}, m.ack) // m.ack copies what it holds
}

func (m *groupMember) handle(st *groupState, env *clientconn.Envelope) {
	now := time.Now()
	if env.GroupChange {
		st.changes.Add(1)
		return
	}
	v, ok := st.msgs.Load(env.ID)
	if !ok || env.Group == ([16]byte{}) {
		st.unexpected.Add(1)
		st.fail(errors.New("a delivery of no group message this run sent"))
		return
	}
	msg := v.(*groupMsg)
	left := msg.left.Add(-1)
	if left < 0 {
		st.duplicates.Add(1)
		st.fail(errors.New("a group message delivered more often than it has recipients"))
		return
	}
	switch {
	case msg.storage:
		st.storeCopies.Add(1)
	default:
		st.deliver.Record(now.Sub(msg.intended))
		st.received.Add(1)
		if left == 0 {
			st.last.Record(now.Sub(msg.intended))
			st.complete.Add(1)
		}
		st.mu.Lock()
		st.lastRecv = now
		st.mu.Unlock()
	}
	if m.verify && !msg.storage {
		st.verifyDue.Add(1)
		if err := m.check(env, msg.intended); err != nil {
			st.fail(err)
		} else {
			st.decrypted.Add(1)
		}
	} else if m.verify {
		if err := m.check(env, msg.intended); err != nil {
			st.fail(err)
		}
	}
}

// check decrypts a copy and compares it with what was sent.
func (m *groupMember) check(env *clientconn.Envelope, intended time.Time) error {
	m.d.mu.Lock()
	dec, err := e2e.GroupDecrypt(m.d.kv, env.From.User, env.From.Device, env.Payload)
	m.d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("decrypting a group message: %w", groupCause(err))
	}
	p := dec.Plaintext
	if len(p) < MinSize || [4]byte(p[:4]) != payloadMagic || int64(binary.BigEndian.Uint64(p[4:12])) != intended.UnixNano() {
		return errors.New("a group message decrypted to something else")
	}
	return nil
}

// groupCause reduces err to its senderkey sentinel, so that error kinds do
// not multiply by user name.
func groupCause(err error) error {
	for _, e := range []error{senderkey.ErrNoSenderKey, senderkey.ErrDuplicateMessage, senderkey.ErrInvalidSignature,
		senderkey.ErrTooFarInFuture, senderkey.ErrInvalidMessage} {
		if errors.Is(err, e) {
			return e
		}
	}
	return err
}

// groupSender is one sending member and its chain.
type groupSender struct {
	g    *benchGroup
	m    *groupMember
	dist senderkey.DistributionID
	idx  uint32 // unique in the run: the message ids' sender part
}

// encryptAndSend encrypts pt once, timing it, and sends the ciphertext to
// the group with one GroupSend; the copies are expected before it leaves.
func (s *groupSender) encryptAndSend(ctx context.Context, st *groupState, k uint32, intended time.Time, pt []byte, storage bool) (int, error) {
	d := s.m.d
	d.mu.Lock()
	t0 := time.Now()
	ct, err := e2e.GroupEncrypt(d.kv, s.dist, pt, rand.Reader)
	el := time.Since(t0)
	d.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("encrypting: %w", groupCause(err))
	}
	if !storage {
		st.encrypt.Record(el)
	}
	if !storage {
		st.ctBytes.Add(int64(len(ct)))
	}
	var mid clientconn.MessageID
	binary.BigEndian.PutUint64(mid[:8], uint64(intended.UnixNano()))
	binary.BigEndian.PutUint64(mid[8:], uint64(s.idx)<<32|uint64(k))
	want := len(s.g.members) - 1
	msg := &groupMsg{intended: intended, storage: storage, want: int32(want)}
	msg.left.Store(int32(want))
	st.msgs.Store(mid, msg)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := s.m.c.GroupSend(sctx, s.g.id, mid, ct, false)
	if err != nil {
		msg.failed.Store(true)
		return 0, err
	}
	msg.acked.Store(true)
	if res.Devices != want {
		return len(ct), fmt.Errorf("the server queued a group message for %d devices, not %d", res.Devices, want)
	}
	return len(ct), nil
}

// payloadAt is a bench plaintext of size bytes for intended.
func payloadAt(size int, intended time.Time) []byte {
	p := make([]byte, size)
	copy(p, payloadMagic[:])
	binary.BigEndian.PutUint64(p[4:12], uint64(intended.UnixNano()))
	return p
}

// runGroupSends is the timed part: every sender sends on its schedule,
// then the copies and receipts are waited for.
func runGroupSends(ctx context.Context, groups []*benchGroup, o GroupOptions, st *groupState, r *GroupReport) error {
	var senders []*groupSender
	for _, g := range groups {
		for s := range o.Senders {
			senders = append(senders, newGroupSender(g, s, len(senders)))
		}
	}
	rng := newRand()
	per := o.Rate / float64(len(senders))
	scheds := make([][]time.Duration, len(senders))
	var total int
	for i := range scheds {
		if per > 0 {
			scheds[i] = schedule(per, o.Duration, false, rng)
		}
		total += len(scheds[i])
	}
	r.OfferedPerS = float64(total) / o.Duration.Seconds()

	sendCtx, cancelSends := context.WithCancel(ctx)
	defer cancelSends()
	begin := time.Now().Add(50 * time.Millisecond)
	smp := &sampler{c: counters{&st.sent, &st.acked, &st.received, &st.errors, st.ack, st.deliver}, begin: begin,
		progress: o.Progress, stopc: make(chan struct{}), done: make(chan struct{}),
		label: func() string {
			return fmt.Sprintf("complete %d  p99 to the last member %s", st.complete.Load(), fmtDur(st.last.P99()))
		}}
	st.ack.TakeInterval()
	st.deliver.TakeInterval()
	go smp.loop()
	defer smp.stop()

	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.sendAll(sendCtx, st, begin, scheds[i], o)
		}()
	}
	wg.Wait()
	sendEnd := time.Now()

	// The copies still on their way, then the receipts of those delivered
	// (their acks and receipts are part of the server's work per copy).
	acked := func() int64 { return st.acked.Load() * int64(len(groups[0].members)-1) }
	waitUntil(ctx, o.Drain, func() bool { return st.missing() == 0 })
	waitUntil(ctx, o.Drain, func() bool { return st.receipts.Load() >= st.received.Load() })
	r.Timeline = sampleJSON(smp.stop())

	r.Sent, r.Acked, r.Receipts = st.sent.Load(), st.acked.Load(), st.receipts.Load()
	r.Expected = acked()
	r.Delivered, r.Complete = st.received.Load(), st.complete.Load()
	r.Duplicates, r.Unexpected = st.duplicates.Load(), st.unexpected.Load()
	st.msgs.Range(func(_, v any) bool {
		if m := v.(*groupMsg); m.failed.Load() && !m.storage {
			r.Late += int64(m.want - max(0, m.left.Load()))
		}
		return true
	})
	r.Missing = st.missing()
	r.DecryptExpected = st.verifyDue.Load()
	r.Ack, r.Copy, r.Last = st.ack.Summary(), st.deliver.Summary(), st.last.Summary()
	r.Encrypt = st.encrypt.Summary()
	if r.Encrypt.Count > 0 {
		r.CiphertextBytes = int(st.ctBytes.Load() / r.Encrypt.Count)
	}
	st.mu.Lock()
	lastRecv, lastAck := st.lastRecv, st.lastAck
	st.mu.Unlock()
	if !lastAck.IsZero() {
		r.AckedPerS = float64(r.Acked) / maxTime(lastAck, sendEnd).Sub(begin).Seconds()
	}
	if !lastRecv.IsZero() {
		r.DeliveredPerS = float64(r.Delivered) / lastRecv.Sub(begin).Seconds()
	}
	return ctx.Err()
}

// newGroupSender is sender s of g, the n-th of the run.
func newGroupSender(g *benchGroup, s, n int) *groupSender {
	return &groupSender{g: g, m: g.members[s], dist: g.dist[s], idx: uint32(n)}
}

// sendAll sends s's messages at their intended times, at most o.Inflight
// at once.
func (s *groupSender) sendAll(ctx context.Context, st *groupState, begin time.Time, sched []time.Duration, o GroupOptions) {
	sem := make(chan struct{}, o.Inflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for k, off := range sched {
		intended := begin.Add(off)
		if !sleepUntil(ctx, timer, intended) {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		st.sent.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.encryptAndSend(ctx, st, uint32(k), intended, payloadAt(o.Size, intended), false); err != nil {
				st.fail(err)
				return
			}
			now := time.Now()
			st.ack.Record(now.Sub(intended))
			st.acked.Add(1)
			st.mu.Lock()
			st.lastAck = maxTime(st.lastAck, now)
			st.mu.Unlock()
		}()
	}
}

// measureGroupStorage measures the bytes the server stores per group
// message: every member stops acknowledging, the store's bytes in use are
// read, o.StoreMessages messages are sent (round robin over the groups'
// senders, each acknowledged by the server, so committed), and the bytes
// are read again. Then the members acknowledge again and the held copies
// are waited for.
func measureGroupStorage(ctx context.Context, members []*groupMember, groups []*benchGroup, o GroupOptions, st *groupState) (*GroupStorage, error) {
	usage := func(ctx context.Context) (int64, map[string]int64, string, error) {
		n, err := o.StoreUsage(ctx)
		return n, nil, "keys and values live in the store (Pebble's logical bytes, before compression)", err
	}
	if o.StoreUsage == nil {
		db, err := openStoreReadOnly(o.Store)
		if err != nil {
			return nil, err
		}
		defer db.Close()
		usage = func(ctx context.Context) (int64, map[string]int64, string, error) { return storeUsage(ctx, db) }
	}
	for _, m := range members {
		m.setHold(true)
	}
	defer func() {
		for _, m := range members {
			m.setHold(false)
		}
	}()
	// Acks sent before the hold commit, and their receipts are queued,
	// before the first reading.
	time.Sleep(time.Second)
	before, tables0, method, err := usage(ctx)
	if err != nil {
		return nil, err
	}
	var senders []*groupSender
	for s := range o.Senders {
		for _, g := range groups {
			senders = append(senders, newGroupSender(g, s, 1<<20+len(senders)))
		}
	}
	s := &GroupStorage{Messages: o.StoreMessages, Recipients: o.Members - 1, Method: method}
	var payload atomic.Int64
	err = e2eForEach(ctx, o.StoreMessages, 16, func(j int) error {
		gs := senders[j%len(senders)]
		now := time.Now()
		n, err := gs.encryptAndSend(ctx, st, uint32(j), now, payloadAt(o.Size, now), true)
		payload.Add(int64(n))
		return err
	})
	if err != nil {
		return nil, err
	}
	// Every message is committed; read until two readings agree, as a
	// reader has been seen to lag the writer's last commits for a moment
	// (a server in the same process, under load).
	var after int64
	var tables1 map[string]int64
	for try := 0; ; try++ {
		n, t, _, err := usage(ctx)
		if err != nil {
			return nil, err
		}
		if (try > 0 && n == after && n != before) || try == 30 {
			break
		}
		after, tables1 = n, t
		time.Sleep(100 * time.Millisecond)
	}
	s.Payload = float64(payload.Load()) / float64(s.Messages)
	s.Bytes = after - before
	s.PerMessage = float64(s.Bytes) / float64(s.Messages)
	s.PerRecipient = (s.PerMessage - s.Payload) / float64(s.Recipients)
	if tables1 != nil {
		s.Tables = map[string]int64{}
		for name, n := range tables1 {
			if d := n - tables0[name]; d != 0 {
				s.Tables[name] = d
			}
		}
	}
	for _, m := range members {
		m.setHold(false)
	}
	want := int64(s.Messages * s.Recipients)
	waitUntil(ctx, o.Drain, func() bool { return st.storeCopies.Load() >= want })
	s.Delivered = st.storeCopies.Load()
	return s, nil
}

// openStoreReadOnly opens the server's SQLite file read-only, beside the
// running server (the file is in WAL mode: a reader sees every commit and
// never blocks the server's writer).
func openStoreReadOnly(path string) (*sql.DB, error) {
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "query_only(1)")
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return db, nil
}

// storeUsage returns the bytes in use in the database and, with dbstat,
// per table and index: each page's size less its unused bytes, so that
// rows written into space freed earlier count as much as new pages. Without
// dbstat it counts pages in use (page_count - freelist_count).
func storeUsage(ctx context.Context, db *sql.DB) (int64, map[string]int64, string, error) {
	rows, err := db.QueryContext(ctx, `SELECT name, SUM(pgsize - unused) FROM dbstat GROUP BY name`)
	if err == nil {
		defer rows.Close()
		tables := map[string]int64{}
		var total int64
		for rows.Next() {
			var name string
			var n int64
			if err := rows.Scan(&name, &n); err != nil {
				return 0, nil, "", err
			}
			tables[name] = n
			total += n
		}
		if err := rows.Err(); err != nil {
			return 0, nil, "", err
		}
		return total, tables, "dbstat: bytes in use (page size less unused bytes), all tables and indexes", nil
	}
	var pages, free, size int64
	for _, q := range []struct {
		pragma string
		v      *int64
	}{{"page_count", &pages}, {"freelist_count", &free}, {"page_size", &size}} {
		if err := db.QueryRowContext(ctx, "PRAGMA "+q.pragma).Scan(q.v); err != nil {
			return 0, nil, "", err
		}
	}
	return (pages - free) * size, nil, "pages in use (page_count - freelist_count), whole pages", nil
}

// Text renders the report.
func (r *GroupReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "group: %d group(s) of %d members (%d users), %d sender(s) and %d verifying member(s) a group; target %.0f msg/s for %.0fs, %d-byte messages (setup %.1fs, creating the groups %.1fs)\n",
		r.Groups, r.Members, r.Groups*r.Members, r.Senders, r.Verifiers, r.Rate, r.DurationS, r.Size, r.SetupS, r.CreateS)
	fmt.Fprintf(&b, "sent %d  acked %d  copies %d of %d  complete %d  receipts %d  decrypted %d of %d  errors %d\n",
		r.Sent, r.Acked, r.Delivered, r.Expected, r.Complete, r.Receipts, r.Decrypted, r.DecryptExpected, r.Errors)
	if r.Duplicates > 0 || r.Unexpected > 0 || r.Late > 0 || r.Missing != 0 {
		fmt.Fprintf(&b, "missing %d  duplicates %d  unexpected %d  late copies (of sends that timed out, stored all the same) %d\n", r.Missing, r.Duplicates, r.Unexpected, r.Late)
	}
	fmt.Fprintf(&b, "throughput: offered %.1f msg/s, %.1f acked/s, %.0f copies delivered/s\n", r.OfferedPerS, r.AckedPerS, r.DeliveredPerS)
	fmt.Fprintf(&b, "sender: one encryption and one upload of %d bytes per message, whatever the members; encryption mean %s, p50 %s, p99 %s (%d messages)\n",
		r.CiphertextBytes, fmtDur(r.Encrypt.Mean), fmtDur(r.Encrypt.P50), fmtDur(r.Encrypt.P99), r.Encrypt.Count)
	if r.ServerCPUS > 0 {
		fmt.Fprintf(&b, "server CPU: %.2f s, %.1f µs per delivered copy, %.0f µs per message\n", r.ServerCPUS, r.ServerCPUPerCopyUs, r.ServerCPUPerMsgUs)
	}
	b.WriteString(SummaryHeader + "\n")
	b.WriteString(r.Ack.Row("send → ack") + "\n")
	b.WriteString(r.Copy.Row("send → a member") + "\n")
	b.WriteString(r.Last.Row("send → last member") + "\n")
	if s := r.Storage; s != nil && s.Skipped != "" {
		fmt.Fprintf(&b, "storage: not measured: %s\n", s.Skipped)
	} else if s != nil {
		fmt.Fprintf(&b, "storage: %d messages held for %d devices each: %d bytes, %.0f per message = payload %.0f + %.1f per recipient (%s)\n",
			s.Messages, s.Recipients, s.Bytes, s.PerMessage, s.Payload, s.PerRecipient, s.Method)
		names := make([]string, 0, len(s.Tables))
		for n := range s.Tables {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "  %-28s %+9d bytes  %8.1f per message\n", n, s.Tables[n], float64(s.Tables[n])/float64(s.Messages))
		}
		fmt.Fprintf(&b, "  held copies delivered afterwards: %d of %d\n", s.Delivered, s.Messages*s.Recipients)
	}
	writeKinds(&b, r.ErrorKinds)
	b.WriteString("latency is measured from each message's intended send time (open loop, no coordinated omission)\n")
	return b.String()
}
