package group

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e/curve"
)

// history is a log that uses every kind of change.
func history(t testing.TB) *world {
	w, link := admins(t)
	w.do("bob", Add{User: "erin", Key: keyFor("erin").Public})
	w.do("alice", SetRole{User: "carol", Role: RoleAdmin})
	w.do("carol", SetInfo{Name: "n", Description: "d", Avatar: []byte("pointer")})
	w.do("bob", SetSettings{Settings: Settings{AdminsOnlySend: true, DisappearAfter: time.Hour}})
	w.join("quinn", link)
	w.do("bob", Approve{User: "pat"})
	w.do("bob", Deny{User: "quinn"})
	w.do("bob", Remove{User: "dan"})
	w.do("erin", Leave{})
	w.do("alice", SetRole{User: "bea", Role: RoleOwner})
	w.do("bea", SetLink{})
	return w
}

// Replay of a log reaches the state that applying its changes one by one
// reaches, after every prefix.
func TestReplayEqualsApplyingOneByOne(t *testing.T) {
	w := history(t)
	st, err := Replay(w.log[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(w.log); i++ {
		if st, _, err = st.Apply(w.log[i]); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		replayed, err := Replay(w.log[:i+1], nil)
		if err != nil {
			t.Fatalf("Replay of %d changes: %v", i+1, err)
		}
		if !reflect.DeepEqual(replayed, st) {
			t.Fatalf("after change %d: Replay = %+v, Apply = %+v", i, replayed, st)
		}
	}
	// A bad entry names its place in the log.
	bad := append(w.log[:len(w.log):len(w.log)], []byte("junk"))
	if _, err := Replay(bad, nil); !errors.Is(err, ErrMalformed) || !strings.HasPrefix(err.Error(), fmt.Sprintf("change %d: ", len(w.log))) {
		t.Fatalf("Replay = %v", err)
	}
}

// Apply never changes the state it is called on, nor shares with the new
// state anything a caller could change.
func TestApplyLeavesTheReceiverUnchanged(t *testing.T) {
	w, _ := admins(t)
	old := w.st
	before := marshal(t, old)
	_, pub := newLink(t, old.ID)
	steps := []Action{Add{User: "erin", Key: keyFor("erin").Public}, Remove{User: "carol"}, SetRole{User: "dan", Role: RoleAdmin},
		Approve{User: "pat"}, SetLink{Key: pub}, SetInfo{Name: "x", Avatar: []byte{1}}}
	for _, a := range steps {
		b, err := old.Propose("bob", keyFor("bob"), a, t0, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		next, c, err := old.Apply(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, marshal(t, old)) {
			t.Fatalf("Apply of %T changed the state it was called on", a)
		}
		// What the change returned holds is not the new state's.
		switch a := c.Action.(type) {
		case SetLink:
			*a.Key = curve.PublicKey{1}
			if *next.LinkKey != *pub {
				t.Fatal("the returned change shares the state's link key")
			}
		case SetInfo:
			a.Avatar[0] = 9
			if next.Avatar[0] != 1 {
				t.Fatal("the returned change shares the state's avatar")
			}
		}
	}
}

// A state persists and reads back equal, and goes on applying the log.
func TestStateRoundTrips(t *testing.T) {
	w := history(t)
	st, err := Replay(w.log[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= len(w.log); i++ {
		var back State
		if err := back.UnmarshalBinary(marshal(t, st)); err != nil {
			t.Fatalf("after change %d: %v", i-1, err)
		}
		if !reflect.DeepEqual(&back, st) {
			t.Fatalf("after change %d: read back %+v, want %+v", i-1, back, *st)
		}
		if i < len(w.log) {
			if st, _, err = back.Apply(w.log[i]); err != nil {
				t.Fatalf("change %d on a state read back: %v", i, err)
			}
		}
	}
}

// UnmarshalBinary refuses anything that no log could have produced, and
// leaves its receiver alone when it does.
func TestStateUnmarshalRefusesGarbage(t *testing.T) {
	w, _ := admins(t)
	good := marshal(t, w.st)
	edit := func(f func(*WireState)) []byte {
		var ws WireState
		if err := proto.Unmarshal(good, &ws); err != nil {
			t.Fatal(err)
		}
		f(&ws)
		b, err := proto.Marshal(&ws)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	role := func(ws *WireState, user string, r WireRole) {
		for _, m := range ws.Members {
			if m.User == user {
				m.Role = r
			}
		}
	}
	cases := map[string][]byte{
		"empty":            nil,
		"junk":             []byte("not a state"),
		"truncated":        good[:len(good)-1],
		"an unknown field": protowire.AppendVarint(protowire.AppendTag(bytes.Clone(good), 99, protowire.VarintType), 1),
		"too large":        make([]byte, MaxStateSize+1),
		"a short id":       edit(func(ws *WireState) { ws.Id = ws.Id[:15] }),
		"a short head":     edit(func(ws *WireState) { ws.Head = nil }),
		"a long id":        edit(func(ws *WireState) { ws.Id = append(ws.Id, 0) }),
		"a long head":      edit(func(ws *WireState) { ws.Head = append(ws.Head, 0) }),
		"two owners":       edit(func(ws *WireState) { role(ws, "bob", WireRole_ROLE_OWNER) }),
		"no owner":         edit(func(ws *WireState) { role(ws, "alice", WireRole_ROLE_ADMIN) }),
		"no role":          edit(func(ws *WireState) { role(ws, "carol", WireRole_ROLE_UNSPECIFIED) }),
		"an unknown role":  edit(func(ws *WireState) { role(ws, "carol", 7) }),
		"members out of order": edit(func(ws *WireState) {
			ws.Members[0], ws.Members[1] = ws.Members[1], ws.Members[0]
		}),
		"a member twice": edit(func(ws *WireState) { ws.Members = append(ws.Members, ws.Members[len(ws.Members)-1]) }),
		"a request by a member": edit(func(ws *WireState) {
			ws.Requests = append(ws.Requests, &WireMember{User: "zed", Key: keyFor("zed").Public.Serialize(), Role: WireRole_ROLE_MEMBER})
			ws.Members = append(ws.Members, &WireMember{User: "zed", Key: keyFor("zed").Public.Serialize(), Role: WireRole_ROLE_MEMBER})
		}),
		"an admin's request": edit(func(ws *WireState) { ws.Requests[0].Role = WireRole_ROLE_ADMIN }),
		"requests without a link": edit(func(ws *WireState) {
			ws.LinkKey, ws.LinkApproval = nil, false
		}),
		"approval without a link": edit(func(ws *WireState) { ws.LinkKey, ws.Requests = nil, nil }),
		"a bad link key":          edit(func(ws *WireState) { ws.LinkKey = ws.LinkKey[1:] }),
		"a bad member key":        edit(func(ws *WireState) { ws.Members[0].Key = make([]byte, 33) }),
		"a member in capitals":    edit(func(ws *WireState) { ws.Members[0].User = "Alice" }),
		"a long name":             edit(func(ws *WireState) { ws.Info.Name = strings.Repeat("x", MaxName+1) }),
		"a long wait":             edit(func(ws *WireState) { ws.Settings.DisappearAfterSeconds = 1 << 31 }),
		"too many members": edit(func(ws *WireState) {
			ws.Members = nil
			for _, m := range people(MaxMembers + 1) {
				ws.Members = append(ws.Members, m.wire())
			}
			ws.Members[0].Role = WireRole_ROLE_OWNER
		}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			st := *w.st
			if err := st.UnmarshalBinary(b); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooManyMembers) {
				t.Fatalf("UnmarshalBinary = %v", err)
			}
			if !reflect.DeepEqual(&st, w.st) {
				t.Fatal("a refused state altered the receiver")
			}
		})
	}
	var ended State // the state of an ended group is fine
	if err := ended.UnmarshalBinary(edit(func(ws *WireState) { ws.Members = nil })); err != nil {
		t.Fatalf("an ended group: %v", err)
	}
}

// Fields this version does not know are refused wherever they are: a
// client that skipped them could reach another state than its peers.
func TestUnknownFieldsAreRefused(t *testing.T) {
	w, _ := admins(t)
	bob := keyFor("bob")
	change, _, _ := parts(t, w.signed("bob", bob, Add{User: "erin", Key: keyFor("erin").Public}))
	var wc WireChange
	if err := proto.Unmarshal(change, &wc); err != nil {
		t.Fatal(err)
	}
	unknown := func(b []byte, n protowire.Number) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, n, protowire.VarintType), 1)
	}
	nested := proto.Clone(&wc).(*WireChange)
	nested.GetAdd().ProtoReflect().SetUnknown(unknown(nil, 7))
	nestedBytes, err := proto.Marshal(nested)
	if err != nil {
		t.Fatal(err)
	}
	noAction := proto.Clone(&wc).(*WireChange)
	noAction.Action = nil
	noActionBytes, err := proto.Marshal(noAction)
	if err != nil {
		t.Fatal(err)
	}
	// A newer action: field 30 of WireChange, a message.
	newer := protowire.AppendBytes(protowire.AppendTag(bytes.Clone(noActionBytes), 30, protowire.BytesType), []byte{0x0a, 0x01, 'x'})
	cases := map[string][]byte{
		"in the change":    unknown(bytes.Clone(change), 99),
		"in the action":    nestedBytes,
		"a newer action":   newer,
		"no action at all": noActionBytes,
	}
	for name, cb := range cases {
		t.Run(name, func(t *testing.T) {
			err := w.refuseBytes(encodeSigned(cb, sigOver(bob.Private, append([]byte(domain), cb...)), nil), ErrMalformed)
			if name == "a newer action" && !strings.Contains(fmt.Sprint(err), "newer Magpie") {
				t.Errorf("error %q does not say why", err)
			}
		})
	}
}

// The format does not drift: a log made from fixed keys and randomness
// has the same head as when this test was written. A failure means logs
// written by this version differ from those of earlier ones (a changed
// field, domain or encoding), which needs a new format version, not a new
// expected value.
func TestFormatIsStable(t *testing.T) {
	random := det("stable format")
	id := [16]byte{0: 0x6d, 15: 0x01}
	_, st, err := Create(id, "alice", keyFor("alice"), "Stable", []Member{member("bob", RoleAdmin)}, Settings{DisappearAfter: time.Minute}, t0, random)
	if err != nil {
		t.Fatal(err)
	}
	link, pub, err := NewLink(id, random)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		author string
		action Action
	}{
		{"bob", Add{User: "carol", Key: keyFor("carol").Public}},
		{"alice", SetLink{Key: &pub, Approval: true}},
		{"", nil}, // dave joins
		{"bob", Approve{User: "dave"}},
		{"alice", SetInfo{Name: "Stable", Description: "d", Avatar: []byte{1}}},
	} {
		var b []byte
		if step.action == nil {
			b, err = st.Join("dave", keyFor("dave"), link, t0, random)
		} else {
			b, err = st.Propose(step.author, keyFor(step.author), step.action, t0, random)
		}
		if err != nil {
			t.Fatal(err)
		}
		if st, _, err = st.Apply(b); err != nil {
			t.Fatal(err)
		}
	}
	const want = "7c0e4984242043e7a3793bc839eff560ad25fffe3ec57ce602b199164e4c07c6"
	if got := hex.EncodeToString(st.Head[:]); got != want {
		t.Fatalf("head %s, want %s", got, want)
	}
}

// The small-order list is right: each entry is of small order by curve's
// own exact check, and keys made by GenerateKeyPair pass.
func TestSmallOrderKeysAreRefused(t *testing.T) {
	for _, u := range smallOrder {
		if _, err := lowOrderProbe.ECDH(curve.PublicKey(u)); !errors.Is(err, curve.ErrLowOrderPoint) {
			t.Errorf("%x: not of small order (%v)", u, err)
		}
		if _, err := parseKey(curve.PublicKey(u).Serialize()); !errors.Is(err, ErrMalformed) {
			t.Errorf("%x accepted", u)
		}
	}
	for range 100 {
		kp, err := curve.GenerateKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseKey(kp.Public.Serialize()); err != nil {
			t.Fatalf("a fresh key refused: %v", err)
		}
	}
}

// lowOrderProbe is a clamped scalar, a multiple of the cofactor: X25519 of
// it and a point is all zeros exactly when the point has small order.
var lowOrderProbe = curve.PrivateKey{31: 0x40}

// A link's text form round-trips, and its String gives nothing away.
func TestLinkText(t *testing.T) {
	link, pub, err := NewLink([16]byte{1, 2, 3}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := link.Key.PublicKey(); err != nil || got != pub {
		t.Fatalf("NewLink's public key does not match its secret")
	}
	text := link.Encode()
	back, err := ParseLink(" " + text + "\n")
	if err != nil || back != link {
		t.Fatalf("ParseLink(%q) = %v, %v", text, back, err)
	}
	secret := strings.TrimPrefix(text, LinkPrefix)
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		if s := fmt.Sprintf(f, link); strings.Contains(s, secret) || strings.Contains(s, hex.EncodeToString(link.Key[:])) || strings.Contains(s, fmt.Sprint(link.Key[:4])) {
			t.Errorf("%s shows the secret: %s", f, s)
		}
	}
	unclamped := link
	unclamped.Key[0] |= 7
	for name, s := range map[string]string{
		"no prefix":     secret,
		"short":         text[:len(text)-1],
		"long":          text + "AAAA",
		"one more":      text + "A",
		"not base64url": text[:len(text)-1] + "+",
		"unclamped":     unclamped.Encode(),
		"empty":         "",
	} {
		if _, err := ParseLink(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseLink = %v", name, err)
		}
	}
}
