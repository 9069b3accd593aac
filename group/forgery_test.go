package group

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
)

// parts splits a signed change into its change bytes and signatures.
func parts(t testing.TB, b []byte) (change, sig, linkSig []byte) {
	t.Helper()
	d, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.linkSig != nil {
		linkSig = d.linkSig[:]
	}
	return d.bytes, d.sig[:], linkSig
}

func sigOver(key curve.PrivateKey, msg []byte) []byte {
	s, err := xsign(key, msg, rand.Reader)
	if err != nil {
		panic(err)
	}
	return s
}

// Changes signed by anyone but the member they name are refused: the
// server, which holds no member's key, cannot change the group.
func TestForgeriesAreRefused(t *testing.T) {
	mallory := keyFor("mallory")
	t.Run("a stranger's own change", func(t *testing.T) {
		w, _ := admins(t)
		w.refuseBytes(w.signed("mallory", mallory, Add{User: "eve", Key: mallory.Public}), ErrNotMember)
	})
	t.Run("the server injects a change in the owner's name with a key it made up", func(t *testing.T) {
		w, _ := admins(t)
		made, err := curve.GenerateKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		w.refuseBytes(w.signed("alice", made, Add{User: "spy", Key: made.Public}), ErrBadSignature)
		w.refuseBytes(w.signed("carol", made, Leave{}), ErrBadSignature)
	})
	t.Run("the right key over other bytes", func(t *testing.T) {
		w, _ := admins(t)
		_, sig, _ := parts(t, w.signed("bob", keyFor("bob"), Remove{User: "carol"}))
		other, _, _ := parts(t, w.signed("bob", keyFor("bob"), Remove{User: "dan"}))
		w.refuseBytes(encodeSigned(other, sig, nil), ErrBadSignature)
	})
	t.Run("a signature without the domain prefix", func(t *testing.T) {
		w, _ := admins(t)
		change, _, _ := parts(t, w.signed("bob", keyFor("bob"), Remove{User: "carol"}))
		w.refuseBytes(encodeSigned(change, sigOver(keyFor("bob").Private, change), nil), ErrBadSignature)
		// And the signature really is over the prefix and the bytes.
		signed := w.signed("bob", keyFor("bob"), Remove{User: "carol"})
		change, sig, _ := parts(t, signed)
		if !xeddsa.Verify(keyFor("bob").Public, append([]byte("magpie group change v1\x00"), change...), [64]byte(sig)) {
			t.Fatal("the signature is not over the documented message")
		}
	})
	t.Run("every single bit flipped", func(t *testing.T) {
		w, _ := admins(t)
		good := w.signed("bob", keyFor("bob"), Remove{User: "carol"})
		for i := range len(good) * 8 {
			bad := bytes.Clone(good)
			bad[i/8] ^= 1 << (i % 8)
			if _, _, err := w.st.Apply(bad); err == nil {
				t.Fatalf("accepted with bit %d flipped", i)
			}
		}
		w.mustApply(good)
	})
	t.Run("a removed admin's change after removal", func(t *testing.T) {
		w, _ := admins(t)
		before := w.signed("bob", keyFor("bob"), Remove{User: "carol"}) // on the old head
		w.do("alice", Remove{User: "bob"})
		w.refuseBytes(before, ErrOutOfOrder)
		w.refuseBytes(w.signed("bob", keyFor("bob"), Remove{User: "carol"}), ErrNotMember)
	})
}

// A Join needs both the joiner's signature and the current link's.
func TestJoinNeedsTheLink(t *testing.T) {
	joiner := keyFor("quinn")
	join := func(w *world) (*Change, []byte) {
		c := &Change{GroupID: w.st.ID, Seq: w.st.Seq + 1, Prev: w.st.Head, Author: "quinn", Time: t0, Action: Join{Key: joiner.Public}}
		cb, err := c.marshal()
		if err != nil {
			t.Fatal(err)
		}
		return c, cb
	}
	msg := func(cb []byte) []byte { return append([]byte(domain), cb...) }
	t.Run("no link signature", func(t *testing.T) {
		w, _ := admins(t)
		_, cb := join(w)
		w.refuseBytes(encodeSigned(cb, sigOver(joiner.Private, msg(cb)), nil), ErrMalformed)
	})
	t.Run("a link signature by another key", func(t *testing.T) {
		w, _ := admins(t)
		_, cb := join(w)
		other, _ := newLink(t, w.st.ID)
		w.refuseBytes(encodeSigned(cb, sigOver(joiner.Private, msg(cb)), sigOver(other.Key, msg(cb))), ErrBadSignature)
		// Nor does the server's own key, nor the joiner's twice.
		w.refuseBytes(encodeSigned(cb, sigOver(joiner.Private, msg(cb)), sigOver(joiner.Private, msg(cb))), ErrBadSignature)
	})
	t.Run("the link's signature but not the joiner's", func(t *testing.T) {
		w, link := admins(t)
		_, cb := join(w)
		w.refuseBytes(encodeSigned(cb, sigOver(keyFor("mallory").Private, msg(cb)), sigOver(link.Key, msg(cb))), ErrBadSignature)
	})
	t.Run("a link signature on another change", func(t *testing.T) {
		w, link := admins(t)
		change, sig, _ := parts(t, w.signed("bob", keyFor("bob"), Remove{User: "carol"}))
		w.refuseBytes(encodeSigned(change, sig, sigOver(link.Key, msg(change))), ErrMalformed)
	})
	t.Run("links off", func(t *testing.T) {
		w, link := admins(t)
		w.do("bob", SetLink{})
		if _, err := w.st.Join("quinn", joiner, link, t0, rand.Reader); !errors.Is(err, ErrForbidden) {
			t.Fatalf("Join = %v", err)
		}
		_, cb := join(w)
		w.refuseBytes(encodeSigned(cb, sigOver(joiner.Private, msg(cb)), sigOver(link.Key, msg(cb))), ErrForbidden)
	})
	t.Run("an old link", func(t *testing.T) {
		w, old := admins(t)
		_, pub := newLink(t, w.st.ID)
		w.do("bob", SetLink{Key: pub})
		if _, err := w.st.Join("quinn", joiner, old, t0, rand.Reader); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("Join with the old link = %v", err)
		}
	})
	t.Run("another group's link", func(t *testing.T) {
		w, _ := admins(t)
		other, _ := newLink(t, [16]byte{1})
		if _, err := w.st.Join("quinn", joiner, other, t0, rand.Reader); !errors.Is(err, ErrUnknownGroup) {
			t.Fatalf("Join = %v", err)
		}
	})
}

// The log is a chain: every change names the seq and head it was made on,
// and only the state's next seq on its head applies.
func TestChainRefusesReplaysForksGapsAndOtherGroups(t *testing.T) {
	w, _ := admins(t)
	bob := keyFor("bob")
	first := w.signed("bob", bob, Remove{User: "carol"})
	fork := w.signed("bea", keyFor("bea"), Remove{User: "dan"}) // on the same head
	w.mustApply(first)
	w.refuseBytes(first, ErrOutOfOrder) // the same bytes again
	w.refuseBytes(fork, ErrOutOfOrder)
	w.refuseBytes(w.log[0], ErrOutOfOrder) // the Create again

	skip := &Change{GroupID: w.st.ID, Seq: w.st.Seq + 2, Prev: w.st.Head, Author: "bob", Time: t0, Action: Remove{User: "dan"}}
	b, err := sign(skip, bob.Private, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w.refuseBytes(b, ErrOutOfOrder)
	wrongPrev := &Change{GroupID: w.st.ID, Seq: w.st.Seq + 1, Prev: [32]byte{1}, Author: "bob", Time: t0, Action: Remove{User: "dan"}}
	if b, err = sign(wrongPrev, bob.Private, nil, rand.Reader); err != nil {
		t.Fatal(err)
	}
	w.refuseBytes(b, ErrOutOfOrder)

	other := &Change{GroupID: [16]byte{9}, Seq: w.st.Seq + 1, Prev: w.st.Head, Author: "bob", Time: t0, Action: Remove{User: "dan"}}
	if b, err = sign(other, bob.Private, nil, rand.Reader); err != nil {
		t.Fatal(err)
	}
	w.refuseBytes(b, ErrUnknownGroup)

	// A log in the wrong order does not replay.
	w.do("bob", Remove{User: "dan"})
	swapped := [][]byte{w.log[0], w.log[1], w.log[2], w.log[4], w.log[3]}
	if _, err := Replay(swapped, nil); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("Replay of a reordered log = %v", err)
	}
	if _, err := Replay(w.log[1:], nil); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("Replay without its Create = %v", err)
	}
}

// Two admins propose on the same head: the server's order decides, the
// second fails with ErrOutOfOrder, and its author proposes again.
func TestConcurrentProposalsResolveByOrder(t *testing.T) {
	w, _ := admins(t)
	base := w.st
	byBob, err := base.Propose("bob", keyFor("bob"), Add{User: "erin", Key: keyFor("erin").Public}, t0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	byBea, err := base.Propose("bea", keyFor("bea"), Add{User: "fay", Key: keyFor("fay").Public}, t0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w.mustApply(byBob) // the server received bob's first
	w.refuseBytes(byBea, ErrOutOfOrder)
	w.do("bea", Add{User: "fay", Key: keyFor("fay").Public}) // bea proposes again
	if _, ok := w.st.Members["erin"]; !ok || w.st.Members["fay"].User != "fay" {
		t.Fatalf("members %v", roles(w.st))
	}

	// When both wanted the same, the second learns there is nothing to do.
	base = w.st
	byBob, _ = base.Propose("bob", keyFor("bob"), Remove{User: "carol"}, t0, rand.Reader)
	byBea, _ = base.Propose("bea", keyFor("bea"), Remove{User: "carol"}, t0, rand.Reader)
	w.mustApply(byBob)
	w.refuseBytes(byBea, ErrOutOfOrder)
	if _, err := w.st.Propose("bea", keyFor("bea"), Remove{User: "carol"}, t0, rand.Reader); !errors.Is(err, ErrNotMember) {
		t.Fatalf("proposing again = %v", err)
	}
}

// Replay with the creator's known key refuses a log created by another
// key: the server cannot make up a group in someone's name.
func TestReplayChecksTheCreatorsKey(t *testing.T) {
	w, _ := admins(t)
	alice, made := keyFor("alice").Public, keyFor("server's own").Public
	if _, err := Replay(w.log, &alice); err != nil {
		t.Fatal(err)
	}
	if _, err := Replay(w.log, &made); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Replay with another creator key = %v", err)
	}
	// A Create in alice's name signed by another key.
	change, _, _ := parts(t, w.log[0])
	forged := encodeSigned(change, sigOver(keyFor("server's own").Private, append([]byte(domain), change...)), nil)
	if _, err := Replay([][]byte{forged}, nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Replay of a forged Create = %v", err)
	}
	if _, err := Replay(nil, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Replay(nil) = %v", err)
	}
}

// An owner who is the last member ends the group: nothing applies after.
func TestEndedGroupAcceptsNothing(t *testing.T) {
	w := newWorld(t, "alice", Settings{})
	link, pub := newLink(t, w.st.ID)
	w.do("alice", SetLink{Key: pub})
	w.do("alice", Leave{})
	if _, err := w.st.Join("quinn", keyFor("quinn"), link, t0, rand.Reader); !errors.Is(err, ErrForbidden) {
		t.Fatalf("Join an ended group = %v", err)
	}
	w.refuse("alice", SetInfo{Name: "back"}, ErrNotMember)
}

// The encoding of a signed change is canonical, so one change has one
// hash: the server cannot split the chain by re-encoding an entry.
func TestNonCanonicalEncodingIsRefused(t *testing.T) {
	w, _ := admins(t)
	change, sig, _ := parts(t, w.signed("bob", keyFor("bob"), Remove{User: "carol"}))
	field := func(b []byte, n protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, n, protowire.BytesType), v)
	}
	cases := map[string][]byte{
		"fields out of order":  field(field(nil, 2, sig), 1, change),
		"a field twice":        field(field(field(nil, 1, change), 1, change), 2, sig),
		"an empty link field":  field(field(field(nil, 1, change), 2, sig), 3, nil),
		"an unknown field":     protowire.AppendVarint(protowire.AppendTag(field(field(nil, 1, change), 2, sig), 9, protowire.VarintType), 1),
		"a short signature":    field(field(nil, 1, change), 2, sig[:63]),
		"a long link field":    field(field(field(nil, 1, change), 2, sig), 3, make([]byte, 65)),
		"no signature":         field(nil, 1, change),
		"empty":                nil,
		"not protobuf":         []byte("hello"),
		"over the size limit":  field(field(nil, 1, make([]byte, MaxChangeSize)), 2, sig),
		"a non-minimal length": append(append([]byte{0x0a, 0x80 | byte(len(change)&0x7f), byte(len(change) >> 7)}, change...), field(nil, 2, sig)...),
	}
	if len(change) >= 1<<14 {
		t.Fatalf("the non-minimal length case assumes a change under 16 KiB, not %d bytes", len(change))
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) { w.refuseBytes(b, ErrMalformed) })
	}
}
