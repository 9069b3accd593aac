package ratchet

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
)

// TestPropertyReorderLossDuplication sends 10,000 messages between Alice
// and Bob over a network that reorders (within a window), loses and
// duplicates them, and checks that:
//   - nothing ever decrypts to the wrong plaintext;
//   - a message decrypts at most once, and a copy of a message already
//     decrypted fails with ErrDuplicateMessage while its chain is kept;
//   - a message delivered for the first time while its chain is kept (or
//     its ratchet key is new) decrypts;
//   - a failed Decrypt leaves the Record unchanged (byte for byte).
func TestPropertyReorderLossDuplication(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	r := mrand.New(mrand.NewPCG(seed, 0x6d61677069650000))
	defer func() {
		if t.Failed() {
			t.Logf("seed %d (set propertySeed to replay)", seed)
		}
	}()
	if propertySeed != 0 {
		seed = propertySeed
		r = mrand.New(mrand.NewPCG(seed, 0x6d61677069650000))
	}
	const total = 10_000
	const window = 4 // a message can be overtaken by at most window-1 others

	p := newPair(t, true)
	type side struct {
		dev   *device
		rec   *Record
		seen  []curve.PublicKey // distinct ratchet keys, in the order first decrypted
		inbox []*inflight
	}
	alice := &side{dev: p.a, rec: &p.aRec, seen: []curve.PublicKey{p.b.bundle.SignedPreKey}}
	bob := &side{dev: p.b, rec: &p.bRec}
	kept := func(s *side, k curve.PublicKey) bool {
		return slices.Contains(s.seen[max(0, len(s.seen)-MaxReceiverChains):], k)
	}
	sent, decrypted, lost, dups := 0, 0, 0, 0
	for sent < total || len(alice.inbox)+len(bob.inbox) > 0 {
		from, to := alice, bob
		if r.IntN(2) == 0 {
			from, to = bob, alice
		}
		switch {
		case sent < total && r.IntN(3) == 0 && from.rec.HasCurrentSession() && (from == alice || len(bob.seen) > 0):
			// Send a burst.
			for range 1 + r.IntN(5) {
				pt := fmt.Appendf(nil, "%d:%x", sent, r.Uint64())
				typ, ct, err := from.rec.Encrypt(from.dev.identity, pt, rand.Reader)
				if err != nil {
					t.Fatalf("Encrypt: %v", err)
				}
				sm, err := parseMessageOfType(typ, ct)
				if err != nil {
					t.Fatalf("own message does not parse: %v", err)
				}
				sent++
				if r.IntN(50) == 0 {
					lost++
					continue
				}
				to.inbox = append(to.inbox, &inflight{typ: typ, ct: ct, pt: pt, key: sm.ratchetKey, done: new(bool)})
			}
		case len(to.inbox) > 0:
			i := r.IntN(min(window, len(to.inbox)))
			m := to.inbox[i]
			to.inbox = slices.Delete(to.inbox, i, i+1)
			if r.IntN(20) == 0 {
				// Duplicate: deliver again later.
				dups++
				c := *m
				to.inbox = slices.Insert(to.inbox, min(len(to.inbox), r.IntN(window)), &c)
			}
			before, _ := to.rec.MarshalBinary()
			got, _, err := to.rec.Decrypt(to.dev.identity, to.dev.regID, to.dev, m.typ, m.ct)
			isNew := !slices.Contains(to.seen, m.key)
			switch {
			case err == nil:
				if !bytes.Equal(got, m.pt) {
					t.Fatalf("decrypted %q, want %q", got, m.pt)
				}
				if *m.done {
					t.Fatalf("message %q decrypted twice", m.pt)
				}
				*m.done = true
				decrypted++
				if isNew {
					to.seen = append(to.seen, m.key)
				}
			default:
				after, _ := to.rec.MarshalBinary()
				if !bytes.Equal(before, after) {
					t.Fatalf("failed Decrypt (%v) changed the record", err)
				}
				already := *m.done
				if already && kept(to, m.key) && !errors.Is(err, ErrDuplicateMessage) {
					t.Fatalf("copy of a decrypted message: %v, want ErrDuplicateMessage", err)
				}
				if !already && (isNew || kept(to, m.key)) {
					t.Fatalf("first delivery of %q failed: %v", m.pt, err)
				}
			}
		}
	}
	if decrypted != sent-lost {
		t.Fatalf("decrypted %d of %d sent (%d lost)", decrypted, sent, lost)
	}
	t.Logf("seed %d: %d sent, %d lost, %d duplicated, %d decrypted", seed, sent, lost, dups, decrypted)
}

// propertySeed, if set, replays one run of the property test.
var propertySeed uint64

type inflight struct {
	typ  MessageType
	ct   []byte
	pt   []byte
	key  curve.PublicKey
	done *bool // shared between copies of one message
}

func parseMessageOfType(typ MessageType, ct []byte) (*signalMessage, error) {
	if typ == PreKeyMessage {
		m, err := parsePreKeySignalMessage(ct)
		if err != nil {
			return nil, err
		}
		return m.message, nil
	}
	return parseSignalMessage(ct)
}
