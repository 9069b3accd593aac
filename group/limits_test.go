package group

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e/curve"
)

// longName is a valid username of the greatest length, unique per i.
func longName(i int) string { return fmt.Sprintf("u%031d", i) }

// people returns n members with the longest names, so that the size
// limits are tested at their worst.
func people(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = member(longName(i), RoleMember)
	}
	return ms
}

// A group holds MaxMembers members, its owner included, however they come
// in: Create, Add, Join and Approve refuse the next one.
func TestMemberLimit(t *testing.T) {
	owner := "owner"
	id := [16]byte{7}
	if _, _, err := Create(id, owner, keyFor(owner), "big", people(MaxMembers), Settings{}, t0, rand.Reader); !errors.Is(err, ErrTooManyMembers) {
		t.Fatalf("Create with %d members = %v", MaxMembers+1, err)
	}
	b, full, err := Create(id, owner, keyFor(owner), strings.Repeat("n", MaxName), people(MaxMembers-1), Settings{}, t0, rand.Reader)
	if err != nil || len(full.Members) != MaxMembers {
		t.Fatalf("Create with %d members: %v", MaxMembers, err)
	}
	if len(b) > MaxChangeSize {
		t.Fatalf("the largest Create takes %d bytes, over MaxChangeSize", len(b))
	}
	w := &world{t: t, st: full, log: [][]byte{b}}
	w.refuse(owner, Add{User: "one_more", Key: keyFor("one_more").Public}, ErrTooManyMembers)

	open, pub := newLink(t, id)
	w.do(owner, SetLink{Key: pub})
	if _, err := w.st.Join("one_more", keyFor("one_more"), open, t0, rand.Reader); !errors.Is(err, ErrTooManyMembers) {
		t.Fatalf("Join a full group = %v", err)
	}
	closed, pub := newLink(t, id)
	w.do(owner, SetLink{Key: pub, Approval: true})
	w.join("one_more", closed) // a request may wait while the group is full
	w.refuse(owner, Approve{User: "one_more"}, ErrTooManyMembers)

	// Room again after someone goes.
	w.do(owner, Remove{User: longName(5)})
	w.do(owner, Approve{User: "one_more"})
	if len(w.st.Members) != MaxMembers {
		t.Fatalf("%d members", len(w.st.Members))
	}
}

// At most MaxRequests requests wait; the next joiner is told to try later.
func TestRequestLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("signs and verifies a thousand joins")
	}
	w := newWorld(t, "alice", Settings{})
	link, pub := newLink(t, w.st.ID)
	w.do("alice", SetLink{Key: pub, Approval: true})
	for i := range MaxRequests - 1 { // without checkTransition, which is slow at this size
		b, err := w.st.Join(longName(i), keyFor(longName(i)), link, t0, rand.Reader)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		if w.st, _, err = w.st.Apply(b); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		w.log = append(w.log, b)
	}
	w.join("the_last", link)
	if _, err := w.st.Join("one_more", keyFor("one_more"), link, t0, rand.Reader); !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("request %d = %v", MaxRequests+1, err)
	}
	// The state with the most requests persists and reads back.
	var back State
	if err := back.UnmarshalBinary(marshal(t, w.st)); err != nil || len(back.Requests) != MaxRequests {
		t.Fatalf("UnmarshalBinary: %d requests, %v", len(back.Requests), err)
	}
	// A new link clears the flood in one change.
	_, pub = newLink(t, w.st.ID)
	w.do("alice", SetLink{Key: pub, Approval: true})
	if len(w.st.Requests) != 0 {
		t.Fatalf("%d requests after a new link", len(w.st.Requests))
	}
}

// A new link, or links off, drops pending requests; approval alone keeps
// them, and a pending requester who joins once approval is off is in.
func TestSetLinkDropsPendingRequests(t *testing.T) {
	w, link := admins(t)
	w.join("quinn", link)
	key := *w.st.LinkKey
	w.do("bob", SetLink{Key: &key})
	if len(w.st.Requests) != 2 {
		t.Fatalf("turning approval off dropped requests: %v", w.st.Requests)
	}
	w.join("pat", link)
	if _, ok := w.st.Requests["pat"]; ok || w.st.Members["pat"] != member("pat", RoleMember) {
		t.Fatalf("pat: requests %v, members %v", w.st.Requests, roles(w.st))
	}
	w.do("bob", SetLink{})
	if len(w.st.Requests) != 0 || w.st.LinkKey != nil {
		t.Fatalf("links off kept %v", w.st.Requests)
	}

	w, link = admins(t)
	_, pub := newLink(t, w.st.ID)
	w.do("bob", SetLink{Key: pub, Approval: true})
	if len(w.st.Requests) != 0 {
		t.Fatalf("a new link kept %v", w.st.Requests)
	}
	w.refuse("bob", Approve{User: "pat"}, ErrNoChange)
	if _, err := w.st.Join("pat", keyFor("pat"), link, t0, rand.Reader); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("joining with the old link = %v", err)
	}
	// Adding a pending requester directly drops the request.
	w, _ = admins(t)
	w.do("bob", Add{User: "pat", Key: keyFor("pat").Public})
	if len(w.st.Requests) != 0 {
		t.Fatalf("requests %v", w.st.Requests)
	}
}

// Every field is bounded, and a change out of bounds is refused by the
// decoder, whether Propose made it or someone signed it anyway.
func TestOutOfBoundsChangesAreRefused(t *testing.T) {
	lowOrder := curve.PublicKey{} // u = 0, of order 2
	unreduced := curve.PublicKey{0: 0xed, 31: 0x7f}
	for i := 1; i < 31; i++ {
		unreduced[i] = 0xff
	}
	highBit := keyFor("erin").Public
	highBit[31] |= 0x80
	cases := map[string]Action{
		"a long name":                       SetInfo{Name: strings.Repeat("x", MaxName+1)},
		"a name over two lines":             SetInfo{Name: "a\nb"},
		"a name with a control character":   SetInfo{Name: "a\x7fb"},
		"a name starting with one":          SetInfo{Name: "\x07bell"},
		"a long description":                SetInfo{Description: strings.Repeat("x", MaxDescription+1)},
		"a large avatar":                    SetInfo{Avatar: make([]byte, MaxAvatar+1)},
		"disappearing too late":             SetSettings{Settings: Settings{DisappearAfter: MaxDisappearAfter + time.Second}},
		"disappearing in part seconds":      SetSettings{Settings: Settings{DisappearAfter: 1500 * time.Millisecond}},
		"disappearing before sent":          SetSettings{Settings: Settings{DisappearAfter: -time.Second}},
		"a user in capitals":                Add{User: "Erin", Key: keyFor("erin").Public},
		"a reserved user":                   Add{User: "admin", Key: keyFor("erin").Public},
		"a long user":                       Add{User: longName(1) + "x", Key: keyFor("erin").Public},
		"an empty user":                     Remove{},
		"a key of small order":              Add{User: "erin", Key: lowOrder},
		"an unreduced key":                  Add{User: "erin", Key: unreduced},
		"a key with the high bit":           Add{User: "erin", Key: highBit},
		"a link key of small order":         SetLink{Key: &lowOrder},
		"no role":                           SetRole{User: "carol"},
		"an unknown role":                   SetRole{User: "carol", Role: 4},
		"a Create in the middle of the log": Genesis{Key: keyFor("bob").Public, Name: "again"},
	}
	for name, a := range cases {
		t.Run(name, func(t *testing.T) {
			w, _ := admins(t)
			if _, err := w.st.Propose("bob", keyFor("bob"), a, t0, rand.Reader); err == nil {
				t.Error("Propose accepted it")
			}
			c := &Change{GroupID: w.st.ID, Seq: w.st.Seq + 1, Prev: w.st.Head, Author: "bob", Time: t0, Action: a}
			b, err := sign(c, keyFor("bob").Private, nil, rand.Reader)
			if err != nil {
				return // not even encodable
			}
			w.refuseBytes(b, ErrMalformed)
		})
	}
	// At the bounds, accepted.
	w, _ := admins(t)
	w.do("bob", SetInfo{Name: strings.Repeat("é", MaxName/2), Description: strings.Repeat("x", MaxDescription), Avatar: bytes.Repeat([]byte{1}, MaxAvatar)})
	w.do("bob", SetSettings{Settings: Settings{DisappearAfter: MaxDisappearAfter}})
	// The last millisecond of year 9999 is a time; the next is not.
	last := time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC)
	c := &Change{GroupID: w.st.ID, Seq: w.st.Seq + 1, Prev: w.st.Head, Author: "bob", Time: last, Action: SetInfo{Name: "late"}}
	b, err := sign(c, keyFor("bob").Private, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	next, got, err := w.st.Apply(b)
	if err != nil || next == nil || !got.Time.Equal(last) {
		t.Fatalf("a change at the end of year 9999: %v", err)
	}
	c = &Change{GroupID: w.st.ID, Seq: w.st.Seq + 1, Prev: w.st.Head, Author: "bob", Time: last.Add(time.Millisecond), Action: Leave{}}
	if b, err = sign(c, keyFor("bob").Private, nil, rand.Reader); err != nil {
		t.Fatal(err)
	}
	w.refuseBytes(b, ErrMalformed)
}

// The size bounds are inclusive: what is exactly at one is not refused for
// its size (it fails later, as the garbage it is), one byte more is.
func TestSizeBoundsAreInclusive(t *testing.T) {
	for _, c := range []struct {
		name, sizeErr string
		max           int
		parse         func([]byte) error
	}{
		{"change", "a change of", MaxChangeSize, func(b []byte) error { _, err := decode(b); return err }},
		{"state", "a state of", MaxStateSize, func(b []byte) error { var s State; return s.UnmarshalBinary(b) }},
	} {
		if err := c.parse(make([]byte, c.max)); err == nil || strings.Contains(err.Error(), c.sizeErr) {
			t.Errorf("a %s of exactly its bound: %v, want refused for something other than its size", c.name, err)
		}
		if err := c.parse(make([]byte, c.max+1)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.sizeErr) {
			t.Errorf("a %s one byte over its bound: %v, want refused for its size", c.name, err)
		}
	}
}

// A Create lists each member once, never the creator, and nobody else as
// owner.
func TestMalformedCreatesAreRefused(t *testing.T) {
	cases := map[string][]Member{
		"the creator among the members": {member("alice", RoleMember)},
		"a member twice":                {member("bob", RoleMember), member("bob", RoleAdmin)},
		"another owner":                 {member("bob", RoleOwner)},
		"no role":                       {member("bob", 0)},
	}
	for name, ms := range cases {
		if _, _, err := Create([16]byte{1}, "alice", keyFor("alice"), "g", ms, Settings{}, t0, rand.Reader); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Create = %v", name, err)
		}
	}
	if _, _, err := Create([16]byte{1}, "Alice", keyFor("alice"), "g", nil, Settings{}, t0, rand.Reader); !errors.Is(err, ErrMalformed) {
		t.Errorf("a creator in capitals: %v", err)
	}
	// A creator who signs with a key that is not theirs.
	wrong := keyFor("alice")
	wrong.Public = keyFor("bob").Public
	if _, _, err := Create([16]byte{1}, "alice", wrong, "g", nil, Settings{}, t0, rand.Reader); !errors.Is(err, ErrBadSignature) {
		t.Errorf("mismatched key pair: %v", err)
	}
	// Admins among the first members are fine.
	_, st, err := Create([16]byte{1}, "alice", keyFor("alice"), "", []Member{member("bob", RoleAdmin)}, Settings{}, t0, rand.Reader)
	if err != nil || st.Role("bob") != RoleAdmin {
		t.Fatalf("Create with an admin: %v", err)
	}
}

// Fields the Go API cannot get wrong, made by hand: the decoder checks
// them too.
func TestHandMadeChangesOutOfBoundsAreRefused(t *testing.T) {
	w, _ := admins(t)
	bob := keyFor("bob")
	base := func() *WireChange {
		return &WireChange{GroupId: w.st.ID[:], Seq: w.st.Seq + 1, Prev: w.st.Head[:], Author: "bob",
			Action: &WireChange_Remove{Remove: &WireUser{User: "carol"}}}
	}
	cases := map[string]func(*WireChange){
		"a long group id":         func(c *WireChange) { c.GroupId = append(c.GroupId, 0) },
		"a short group id":        func(c *WireChange) { c.GroupId = c.GroupId[:15] },
		"a long prev":             func(c *WireChange) { c.Prev = append(c.Prev, 0) },
		"no prev":                 func(c *WireChange) { c.Prev = nil },
		"a prev at seq 0":         func(c *WireChange) { c.Seq = 0 },
		"a Remove at seq 0":       func(c *WireChange) { c.Seq, c.Prev = 0, nil },
		"approval with links off": func(c *WireChange) { c.Action = &WireChange_SetLink{SetLink: &WireSetLink{Approval: true}} },
		"a short key":             func(c *WireChange) { c.Action = &WireChange_Add{Add: &WireAdd{User: "erin", Key: make([]byte, 32)}} },
		"a key of another type": func(c *WireChange) {
			c.Action = &WireChange_Join{Join: &WireJoin{Key: append([]byte{6}, make([]byte, 32)...)}}
		},
		"a Create at seq 1": func(c *WireChange) {
			c.Action = &WireChange_Create{Create: &WireCreate{OwnerKey: bob.Public.Serialize()}}
		},
		"an empty Add":              func(c *WireChange) { c.Action = &WireChange_Add{} },
		"a role beyond the owner":   func(c *WireChange) { c.Action = &WireChange_SetRole{SetRole: &WireSetRole{User: "carol", Role: 4}} },
		"invalid UTF-8 in the name": nil, // below
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			wc := base()
			var cb []byte
			var err error
			if edit == nil {
				wc.Action = &WireChange_SetInfo{SetInfo: &WireInfo{Name: "QQQQ"}}
				cb, err = proto.Marshal(wc)
				cb = bytes.Replace(cb, []byte("QQQQ"), []byte("\xff\xfe\xfd\xfc"), 1)
			} else {
				edit(wc)
				cb, err = proto.Marshal(wc)
			}
			if err != nil {
				t.Fatal(err)
			}
			b := encodeSigned(cb, sigOver(bob.Private, append([]byte(domain), cb...)), nil)
			if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("Decode = %v", err)
			}
			w.refuseBytes(b, ErrMalformed)
		})
	}
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// An entry or a state over its size limit is refused before it is parsed:
// a peer cannot make a client copy megabytes only to refuse them.
func TestOversizedInputIsRefusedUnparsed(t *testing.T) {
	const size = 4 << 20
	w, _ := admins(t)
	change, sig, _ := parts(t, w.signed("bob", keyFor("bob"), Remove{User: "carol"}))
	padded := protowire.AppendBytes(protowire.AppendTag(change, 99, protowire.BytesType), make([]byte, size))
	huge := encodeSigned(padded, sig, nil)
	if n := allocated(func() {
		if _, err := Decode(huge); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode = %v", err)
		}
	}); n > size/8 {
		t.Errorf("refusing a %d-byte change allocated %d bytes", len(huge), n)
	}
	state := protowire.AppendBytes(protowire.AppendTag(marshal(t, w.st), 99, protowire.BytesType), make([]byte, size))
	if n := allocated(func() {
		var s State
		if err := s.UnmarshalBinary(state); !errors.Is(err, ErrMalformed) {
			t.Errorf("UnmarshalBinary = %v", err)
		}
	}); n > size/8 {
		t.Errorf("refusing a %d-byte state allocated %d bytes", len(state), n)
	}
}
