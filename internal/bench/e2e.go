package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/wire"
)

// End-to-end mode (--e2e). Each bench client is a real e2e device: an
// identity, prekeys uploaded to the server, a PQXDH session with its peer
// from the peer's bundle, and every message Double-Ratchet encrypted per
// device and sent with the server's per-device send. Sending is e2e.Sesame,
// the SDK's send path itself (encryption per device, sessions started from
// bundles, the device list reconciled); receiving does what the SDK's does
// (e2e.Decrypt per envelope). What differs from the SDK, and why:
//
//   - The e2e state lives in a map (e2eMemKV) instead of the sealed SQLite
//     store, so that thousands of clients set up in seconds. The e2e
//     package still loads, steps and saves the serialized session record
//     on every message, as it does in the SDK. A mutex stands in for the
//     store's transactions, without their rollback (see e2eDevice.Update).
//   - Clients start from a copy of one device's prekey state instead of
//     each making a hundred prekeys of each kind, and upload no one-time
//     prekeys (see newE2EDevice): setup would otherwise take about 20 ms of
//     CPU per client.
//   - The first message of each session and its reply are exchanged in
//     memory during setup, not through the server, so that the timed part
//     sees established sessions (SignalMessages in both directions) rather
//     than PreKeySignalMessages and two users initiating at once.
//   - Payloads are the bench's bytes, not content.Content protobufs, so that
//     the latency bookkeeping of chat.go works on the plaintext unchanged.
//   - A bench user has one device, so there are no Sesame transcripts to
//     other own devices, and KeysLow pushes are ignored.

// e2eMemKV is an in-memory e2e.KV. It does no locking: its e2eDevice's mutex
// guards it. Stored values are never modified in place (Put stores a copy,
// Get returns one), so clones can share them.
type e2eMemKV map[string]map[string][]byte

// clone returns a copy of m that shares its values.
func (m e2eMemKV) clone() e2eMemKV {
	out := make(e2eMemKV, len(m))
	for ns, kv := range m {
		c := make(map[string][]byte, len(kv))
		for k, v := range kv {
			c[k] = v
		}
		out[ns] = c
	}
	return out
}

func (m e2eMemKV) Get(ns, key string) ([]byte, error) { return bytes.Clone(m[ns][key]), nil }

func (m e2eMemKV) Put(ns, key string, v []byte) error {
	if m[ns] == nil {
		m[ns] = map[string][]byte{}
	}
	m[ns][key] = bytes.Clone(v)
	return nil
}

func (m e2eMemKV) Delete(ns, key string) error {
	delete(m[ns], key)
	return nil
}

func (m e2eMemKV) Keys(ns, prefix string) ([]string, error) {
	var out []string
	for k := range m[ns] {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out, nil
}

// e2eDevice is one bench client's end-to-end state.
type e2eDevice struct {
	c    *clientconn.Conn // nil in the in-memory benchmarks
	addr clientconn.DeviceAddr
	self *e2e.Identity

	// mu guards kv. Every session step (encrypt, decrypt, session start)
	// holds it, so a session advances one step at a time and ciphertexts
	// are numbered in the order the steps took the lock. The network is
	// never used while holding it.
	mu sync.Mutex
	kv e2eMemKV

	// sesame sends through c (nil in the in-memory benchmarks).
	sesame *e2e.Sesame
}

// Update is e2e.Transactor: it runs fn with the device's state locked.
// Unlike the SDK's store it does not roll back what a failed fn wrote.
// That is acceptable here: the state lives only as long as the run, a
// failed send is counted as an error either way, and little can be left
// behind. e2e.Encrypt saves nothing when it fails, and a bench user has
// one device, so a failed send never leaves a session stepped for a
// ciphertext that was not sent; at most a session start that fails on a
// bad bundle keeps the identity key it had already recorded.
func (d *e2eDevice) Update(_ context.Context, fn func(e2e.KV) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fn(d.kv)
}

// newSesame returns a sender of d's messages through server.
func (d *e2eDevice) newSesame(server e2e.Courier) *e2e.Sesame {
	return &e2e.Sesame{User: d.addr.User, Self: d.self, DB: d, Server: server, Random: rand.Reader}
}

// e2eKeyTemplate returns the e2e state of a device after its first key
// upload: an identity and e2e.PreKeyBatch one-time prekeys of each kind.
// Making that state takes e2e.KeysToUpload about 20 ms of CPU (a hundred
// Kyber keys, a hundred X25519 keys, a hundred signatures), too long to do
// for each of thousands of bench clients, so they start from copies of one.
func e2eKeyTemplate() (e2eMemKV, error) {
	kv := e2eMemKV{}
	self, err := e2e.CreateIdentity(kv, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if _, err := e2e.KeysToUpload(kv, self, 0, 0, time.Now(), rand.Reader); err != nil {
		return nil, fmt.Errorf("prekeys: %w", err)
	}
	return kv, nil
}

// newE2EDevice makes device addr from a copy of tmpl (e2eKeyTemplate) and
// returns it with the keys to upload. Everything another client uses is
// the device's own: a new identity (and registration id), and a new signed
// prekey and last-resort Kyber prekey signed by it, which a rotation makes.
// The one-time prekeys copied from tmpl are shared by every device, so none
// is uploaded: sessions start from the signed and last-resort prekeys, as
// with a user whose one-time prekeys ran out.
func newE2EDevice(addr clientconn.DeviceAddr, tmpl e2eMemKV) (*e2eDevice, *wire.SetKeysRequest, error) {
	d := &e2eDevice{addr: addr, kv: tmpl.clone()}
	ik, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: identity: %w", addr.User, err)
	}
	if d.self, err = e2e.ImportIdentity(d.kv, ik, rand.Reader); err != nil {
		return nil, nil, fmt.Errorf("%s: identity: %w", addr.User, err)
	}
	// Full one-time prekey counts, so only the rotation is due.
	up, err := e2e.KeysToUpload(d.kv, d.self, e2e.PreKeyBatch, e2e.PreKeyBatch, time.Now().Add(e2e.RotateEvery), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: prekeys: %w", addr.User, err)
	}
	if up.GetSignedPreKey() == nil || up.GetLastResortKyberPreKey() == nil {
		return nil, nil, fmt.Errorf("%s: prekeys: no new signed prekeys to upload", addr.User)
	}
	up.PreKeys, up.KyberPreKeys = nil, nil
	return d, up, nil
}

// setUpE2E makes the e2e device of the client on c, registered as name,
// and uploads its keys.
func setUpE2E(ctx context.Context, c *clientconn.Conn, name string, tmpl e2eMemKV) (*e2eDevice, error) {
	addr, ok := c.Device()
	if !ok || addr.User != name {
		return nil, fmt.Errorf("%s: the connection is not registered as that user", name)
	}
	d, up, err := newE2EDevice(addr, tmpl)
	if err != nil {
		return nil, err
	}
	d.c, d.sesame = c, d.newSesame(c.Courier())
	if _, err := c.SetKeys(ctx, up); err != nil {
		return nil, fmt.Errorf("%s: uploading keys: %w", name, err)
	}
	return d, nil
}

// startFromBundle runs PQXDH with each bundle of resp.
func (d *e2eDevice) startFromBundle(resp *wire.GetBundlesResponse) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := e2e.StartSessions(d.kv, d.self, resp, rand.Reader); err != nil {
		return fmt.Errorf("starting sessions with %s: %w", resp.GetUsername(), err)
	}
	return nil
}

// decrypt opens an envelope payload from one device, as
// client.receiveSecure does.
func (d *e2eDevice) decrypt(from clientconn.DeviceAddr, payload []byte) ([]byte, error) {
	if !e2e.IsEnvelope(payload) {
		return nil, e2e.ErrUnknownEnvelope
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	m, err := e2e.Decrypt(d.kv, d.self, from.User, from.Device, payload)
	if err != nil {
		return nil, err
	}
	return m.Plaintext, nil
}

// e2eCauses are what an encryption or decryption failure is reported as,
// so that the report's error kinds (at most 20) do not multiply by user
// name.
var e2eCauses = []error{
	ratchet.ErrDuplicateMessage, ratchet.ErrInvalidMAC, ratchet.ErrTooFarInFuture,
	ratchet.ErrNoSession, ratchet.ErrUnknownPreKey, ratchet.ErrInvalidMessage,
	e2e.ErrUnknownEnvelope, e2e.ErrIdentityChanged,
}

// e2eCause returns the one of e2eCauses that err is, or nil.
func e2eCause(err error) error {
	for _, e := range e2eCauses {
		if errors.Is(err, e) {
			return e
		}
	}
	return nil
}

func e2eError(op string, err error) error {
	if c := e2eCause(err); c != nil {
		err = c
	}
	return fmt.Errorf("%s: %w", op, err)
}

// e2eLoopback is an e2e.Courier with no server: Deliver hands each payload
// to the function, which stands in for the recipient's device. It has no
// bundles: sends through it go over sessions started beforehand.
type e2eLoopback func(e2e.DevicePayload) error

func (e2eLoopback) Bundles(context.Context, string, []uint32) (*wire.GetBundlesResponse, error) {
	return nil, errors.New("no server to fetch bundles from")
}

func (f e2eLoopback) Deliver(_ context.Context, _ string, _ [16]byte, _ bool, payloads []e2e.DevicePayload) (e2e.Delivery, error) {
	for _, p := range payloads {
		if err := f(p); err != nil {
			return e2e.Delivery{}, err
		}
	}
	return e2e.Delivery{Devices: len(payloads)}, nil
}

// sesameTo returns a sender of d's messages that hands them straight to
// device to, in memory, which decrypts them and passes each plaintext to
// check (if set).
func (d *e2eDevice) sesameTo(to *e2eDevice, check func([]byte) error) *e2e.Sesame {
	return d.newSesame(e2eLoopback(func(p e2e.DevicePayload) error {
		if p.Device != to.addr.Device {
			return nil // another device of to's user (a bench user has none)
		}
		pt, err := to.decrypt(d.addr, p.Payload)
		if err == nil && check != nil {
			err = check(pt)
		}
		return err
	}))
}

// e2eHandshake makes the session of a with b acknowledged on both sides: a,
// which started it, sends a first message (a PreKeySignalMessage) that b
// decrypts, creating its side, and b's reply tells a the session is
// established. The two messages are sent as any other (e2e.Sesame) but go
// in memory, not through the server.
func e2eHandshake(ctx context.Context, a, b *e2eDevice) error {
	hello := []byte("magpie bench session setup")
	step := func(from, to *e2eDevice) error {
		s := from.sesameTo(to, func(pt []byte) error {
			if !bytes.Equal(pt, hello) {
				return errors.New("the setup message decrypted to something else")
			}
			return nil
		})
		if _, err := s.Send(ctx, to.addr.User, [16]byte{}, hello, false); err != nil {
			return fmt.Errorf("%s → %s: %w", from.addr.User, to.addr.User, err)
		}
		return nil
	}
	if err := step(a, b); err != nil {
		return err
	}
	return step(b, a)
}

// e2eConns sets up end-to-end sessions for the chat scenario: every client
// of conns (registered as names) uploads its keys, then client i starts a
// session with peer[i] (one session per pair of clients: a pair that write
// to each other share it) and the session is acknowledged in both
// directions, so the timed part measures the steady-state Double Ratchet.
// conc bounds the clients being set up at once. On error it closes conns.
func e2eConns(ctx context.Context, conns []*clientconn.Conn, names []string, peer []int, conc int) ([]chatConn, error) {
	fail := func(err error) ([]chatConn, error) {
		for _, c := range conns {
			c.Close()
		}
		return nil, fmt.Errorf("bench e2e: %w", err)
	}
	if len(names) != len(conns) || len(peer) != len(conns) {
		return fail(fmt.Errorf("%d conns, %d names, %d peers", len(conns), len(names), len(peer)))
	}
	tmpl, err := e2eKeyTemplate()
	if err != nil {
		return fail(err)
	}
	devs := make([]*e2eDevice, len(conns))
	if err := e2eForEach(ctx, len(conns), conc, func(i int) error {
		var err error
		devs[i], err = setUpE2E(ctx, conns[i], names[i], tmpl)
		return err
	}); err != nil {
		return fail(err)
	}
	// Every key is up: now the sessions. Of two clients that write to each
	// other, the lower-numbered one starts theirs.
	if err := e2eForEach(ctx, len(conns), conc, func(i int) error {
		j := peer[i]
		if j == i || j < 0 || j >= len(conns) {
			return fmt.Errorf("client %d paired with %d", i, j)
		}
		if peer[j] == i && j < i {
			return nil
		}
		resp, err := conns[i].GetBundles(ctx, names[j], nil)
		if err != nil {
			return fmt.Errorf("%s: fetching %s's bundles: %w", names[i], names[j], err)
		}
		if err := devs[i].startFromBundle(resp); err != nil {
			return fmt.Errorf("%s: %w", names[i], err)
		}
		return e2eHandshake(ctx, devs[i], devs[j])
	}); err != nil {
		return fail(err)
	}
	out := make([]chatConn, len(devs))
	for i, d := range devs {
		out[i] = &e2eConn{d: d, names: names}
	}
	return out, nil
}

// e2eForEach runs f(0) … f(n-1), at most conc at once, and returns the first
// error; after one, the calls not yet started are skipped.
func e2eForEach(ctx context.Context, n, conc int, f func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, max(1, conc))
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// e2eConn is a chat client that encrypts end to end.
type e2eConn struct {
	d     *e2eDevice
	names []string
	once  sync.Once
	// onErr, if set, counts a delivery that did not decrypt; otherwise it
	// goes to onMsg as an empty payload, which chat.go counts as an error
	// too. It is set before receive starts.
	onErr func(error)
}

// reportErrors sets where receive reports deliveries that do not decrypt.
// runChat calls it, if the conn has it, before starting receive.
func (e *e2eConn) reportErrors(f func(error)) { e.onErr = f }

func (e *e2eConn) send(ctx context.Context, to int, id uint64, payload []byte) error {
	var mid clientconn.MessageID
	binary.BigEndian.PutUint64(mid[8:], id)
	copy(mid[:8], payload[4:12]) // the intended time: unique across runs
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := e.d.sesame.Send(ctx, e.names[to], mid, payload, false)
	if c := e2eCause(err); c != nil {
		return fmt.Errorf("encrypting a message: %w", c)
	}
	return err
}

// receive decrypts each envelope before handing it on and, like the SDK,
// acknowledges it whether or not it decrypted (an unreadable envelope will
// not become readable by being pushed again). Unlike the SDK, which drops a
// duplicate quietly (its ack was lost in a crash), a duplicate counts as an
// error: a bench connection loses no acks, so it means a message key was
// discarded, e.g. by reordering beyond the ratchet's limits. Acks are
// batched (ackInBatches).
func (e *e2eConn) receive(onMsg func([]byte), onReceipt func()) {
	ackInBatches(e.d.c, func(p clientconn.Push) {
		switch {
		case p.Envelope != nil:
			pt, err := e.d.decrypt(p.Envelope.From, p.Envelope.Payload)
			switch {
			case err == nil:
				onMsg(pt)
			case e.onErr != nil:
				e.onErr(e2eError("decrypting a delivery", err))
			default:
				onMsg(nil)
			}
		case p.Receipt != nil:
			onReceipt()
		}
	})
}

func (e *e2eConn) close() { e.once.Do(func() { e.d.c.Close() }) }
