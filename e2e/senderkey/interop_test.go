package senderkey

// Interop with Signal's own library: Sender Keys between Magpie (this
// package) and libsignal-client 0.90.0, driven through
// internal/libsignaloracle. Each group message goes to twin receivers, one
// Magpie Record and one libsignal party, which must agree on every
// outcome, and whose records must be the same bytes after every step:
// that proves the same state, skipped keys and chain order, not only the
// same plaintexts. The tests skip when the oracle's node_modules is
// missing, and fail instead when MAGPIE_REQUIRE_ORACLE=1 (as in CI):
//
//	npm ci --prefix interop/libsignal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/internal/libsignaloracle"
)

// senderAddr is the group sender's address, as libsignal receivers know it.
var senderAddr = libsignaloracle.Address{Name: "sender", DeviceID: 3}

// groupSender is a sending device: Magpie's or libsignal's.
type groupSender interface {
	String() string
	distribution(t *testing.T, id DistributionID) []byte
	send(t *testing.T, id DistributionID, text string) []byte
}

type magpieSender struct{ recs map[DistributionID]*Record }

func newMagpieSender() *magpieSender { return &magpieSender{recs: map[DistributionID]*Record{}} }

func (m *magpieSender) String() string { return "Magpie" }

func (m *magpieSender) rec(id DistributionID) *Record {
	if m.recs[id] == nil {
		m.recs[id] = new(Record)
	}
	return m.recs[id]
}

func (m *magpieSender) distribution(t *testing.T, id DistributionID) []byte {
	t.Helper()
	d, err := m.rec(id).DistributionMessage(id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return d.Marshal()
}

func (m *magpieSender) send(t *testing.T, id DistributionID, text string) []byte {
	t.Helper()
	b, err := m.rec(id).Encrypt(id, []byte(text), rand.Reader)
	if err != nil {
		t.Fatalf("Magpie encrypting %q: %v", text, err)
	}
	return b
}

type oracleSender struct {
	o    *libsignaloracle.Oracle
	name string
}

func (s *oracleSender) String() string { return "libsignal" }

func (s *oracleSender) distribution(t *testing.T, id DistributionID) []byte {
	t.Helper()
	return s.o.CreateSenderKeyDistribution(s.name, id.String())
}

func (s *oracleSender) send(t *testing.T, id DistributionID, text string) []byte {
	t.Helper()
	b, err := s.o.GroupEncrypt(s.name, id.String(), []byte(text))
	if err != nil {
		t.Fatalf("libsignal encrypting %q: %v", text, err)
	}
	return b
}

// twins are two receiving devices, Magpie's and libsignal's, given the same
// messages from the sender at senderAddr.
type twins struct {
	o    *libsignaloracle.Oracle
	lib  string                     // the libsignal party
	recs map[DistributionID]*Record // Magpie's records, by distribution id
}

func newTwins(o *libsignaloracle.Oracle) *twins {
	o.NewParty("receiver", 1, 4321)
	return &twins{o: o, lib: "receiver", recs: map[DistributionID]*Record{}}
}

// process gives both a distribution message.
func (tw *twins) process(t *testing.T, skdm []byte) DistributionMessage {
	t.Helper()
	d, err := ParseDistributionMessage(skdm)
	if err != nil {
		t.Fatalf("Magpie cannot parse the distribution message: %v", err)
	}
	if tw.recs[d.DistributionID] == nil {
		tw.recs[d.DistributionID] = new(Record)
	}
	tw.recs[d.DistributionID].Process(d)
	if err := tw.o.ProcessSenderKeyDistribution(tw.lib, senderAddr, skdm); err != nil {
		t.Fatalf("libsignal refuses the distribution message: %v", err)
	}
	tw.same(t, d.DistributionID)
	return d
}

// magpieDecrypt is what a Magpie device does with a group message: find
// the record by the message's distribution id, and decrypt.
func (tw *twins) magpieDecrypt(t *testing.T, body []byte) ([]byte, error) {
	t.Helper()
	m, err := ParseMessage(body)
	if err != nil {
		return nil, err
	}
	r := tw.recs[m.DistributionID]
	if r == nil {
		return nil, fmt.Errorf("%w: no record for distribution %s", ErrNoSenderKey, m.DistributionID)
	}
	pt, err := r.Decrypt(m)
	if err == nil {
		// Resume from storage, as a device does.
		var fresh Record
		if err := fresh.UnmarshalBinary(marshal(t, r)); err != nil {
			t.Fatal(err)
		}
		*r = fresh
	}
	return pt, err
}

// deliver gives both a message that they must decrypt to want.
func (tw *twins) deliver(t *testing.T, body []byte, want string) {
	t.Helper()
	pt, err := tw.magpieDecrypt(t, body)
	if err != nil || string(pt) != want {
		t.Fatalf("Magpie decrypting %q: %q, %v", want, pt, err)
	}
	pt, err = tw.o.GroupDecrypt(tw.lib, senderAddr, body)
	if err != nil || string(pt) != want {
		t.Fatalf("libsignal decrypting %q: %q, %v", want, pt, err)
	}
	tw.sameFor(t, body)
}

// refuse gives both a message they must refuse: Magpie with magpieErr,
// libsignal with an error whose kind or message contains libErr. Neither
// record may change.
func (tw *twins) refuse(t *testing.T, body []byte, magpieErr error, libErr string) {
	t.Helper()
	m, _ := ParseMessage(body)
	var before []byte
	if m != nil && tw.recs[m.DistributionID] != nil {
		before = marshal(t, tw.recs[m.DistributionID])
	}
	if pt, err := tw.magpieDecrypt(t, body); !errors.Is(err, magpieErr) {
		t.Fatalf("Magpie given a bad message: %q, %v; want %v", pt, err, magpieErr)
	}
	pt, err := tw.o.GroupDecrypt(tw.lib, senderAddr, body)
	var le *libsignaloracle.Error
	if !errors.As(err, &le) || !strings.Contains(le.Kind+": "+le.Message, libErr) {
		t.Fatalf("libsignal given a bad message: %q, %v; want an error saying %q", pt, err, libErr)
	}
	if before != nil {
		if !bytes.Equal(before, marshal(t, tw.recs[m.DistributionID])) {
			t.Fatal("Magpie's record changed on a refused message")
		}
		tw.same(t, m.DistributionID)
	}
}

func (tw *twins) sameFor(t *testing.T, body []byte) {
	t.Helper()
	m, err := ParseMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	tw.same(t, m.DistributionID)
}

// same checks that both receivers' records for id are the same bytes.
func (tw *twins) same(t *testing.T, id DistributionID) {
	t.Helper()
	ours := marshal(t, tw.recs[id])
	theirs := tw.o.SenderKeyRecord(tw.lib, senderAddr, id.String())
	if !bytes.Equal(ours, theirs) {
		t.Fatalf("records for %s differ:\n Magpie    %d bytes %x…\n libsignal %d bytes %x…",
			id, len(ours), ours[:min(len(ours), 48)], len(theirs), theirs[:min(len(theirs), 48)])
	}
}

func newID(t *testing.T) DistributionID {
	t.Helper()
	id, err := NewDistributionID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// checkDistribution parses a distribution message with both libraries.
func checkDistribution(t *testing.T, o *libsignaloracle.Oracle, skdm []byte, id DistributionID) DistributionMessage {
	t.Helper()
	d, err := ParseDistributionMessage(skdm)
	if err != nil {
		t.Fatal(err)
	}
	info, err := o.InspectSenderKeyDistribution(skdm)
	if err != nil {
		t.Fatalf("libsignal cannot parse the distribution message: %v", err)
	}
	if d.DistributionID != id || info.DistributionID != id.String() || info.ChainID != d.ChainID ||
		info.Iteration != d.Iteration || !bytes.Equal(info.ChainKey, d.ChainKey[:]) || d.ChainID >= 1<<31 {
		t.Fatalf("the libraries read the distribution message differently: libsignal %s chain %d iteration %d, Magpie %s chain %d iteration %d",
			info.DistributionID, info.ChainID, info.Iteration, d.DistributionID, d.ChainID, d.Iteration)
	}
	if !bytes.Equal(d.Marshal(), skdm) {
		t.Fatal("Magpie re-encodes the distribution message differently")
	}
	return d
}

// checkMessage parses a group message with both libraries, and has
// libsignal verify its signature.
func checkMessage(t *testing.T, o *libsignaloracle.Oracle, body []byte, d DistributionMessage, iteration uint32) {
	t.Helper()
	m, err := ParseMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	info, err := o.InspectSenderKeyMessage(body, d.SigningKey.Serialize())
	if err != nil {
		t.Fatalf("libsignal cannot parse the message: %v", err)
	}
	if m.DistributionID != d.DistributionID || m.ChainID != d.ChainID || m.Iteration != iteration ||
		info.DistributionID != d.DistributionID.String() || info.ChainID != d.ChainID || info.Iteration != iteration ||
		!bytes.Equal(info.Ciphertext, m.Ciphertext) || info.SignatureValid == nil || !*info.SignatureValid || !m.VerifySignature(d.SigningKey) {
		t.Fatalf("the libraries read the message differently: %+v, Magpie chain %d iteration %d", info, m.ChainID, m.Iteration)
	}
	if body[0] != 0x33 {
		t.Fatalf("version byte %#x, want 0x33", body[0])
	}
}

// groupConverse runs a group conversation from sender to twin receivers:
// a distribution message, many messages delivered out of order, a
// duplicate and tampered messages refused, the same chain distributed
// again, a long gap, a rotation to a new distribution id with a message of
// the old one arriving after it, and a message for a distribution the
// receivers never got.
func groupConverse(t *testing.T, o *libsignaloracle.Oracle, sender groupSender, rx *twins) {
	t.Helper()
	id1 := newID(t)
	d1 := checkDistribution(t, o, sender.distribution(t, id1), id1)
	if d1.Iteration != 0 {
		t.Fatalf("a new chain starts at iteration %d", d1.Iteration)
	}
	rx.process(t, d1.Marshal())

	var m [][]byte
	for i := range 12 {
		m = append(m, sender.send(t, id1, fmt.Sprint("m", i)))
	}
	checkMessage(t, o, m[0], d1, 0)
	checkMessage(t, o, m[11], d1, 11)
	for _, i := range []int{0, 3, 2, 11, 5, 1, 10, 4, 6, 9, 8} { // 7 is held back
		rx.deliver(t, m[i], fmt.Sprint("m", i))
	}
	rx.refuse(t, m[3], ErrDuplicateMessage, "DuplicatedMessage")
	rx.refuse(t, m[11], ErrDuplicateMessage, "DuplicatedMessage")

	// A flipped bit in the signature, in the ciphertext or in the
	// iteration is refused as a bad signature (it covers them all).
	fresh := sender.send(t, id1, "fresh")
	iterationAt := 1 + 18 + 1 + protowire.SizeVarint(uint64(d1.ChainID)) + 1 // 0x33, id, chain id, tag
	if fresh[iterationAt-1] != 0x18 || fresh[iterationAt] != 12 {
		t.Fatalf("iteration 12 is not at byte %d: %x", iterationAt, fresh[:iterationAt+1])
	}
	for _, off := range []int{len(fresh) - 1, len(fresh) - SignatureSize - 1, iterationAt} {
		bad := bytes.Clone(fresh)
		bad[off] ^= 0x01
		rx.refuse(t, bad, ErrInvalidSignature, "signature")
	}
	rx.deliver(t, fresh, "fresh")

	// The same chain distributed again (to a member added later, say)
	// stands at iteration 13; processing it changes nothing, so the
	// held-back message still decrypts.
	again := checkDistribution(t, o, sender.distribution(t, id1), id1)
	if again.ChainID != d1.ChainID || again.SigningKey != d1.SigningKey || again.Iteration != 13 {
		t.Fatalf("the chain distributed again: chain %d iteration %d", again.ChainID, again.Iteration)
	}
	rx.process(t, again.Marshal())
	rx.deliver(t, m[7], "m7")

	// A gap of 39 messages, three of which arrive late.
	var gap [][]byte
	for i := range 40 {
		gap = append(gap, sender.send(t, id1, fmt.Sprint("gap", i)))
	}
	for _, i := range []int{39, 0, 20, 38} {
		rx.deliver(t, gap[i], fmt.Sprint("gap", i))
	}

	// Rotation: a new distribution id and chain. A message of the old
	// chain, sent before, arrives after.
	late := sender.send(t, id1, "late")
	id2 := newID(t)
	d2 := checkDistribution(t, o, sender.distribution(t, id2), id2)
	if d2.ChainID == d1.ChainID && d2.SigningKey == d1.SigningKey {
		t.Fatal("a new distribution id reuses the old chain")
	}
	rx.process(t, d2.Marshal())
	var m2 [][]byte
	for i := range 3 {
		m2 = append(m2, sender.send(t, id2, fmt.Sprint("rotated", i)))
	}
	checkMessage(t, o, m2[2], d2, 2)
	for i := 2; i >= 0; i-- {
		rx.deliver(t, m2[i], fmt.Sprint("rotated", i))
	}
	rx.deliver(t, late, "late")

	// A distribution the receivers never got.
	id3 := newID(t)
	sender.distribution(t, id3)
	rx.refuse(t, sender.send(t, id3, "unknown"), ErrNoSenderKey, "missing sender key state")
}

func TestInteropMagpieSends(t *testing.T) {
	o := libsignaloracle.Start(t)
	groupConverse(t, o, newMagpieSender(), newTwins(o))
}

func TestInteropLibsignalSends(t *testing.T) {
	o := libsignaloracle.Start(t)
	o.NewParty(senderAddr.Name, senderAddr.DeviceID, 1234)
	groupConverse(t, o, &oracleSender{o: o, name: senderAddr.Name}, newTwins(o))
}

// The limits, against libsignal: skipped keys capped at MaxMessageKeys
// over several jumps (the records are the same bytes, so the same keys were
// dropped), and a jump of exactly MaxForwardJumps accepted, one more
// refused.
func TestInteropLimits(t *testing.T) {
	o := libsignaloracle.Start(t)
	rx := newTwins(o)
	s := newSender(t)
	rx.process(t, s.distribution(t).Marshal())
	var held [][]byte
	for i := range 3 {
		held = append(held, s.send(t, fmt.Sprint("held", i)))
		s.skip(t, 898)
		rx.deliver(t, s.send(t, "jump"), "jump")
	}
	if n := len(rx.recs[s.id].states[0].skipped); n != MaxMessageKeys {
		t.Fatalf("%d skipped keys kept, want %d", n, MaxMessageKeys)
	}
	rx.refuse(t, held[0], ErrDuplicateMessage, "DuplicatedMessage")
	rx.deliver(t, held[1], "held1")

	at := s.rec.states[0].chain.Iteration
	s.skip(t, MaxForwardJumps)
	rx.deliver(t, s.send(t, "exactly 25000 ahead"), "exactly 25000 ahead")
	if got := rx.recs[s.id].states[0].chain.Iteration; got != at+MaxForwardJumps+1 {
		t.Fatalf("chain at %d", got)
	}
	s.skip(t, MaxForwardJumps+1)
	rx.refuse(t, s.send(t, "25001 ahead"), ErrTooFarInFuture, "too far into the future")
}

// The chains of one (sender, distribution id): the sixth drops the one least
// recently added (re-adding counts), a new signing key under a known chain
// id replaces that chain, and a message of a dropped chain is refused by
// both.
func TestInteropStateEviction(t *testing.T) {
	o := libsignaloracle.Start(t)
	rx := newTwins(o)
	id := newID(t)
	var senders []*sender
	for i := range MaxStates + 2 {
		senders = append(senders, newSenderOn(t, id, uint32(100+i)))
	}
	add := func(s *sender) { rx.process(t, s.distribution(t).Marshal()) }
	for _, s := range senders[:MaxStates] {
		add(s)
	}
	rx.deliver(t, senders[0].send(t, "chain 100"), "chain 100")
	old101 := senders[1].send(t, "chain 101")
	add(senders[0])         // 100 becomes the newest again
	add(senders[MaxStates]) // 105 drops 101
	if n := len(rx.recs[id].states); n != MaxStates {
		t.Fatalf("%d chains", n)
	}
	rx.refuse(t, old101, ErrNoSenderKey, "missing sender key state")
	// Chain 102 under a new signing key.
	imp := newSenderOn(t, id, 102)
	old102 := senders[2].send(t, "chain 102")
	add(imp)
	rx.refuse(t, old102, ErrInvalidSignature, "signature")
	rx.deliver(t, imp.send(t, "new 102"), "new 102")
	for _, s := range []*sender{senders[0], senders[3], senders[4], senders[5]} {
		rx.deliver(t, s.send(t, "still here"), "still here")
	}
}

// A record moves between the libraries: libsignal's own chain continues in
// Magpie, and Magpie's in libsignal; the receivers see one chain.
func TestInteropRecordExchange(t *testing.T) {
	o := libsignaloracle.Start(t)
	o.NewParty(senderAddr.Name, senderAddr.DeviceID, 1234)
	rx := newTwins(o)
	lib := &oracleSender{o: o, name: senderAddr.Name}
	id := newID(t)
	rx.process(t, lib.distribution(t, id))
	rx.deliver(t, lib.send(t, id, "from libsignal"), "from libsignal")

	// libsignal's record, with its private key, continues in Magpie.
	theirs := o.SenderKeyRecord(lib.name, senderAddr, id.String())
	var ours Record
	if err := ours.UnmarshalBinary(theirs); err != nil {
		t.Fatalf("Magpie cannot read libsignal's own record: %v", err)
	}
	if !bytes.Equal(marshal(t, &ours), theirs) {
		t.Fatal("Magpie re-encodes libsignal's own record differently")
	}
	if !ours.states[0].CanSend() {
		t.Fatal("libsignal's own record has no private key for Magpie")
	}
	for i := range 3 {
		b, err := ours.Encrypt(id, []byte(fmt.Sprint("from Magpie ", i)), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		rx.deliver(t, b, fmt.Sprint("from Magpie ", i))
	}
	// And back.
	if err := o.SetSenderKeyRecord(lib.name, senderAddr, id.String(), marshal(t, &ours)); err != nil {
		t.Fatalf("libsignal cannot read Magpie's own record: %v", err)
	}
	rx.deliver(t, lib.send(t, id, "libsignal again"), "libsignal again")

	// A chain Magpie made, given to libsignal.
	s := newSender(t)
	rx.process(t, s.distribution(t).Marshal())
	rx.deliver(t, s.send(t, "made by Magpie"), "made by Magpie")
	if err := o.SetSenderKeyRecord(lib.name, senderAddr, s.id.String(), marshal(t, &s.rec)); err != nil {
		t.Fatal(err)
	}
	rx.deliver(t, lib.send(t, s.id, "sent by libsignal"), "sent by libsignal")
}

// The encodings are libsignal's byte for byte, at the edges of each field,
// and each side verifies the other's signatures.
func TestInteropEncodings(t *testing.T) {
	o := libsignaloracle.Start(t)
	kp, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	for _, n := range []uint32{0, 1, 127, 128, 1<<31 - 1, 1<<32 - 1} {
		d := DistributionMessage{DistributionID: id, ChainID: n, Iteration: ^n, SigningKey: kp.Public}
		if _, err := rand.Read(d.ChainKey[:]); err != nil {
			t.Fatal(err)
		}
		theirs := o.NewSenderKeyDistribution(id.String(), d.ChainID, d.Iteration, d.ChainKey[:], kp.Public.Serialize())
		if !bytes.Equal(d.Marshal(), theirs) {
			t.Fatalf("distribution message, chain id %d:\n Magpie    %x\n libsignal %x", n, d.Marshal(), theirs)
		}
		for _, ct := range [][]byte{nil, make([]byte, 16), make([]byte, 200)} {
			ours := signMessage(id, n, ^n, ct, kp.Private, [64]byte{})
			theirs := o.NewSenderKeyMessage(id.String(), n, ^n, ct, kp.Private[:])
			body := len(ours) - SignatureSize
			if len(theirs) != len(ours) || !bytes.Equal(ours[:body], theirs[:body]) {
				t.Fatalf("message, chain id %d, %d-byte ciphertext:\n Magpie    %x\n libsignal %x", n, len(ct), ours[:body], theirs)
			}
			m, err := ParseMessage(theirs)
			if err != nil || !m.VerifySignature(kp.Public) {
				t.Fatalf("Magpie does not verify libsignal's signature: %v", err)
			}
			info, err := o.InspectSenderKeyMessage(ours, kp.Public.Serialize())
			if err != nil || !*info.SignatureValid {
				t.Fatalf("libsignal does not verify Magpie's signature: %v", err)
			}
		}
	}
	// Why NewDistributionID sets the RFC 4122 bits: libsignal's Node
	// binding cannot name a record by any other id.
	o.NewParty("strict", 1, 1)
	d := DistributionMessage{DistributionID: DistributionID{0x11, 6: 0x11, 8: 0x11}, SigningKey: kp.Public}
	if err := o.ProcessSenderKeyDistribution("strict", senderAddr, d.Marshal()); err == nil {
		t.Fatal("libsignal's Node binding accepted a distribution id that is not an RFC 4122 UUID")
	}
	d.DistributionID[6], d.DistributionID[8] = 0x41, 0x91
	if err := o.ProcessSenderKeyDistribution("strict", senderAddr, d.Marshal()); err != nil {
		t.Fatalf("the same with the version and variant bits set: %v", err)
	}
}

// TestVectorsAgainstLibsignal checks testdata/vectors.json against
// libsignal: libsignal takes the vectors' chain (from a distribution
// message it encodes itself), decrypts each vector's ciphertext from a
// message it signs itself, and after the first, a jump to iteration 6,
// holds exactly the vectors' seeds of iterations 0-5 and chain key 7.
func TestVectorsAgainstLibsignal(t *testing.T) {
	o := libsignaloracle.Start(t)
	v := loadVectors(t)
	o.NewParty("vectors", 1, 1)
	id := newID(t)
	const chainID = 4242
	pub := append([]byte{curve.TypeDJB}, v.SigningPublic...)
	skdm := o.NewSenderKeyDistribution(id.String(), chainID, 0, v.ChainKey0, pub)
	if err := o.ProcessSenderKeyDistribution("vectors", senderAddr, skdm); err != nil {
		t.Fatal(err)
	}
	byIteration := map[uint32]int{}
	for i, vec := range v.Vectors {
		byIteration[vec.Iteration] = i
	}
	order := []uint32{6, 0, 1, 2, 3, 4, 5, 7, 1000}
	for step, it := range order {
		vec := v.Vectors[byIteration[it]]
		body := o.NewSenderKeyMessage(id.String(), chainID, it, vec.Ciphertext, v.SigningPrivate)
		pt, err := o.GroupDecrypt("vectors", senderAddr, body)
		if err != nil || !bytes.Equal(pt, vec.Plaintext) {
			t.Fatalf("libsignal decrypting vector %d: %q, %v", it, pt, err)
		}
		if step > 0 {
			continue
		}
		var r Record
		if err := r.UnmarshalBinary(o.SenderKeyRecord("vectors", senderAddr, id.String())); err != nil {
			t.Fatal(err)
		}
		st := r.states[0]
		next := v.Vectors[byIteration[7]]
		if st.chain.Iteration != 7 || !bytes.Equal(st.chain.Key[:], next.ChainKey) || len(st.skipped) != 6 {
			t.Fatalf("libsignal's chain after the jump: iteration %d, %d skipped", st.chain.Iteration, len(st.skipped))
		}
		for i, k := range st.skipped {
			if want := v.Vectors[byIteration[uint32(i)]]; k.iteration != uint32(i) || !bytes.Equal(k.seed[:], want.Seed) {
				t.Fatalf("libsignal's skipped key %d: iteration %d, seed %x; want %x", i, k.iteration, k.seed, want.Seed)
			}
		}
	}
}
