package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/wire"
	"google.golang.org/protobuf/proto"
)

// e2eTestPayload is a chat payload (magic, intended time) carrying text.
func e2eTestPayload(text string, size int) []byte {
	p := make([]byte, max(size, MinSize+len(text)))
	copy(p, payloadMagic[:])
	binary.BigEndian.PutUint64(p[4:12], uint64(time.Now().UnixNano()))
	copy(p[MinSize:], text)
	return p
}

// e2eServerFilesContain reports whether any file of the server's data
// directory (the SQLite database and its WAL) contains b.
func e2eServerFilesContain(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found = found || bytes.Contains(data, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestE2EChat(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 6
	run := runID()
	// Two more users than the e2e ones, without keys: a plain message
	// between them shows that the check of the server's files below would
	// see a payload stored in the clear.
	all, err := registerAll(ctx, s.Invite, "", run, n+2, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range all[n:] {
			c.Close()
		}
	}()
	conns := all[:n]
	names := make([]string, n+2)
	for i := range names {
		names[i] = userName(run, i)
	}
	peer := pairs(n, newRand())
	start := time.Now()
	cc, err := e2eConns(ctx, conns, names[:n], peer, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("e2e setup of %d clients: %v", n, time.Since(start))
	defer func() {
		for _, c := range cc {
			c.close()
		}
	}()

	// The control: a plain payload is found in the server's files.
	plainSecret := []byte("plain control " + run)
	if _, err := all[n].Send(ctx, names[n+1], clientconn.NewMessageID(), e2eTestPayload(string(plainSecret), 0)); err != nil {
		t.Fatal(err)
	}
	if !e2eServerFilesContain(t, s.Dir, plainSecret) {
		t.Fatal("a plain payload is not in the server's files: the ciphertext check would prove nothing")
	}

	// One message looked at on the wire, before the receive loops start:
	// what the server stored and what it pushed is ciphertext, and it
	// decrypts to exactly what was sent.
	wireSecret := []byte("wire secret " + run)
	msg := e2eTestPayload(string(wireSecret), 256)
	to := peer[0]
	if err := cc[0].send(ctx, to, 1, msg); err != nil {
		t.Fatal(err)
	}
	if e2eServerFilesContain(t, s.Dir, wireSecret) {
		t.Error("the server's files contain the plaintext of an end-to-end message")
	}
	env := servertest.NextEnvelope(t, conns[to], 10*time.Second)
	if bytes.Contains(env.Payload, wireSecret) {
		t.Error("the pushed envelope contains the plaintext")
	}
	if len(env.Payload) == 0 || ratchet.MessageType(env.Payload[0]) != ratchet.WhisperMessage {
		t.Errorf("envelope %x…: want a SignalMessage (the session is established)", env.Payload[:min(len(env.Payload), 8)])
	}
	got, err := cc[to].(*e2eConn).d.decrypt(env.From, env.Payload)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("decrypted %q, %v; want %q", got, err, msg)
	}
	if err := conns[to].Ack(env.Seq); err != nil {
		t.Fatal(err)
	}

	// Then the chat: every client sends to its peer, 20 messages at once,
	// so sends can overtake each other between encryption and the server.
	var (
		mu        sync.Mutex
		received  = make([][][]byte, n)
		errs      []error
		recvWG    sync.WaitGroup
		arrivedCh = make(chan struct{}, 1000)
	)
	for i, c := range cc {
		c.(*e2eConn).reportErrors(func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			arrivedCh <- struct{}{}
		})
		recvWG.Add(1)
		go func() {
			defer recvWG.Done()
			c.receive(func(p []byte) {
				mu.Lock()
				received[i] = append(received[i], bytes.Clone(p))
				mu.Unlock()
				arrivedCh <- struct{}{}
			}, func() {})
		}()
	}
	const perClient = 20
	want := make([][][]byte, n)
	var sendWG sync.WaitGroup
	sendErrs := make(chan error, n*perClient)
	for i := range n {
		for k := range perClient {
			p := e2eTestPayload(fmt.Sprintf("secret %d→%d #%d", i, peer[i], k), 100+k*50)
			want[peer[i]] = append(want[peer[i]], p)
			sendWG.Add(1)
			go func() {
				defer sendWG.Done()
				if err := cc[i].send(ctx, peer[i], uint64(2+k), p); err != nil {
					sendErrs <- fmt.Errorf("client %d: %w", i, err)
				}
			}()
		}
	}
	sendWG.Wait()
	close(sendErrs)
	for err := range sendErrs {
		t.Fatal(err)
	}
	for range n * perClient {
		select {
		case <-arrivedCh:
		case <-ctx.Done():
			t.Fatal("not every message arrived")
		}
	}
	for _, c := range cc {
		c.close()
	}
	recvWG.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d deliveries did not decrypt: %v", len(errs), errs)
	}
	for i := range n {
		if !e2eSameMultiset(received[i], want[i]) {
			t.Errorf("client %d received %d messages, not the %d sent to it", i, len(received[i]), len(want[i]))
		}
	}
}

// e2eTwoUsers starts a server and registers two bench users, whose
// connections are closed when the test ends.
func e2eTwoUsers(t *testing.T) (context.Context, []*clientconn.Conn, []string) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	run := runID()
	conns, err := registerAll(ctx, s.Invite, "", run, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return ctx, conns, []string{userName(run, 0), userName(run, 1)}
}

func TestE2EConnsFailureClosesConns(t *testing.T) {
	ctx, conns, names := e2eTwoUsers(t)
	if _, err := e2eConns(ctx, conns, names, []int{0, 0}, 2); err == nil {
		t.Fatal("a client paired with itself was accepted")
	}
	for i, c := range conns {
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("conn %d left open after the failure", i)
		}
	}
}

// TestE2ESendStartsAndReconcilesSessions runs a bench client's send
// (e2e.Sesame through clientconn's Courier) against a real server: the first
// message starts the session from the bundle the server hands out, and when
// the sender's sessions name a device the recipient does not have and one
// with an old registration id, the server's mismatch answer makes the send
// drop both, start a new session with the real device, and deliver.
func TestE2ESendStartsAndReconcilesSessions(t *testing.T) {
	ctx, conns, names := e2eTwoUsers(t)
	tmpl, err := e2eTestTemplate()
	if err != nil {
		t.Fatal(err)
	}
	alice, err := setUpE2E(ctx, conns[0], names[0], tmpl)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := setUpE2E(ctx, conns[1], names[1], tmpl)
	if err != nil {
		t.Fatal(err)
	}
	receive := func(want []byte) {
		t.Helper()
		env := servertest.NextEnvelope(t, conns[1], 10*time.Second)
		if got, err := bob.decrypt(env.From, env.Payload); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("bob decrypted %q, %v; want %q", got, err, want)
		}
		if err := conns[1].Ack(env.Seq); err != nil {
			t.Fatal(err)
		}
	}

	first := []byte("first, with no session")
	if res, err := alice.sesame.Send(ctx, names[1], clientconn.NewMessageID(), first, false); err != nil || res.Devices != 1 {
		t.Fatalf("first send: %+v, %v", res, err)
	}
	receive(first)

	// Sessions with device 1 under a wrong registration id (stale) and
	// with a device 7 bob does not have (extra), from doctored copies of
	// his real bundle.
	bundles, err := conns[0].GetBundles(ctx, names[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	regID := bundles.GetBundles()[0].GetRegistrationId()
	doctored := proto.Clone(bundles).(*wire.GetBundlesResponse)
	stale := doctored.GetBundles()[0]
	stale.RegistrationId = regID%0x3fff + 1
	extra := proto.Clone(stale).(*wire.DeviceBundle)
	extra.Device = 7
	doctored.Bundles = append(doctored.Bundles, extra)
	if err := alice.startFromBundle(doctored); err != nil {
		t.Fatal(err)
	}
	second := []byte("second, after the device list is reconciled")
	if res, err := alice.sesame.Send(ctx, names[1], clientconn.NewMessageID(), second, false); err != nil || res.Devices != 1 {
		t.Fatalf("send over stale and extra sessions: %+v, %v", res, err)
	}
	receive(second)
	alice.mu.Lock()
	devs, err := e2e.SessionDevices(alice.kv, names[1])
	alice.mu.Unlock()
	if err != nil || len(devs) != 1 || devs[1] != regID {
		t.Fatalf("alice's sessions with bob: %v, %v; want only device 1 with registration id %d", devs, err, regID)
	}
}

// e2eSameMultiset reports whether a and b hold the same byte strings, in any
// order.
func e2eSameMultiset(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	count := map[string]int{}
	for _, x := range a {
		count[string(x)]++
	}
	for _, x := range b {
		count[string(x)]--
	}
	for _, v := range count {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestE2EOutOfOrderAndTamper(t *testing.T) {
	a, b := e2eMemPair(t)
	var cts [][]byte
	keep := a.newSesame(e2eLoopback(func(p e2e.DevicePayload) error {
		cts = append(cts, p.Payload)
		return nil
	}))
	for k := range 50 {
		if _, err := keep.Send(t.Context(), b.addr.User, [16]byte{}, []byte{byte(k)}, false); err != nil {
			t.Fatal(err)
		}
	}
	// Reversed: every message but the last arrives after a later one.
	for k := len(cts) - 1; k >= 0; k-- {
		pt, err := b.decrypt(a.addr, cts[k])
		if err != nil || !bytes.Equal(pt, []byte{byte(k)}) {
			t.Fatalf("message %d: %v, %v", k, pt, err)
		}
	}
	if _, err := b.decrypt(a.addr, cts[3]); err == nil {
		t.Fatal("a replay decrypted")
	} else if got := e2eError("decrypting a delivery", err).Error(); got != "decrypting a delivery: ratchet: duplicate message" {
		t.Errorf("replay reported as %q", got)
	}
	if _, err := keep.Send(t.Context(), b.addr.User, [16]byte{}, []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	last := cts[len(cts)-1]
	last[len(last)-1] ^= 1
	if _, err := b.decrypt(a.addr, last); err == nil {
		t.Fatal("a tampered message decrypted")
	}
}

var e2eTestTemplate = sync.OnceValues(e2eKeyTemplate)

// e2eMemDevice is an e2e device with no server: its bundle is made from its
// key upload, as the server would.
func e2eMemDevice(tb testing.TB, name string) (*e2eDevice, *wire.GetBundlesResponse) {
	tb.Helper()
	tmpl, err := e2eTestTemplate()
	if err != nil {
		tb.Fatal(err)
	}
	d, up, err := newE2EDevice(clientconn.DeviceAddr{User: name, Device: 1}, tmpl)
	if err != nil {
		tb.Fatal(err)
	}
	return d, &wire.GetBundlesResponse{Username: name, IdentityKey: up.GetIdentityKey(), Bundles: []*wire.DeviceBundle{{
		Device: 1, RegistrationId: up.GetRegistrationId(), SignedPreKey: up.GetSignedPreKey(),
		KyberPreKey: up.GetLastResortKyberPreKey(),
	}}}
}

// e2eMemPair returns two devices with an acknowledged session, as e2eConns
// leaves each pair.
func e2eMemPair(tb testing.TB) (a, b *e2eDevice) {
	tb.Helper()
	a, _ = e2eMemDevice(tb, "alice")
	b, bundle := e2eMemDevice(tb, "bob")
	if err := a.startFromBundle(bundle); err != nil {
		tb.Fatal(err)
	}
	if err := e2eHandshake(tb.Context(), a, b); err != nil {
		tb.Fatal(err)
	}
	return a, b
}

// BenchmarkE2EKeys is one bench client's key generation, without the
// network: Template is what every client would cost without the shared
// template (e2e.KeysToUpload's first batch), Device what it costs with it.
func BenchmarkE2EKeys(b *testing.B) {
	b.Run("Template", func(b *testing.B) {
		for b.Loop() {
			if _, err := e2eKeyTemplate(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Device", func(b *testing.B) {
		tmpl, err := e2eTestTemplate()
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, _, err := newE2EDevice(clientconn.DeviceAddr{User: "x", Device: 1}, tmpl); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkE2ESession is PQXDH and the in-memory handshake of one pair.
func BenchmarkE2ESession(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		x, _ := e2eMemDevice(b, "alice")
		y, bundle := e2eMemDevice(b, "bob")
		b.StartTimer()
		if err := x.startFromBundle(bundle); err != nil {
			b.Fatal(err)
		}
		if err := e2eHandshake(b.Context(), x, y); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkE2EMessage1KiB is the CPU cost of one 1 KiB message end to end:
// the sender's encrypt plus the recipient's decrypt, through the e2e
// package and the in-memory store as a bench client does them (the send is
// e2e.Sesame's, with the recipient's decrypt in place of the server). OneWay
// stays on one sending chain; PingPong alternates direction, so every
// message also makes a DH ratchet step (the most a conversation can have).
func BenchmarkE2EMessage1KiB(b *testing.B) {
	pt := make([]byte, 1024)
	rand.Read(pt)
	for _, pingPong := range []bool{false, true} {
		name := "OneWay"
		if pingPong {
			name = "PingPong"
		}
		b.Run(name, func(b *testing.B) {
			x, y := e2eMemPair(b)
			toY, toX := x.sesameTo(y, nil), y.sesameTo(x, nil)
			b.SetBytes(int64(len(pt)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				s, to := toY, y
				if pingPong && i%2 == 1 {
					s, to = toX, x
				}
				if _, err := s.Send(b.Context(), to.addr.User, [16]byte{}, pt, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
