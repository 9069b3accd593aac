package group

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// fuzzNames are the users whose keys the fuzzers sign with: the owner, an
// admin, a member, a pending requester, a stranger holding the link, and
// a stranger without it.
var fuzzNames = []string{"alice", "bob", "carol", "pat", "quinn", "mallory"}

// fixture is the same two states on every run, for the committed seeds.
type fixture struct {
	// states[0]: a link with approval and pat's request pending;
	// states[1]: the same link without approval, admins-only info and
	// sending.
	states [2]*State
	link   LinkSecret
	random io.Reader
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	fx := &fixture{random: det("fuzz fixture")}
	id := [16]byte{0: 0xf0, 15: 0x22}
	_, st, err := Create(id, "alice", keyFor("alice"), "Fuzz", []Member{member("bob", RoleAdmin), member("carol", RoleMember), member("dan", RoleMember)}, Settings{}, t0, fx.random)
	if err != nil {
		t.Fatal(err)
	}
	link, pub, err := NewLink(id, fx.random)
	if err != nil {
		t.Fatal(err)
	}
	fx.link = link
	step := func(b []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if st, _, err = st.Apply(b); err != nil {
			t.Fatal(err)
		}
	}
	step(st.Propose("bob", keyFor("bob"), SetLink{Key: &pub, Approval: true}, t0, fx.random))
	step(st.Join("pat", keyFor("pat"), link, t0, fx.random))
	fx.states[0] = st
	step(st.Propose("bob", keyFor("bob"), SetSettings{Settings: Settings{AdminsOnlySend: true, AdminsOnlyEditInfo: true}}, t0, fx.random))
	step(st.Propose("bob", keyFor("bob"), SetLink{Key: &pub}, t0, fx.random))
	fx.states[1] = st
	return fx
}

// applyOrExplain applies b to st: a refusal must wrap one of the package's
// errors, and whatever is accepted must be allowed (checkTransition).
func applyOrExplain(t *testing.T, st *State, b []byte) {
	before := marshal(t, st)
	next, c, err := st.Apply(b)
	if !bytes.Equal(before, marshal(t, st)) {
		t.Fatal("Apply changed the state it was called on")
	}
	if err != nil {
		for _, e := range []error{ErrMalformed, ErrUnknownGroup, ErrOutOfOrder, ErrBadSignature, ErrForbidden, ErrTooManyMembers, ErrTooManyRequests, ErrNoChange} {
			if errors.Is(err, e) {
				return
			}
		}
		t.Fatalf("an error callers cannot branch on: %v", err)
	}
	checkTransition(t, st, next, c)
}

// FuzzApply feeds arbitrary bytes to Apply on two states: it must never
// panic, never change the state, and refuse with one of the package's
// errors. Since the fuzzer cannot sign, FuzzApplySigned reaches the rules.
func FuzzApply(f *testing.F) {
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		applyOrExplain(t, fx.states[which%2], b)
	})
}

// FuzzApplySigned signs arbitrary change bytes, so that the fuzzer reaches
// past the signatures: with the key of the change's own author when signer
// has bit 0x40 (else of fuzzNames[signer&0x3f]), and with the link when it
// has bit 0x80. Apply must never accept a change the rules forbid, as
// checkTransition states them.
func FuzzApplySigned(f *testing.F) {
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, which, signer uint8, change []byte) {
		applyOrExplain(t, fx.states[which%2], fx.sign(signer, change))
	})
}

func (fx *fixture) sign(signer uint8, change []byte) []byte {
	msg := append([]byte(domain), change...)
	key := keyFor(fuzzNames[int(signer&0x3f)%len(fuzzNames)])
	if c, err := decodeChange(change); signer&0x40 != 0 && err == nil {
		key = keyFor(c.Author)
	}
	sig, err := xsign(key.Private, msg, fx.random)
	if err != nil {
		panic(err)
	}
	var linkSig []byte
	if signer&0x80 != 0 {
		if linkSig, err = xsign(fx.link.Key, msg, fx.random); err != nil {
			panic(err)
		}
	}
	return encodeSigned(change, sig, linkSig)
}

// FuzzDecode: Decode never panics, and what it accepts is canonical and
// within bounds.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooManyMembers) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		change, sig, linkSig := parts(t, b)
		if !bytes.Equal(encodeSigned(change, sig, linkSig), b) {
			t.Fatal("accepted a non-canonical encoding")
		}
		users := []string{c.Author}
		switch a := c.Action.(type) {
		case Genesis:
			if len(a.Members) >= MaxMembers || len(a.Name) > MaxName {
				t.Fatal("a Create out of bounds")
			}
			for _, m := range a.Members {
				users = append(users, m.User)
				if m.Role != RoleMember && m.Role != RoleAdmin {
					t.Fatalf("a first member as %s", m.Role)
				}
			}
		case Add:
			users = append(users, a.User)
		case SetRole:
			users = append(users, a.User)
		case SetInfo:
			if len(a.Name) > MaxName || len(a.Description) > MaxDescription || len(a.Avatar) > MaxAvatar {
				t.Fatal("info out of bounds")
			}
		}
		for _, u := range users {
			if checkUser(u) != nil {
				t.Fatalf("accepted the user %q", u)
			}
		}
	})
}

// FuzzUnmarshalState: UnmarshalBinary never panics, and a state it
// accepts writes back to an equal state.
func FuzzUnmarshalState(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var s State
		if err := s.UnmarshalBinary(b); err != nil {
			return
		}
		var back State
		if err := back.UnmarshalBinary(marshal(t, &s)); err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("a state read back as %+v, %v; want %+v", back, err, s)
		}
		if len(s.Members) > MaxMembers || len(s.Requests) > MaxRequests || len(s.Members) > 0 && s.Owner() == "" {
			t.Fatal("a state out of bounds")
		}
	})
}

// FuzzParseLink: ParseLink never panics, and a link it accepts encodes to
// the same text.
func FuzzParseLink(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLink(s)
		if err != nil {
			return
		}
		if l.Encode() != strings.TrimSpace(s) {
			t.Fatalf("ParseLink(%q) encodes as %q", s, l.Encode())
		}
	})
}

// seedChanges are the changes the committed seeds start from, on each
// fixture state: allowed ones first (named valid-*), then forbidden ones.
func (fx *fixture) seedChanges() []struct {
	name   string
	which  uint8
	signer uint8
	change *Change
} {
	type seed = struct {
		name   string
		which  uint8
		signer uint8
		change *Change
	}
	var out []seed
	signer := func(user string) uint8 {
		for i, n := range fuzzNames {
			if n == user {
				return uint8(i)
			}
		}
		panic(user)
	}
	for which, st := range fx.states {
		add := func(name, author string, a Action) {
			s := signer(author) | 0x40
			if j, ok := a.(Join); ok && j.Key == keyFor("mallory").Public {
				s = signer("mallory") // a link holder joining under a member's name
			}
			if _, ok := a.(Join); ok {
				s |= 0x80
			}
			c := &Change{GroupID: st.ID, Seq: st.Seq + 1, Prev: st.Head, Author: author, Time: t0, Action: a}
			out = append(out, seed{fmt.Sprintf("%s-%d", name, which), uint8(which), s, c})
		}
		add("valid-add", "bob", Add{User: "erin", Key: keyFor("erin").Public})
		add("valid-rekey", "bob", Add{User: "carol", Key: keyFor("quinn").Public})
		add("valid-remove", "bob", Remove{User: "carol"})
		add("valid-promote", "bob", SetRole{User: "carol", Role: RoleAdmin})
		add("valid-transfer", "alice", SetRole{User: "carol", Role: RoleOwner})
		add("valid-leave", "carol", Leave{})
		add("valid-info", "bob", SetInfo{Name: "n", Description: "d", Avatar: []byte{1}})
		add("valid-settings", "bob", SetSettings{Settings: Settings{DisappearAfter: 3600e9}})
		add("valid-linkoff", "bob", SetLink{})
		add("valid-approve", "bob", Approve{User: "pat"})
		add("valid-deny", "bob", Deny{User: "pat"})
		add("valid-join", "quinn", Join{Key: keyFor("quinn").Public})
		add("forbidden-add", "carol", Add{User: "erin", Key: keyFor("erin").Public})
		add("forbidden-removeowner", "bob", Remove{User: "alice"})
		add("forbidden-demoteowner", "bob", SetRole{User: "alice", Role: RoleMember})
		add("forbidden-ownerleaves", "alice", Leave{})
		add("forbidden-stranger", "mallory", Leave{})
		add("forbidden-joinasmember", "carol", Join{Key: keyFor("mallory").Public})
	}
	return out
}

// TestWriteFuzzSeeds regenerates the committed seed corpora under
// testdata/fuzz: GROUP_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./group/
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("GROUP_WRITE_SEEDS") == "" {
		t.Skip("set GROUP_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	for _, dir := range []string{"FuzzApply", "FuzzApplySigned", "FuzzDecode", "FuzzUnmarshalState", "FuzzParseLink"} {
		if err := os.RemoveAll(filepath.Join("testdata", "fuzz", dir)); err != nil {
			t.Fatal(err)
		}
	}
	fx := newFixture(t)
	for _, s := range fx.seedChanges() {
		cb, err := s.change.marshal()
		if err != nil {
			t.Fatal(err)
		}
		writeSeed(t, "FuzzApplySigned", s.name, s.which, s.signer, cb)
		signed := fx.sign(s.signer, cb)
		writeSeed(t, "FuzzApply", s.name, s.which, signed)
		writeSeed(t, "FuzzDecode", s.name, signed)
	}
	w := history(t)
	writeSeed(t, "FuzzDecode", "create", w.log[0])
	writeSeed(t, "FuzzDecode", "junk", []byte("\x0a\x02\x08\x01\x12\x01"))
	for i, st := range fx.states {
		writeSeed(t, "FuzzUnmarshalState", fmt.Sprintf("state-%d", i), marshal(t, st))
	}
	writeSeed(t, "FuzzUnmarshalState", "history", marshal(t, w.st))
	writeSeed(t, "FuzzParseLink", "valid", fx.link.Encode())
	writeSeed(t, "FuzzParseLink", "short", fx.link.Encode()[:20])
}

func writeSeed(t *testing.T, fuzz, name string, args ...any) {
	lines := []string{"go test fuzz v1"}
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			lines = append(lines, "[]byte("+strconv.Quote(string(v))+")")
		case string:
			lines = append(lines, "string("+strconv.Quote(v)+")")
		case uint8:
			lines = append(lines, "uint8("+strconv.Itoa(int(v))+")")
		default:
			t.Fatalf("a seed argument of type %T", a)
		}
	}
	path := filepath.Join("testdata", "fuzz", fuzz, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readSeed parses a seed file that writeSeed wrote.
func readSeed(t *testing.T, path string) []any {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n")[1:] {
		switch {
		case strings.HasPrefix(line, "uint8("):
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(line, "uint8("), ")"), 10, 8)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, uint8(n))
		case strings.HasPrefix(line, "[]byte("):
			s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "[]byte("), ")"))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, []byte(s))
		}
	}
	return out
}

// The committed seeds still say what their names say: the valid ones
// apply and the forbidden ones are refused, on the fixture states, so the
// fuzzers start from both sides of every rule.
func TestFuzzSeedsAreWhatTheySay(t *testing.T) {
	fx := newFixture(t)
	seeds := fx.seedChanges()
	for _, s := range seeds {
		for _, fuzz := range []string{"FuzzApply", "FuzzApplySigned"} {
			args := readSeed(t, filepath.Join("testdata", "fuzz", fuzz, s.name))
			var b []byte
			if fuzz == "FuzzApply" {
				b = args[1].([]byte)
			} else {
				b = fx.sign(args[1].(uint8), args[2].([]byte))
			}
			st := fx.states[args[0].(uint8)%2]
			_, _, err := st.Apply(b)
			if valid := strings.HasPrefix(s.name, "valid-"); valid != (err == nil) {
				t.Errorf("%s/%s: Apply = %v", fuzz, s.name, err)
			}
		}
	}
	if len(seeds) == 0 {
		t.Fatal("no seeds")
	}
}
