package group

import (
	"bytes"
	"cmp"
	"crypto/subtle"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"filippo.io/edwards25519/field"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/username"
)

// maxTimeMs is the end of year 9999 in Unix ms: later times are refused,
// so that every time converts to a time.Time and back.
const maxTimeMs = 253402300799999

// Decode parses a signed change and checks its encoding and bounds, but
// not its signatures nor whether any group would accept it: that takes
// the group's state (State.Apply). It is for looking at a change (a
// server finding the group and seq of a proposal), never for trusting one.
func Decode(b []byte) (*Change, error) {
	d, err := decode(b)
	if err != nil {
		return nil, err
	}
	return d.change, nil
}

// decoded is a signed change, parsed but not verified.
type decoded struct {
	change  *Change
	bytes   []byte // the change as signed
	sig     [64]byte
	linkSig *[64]byte
}

// message is what the signatures sign.
func (d *decoded) message() []byte { return append([]byte(domain), d.bytes...) }

func decode(b []byte) (*decoded, error) {
	if len(b) > MaxChangeSize {
		return nil, fmt.Errorf("%w: a change of %d bytes; the most is %d", ErrMalformed, len(b), MaxChangeSize)
	}
	var w WireSignedChange
	if err := unmarshal(b, &w); err != nil {
		return nil, err
	}
	if len(w.Signature) != 64 || (len(w.LinkSignature) != 0 && len(w.LinkSignature) != 64) {
		return nil, fmt.Errorf("%w: a signature is not 64 bytes", ErrMalformed)
	}
	if !bytes.Equal(encodeSigned(w.Change, w.Signature, w.LinkSignature), b) {
		return nil, fmt.Errorf("%w: the signed change is not in canonical encoding", ErrMalformed)
	}
	c, err := decodeChange(w.Change)
	if err != nil {
		return nil, err
	}
	d := &decoded{change: c, bytes: w.Change, sig: [64]byte(w.Signature)}
	_, joining := c.Action.(Join)
	switch {
	case joining && len(w.LinkSignature) == 0:
		return nil, fmt.Errorf("%w: a Join without the link's signature", ErrMalformed)
	case !joining && len(w.LinkSignature) != 0:
		return nil, fmt.Errorf("%w: a link signature on a change that is not a Join", ErrMalformed)
	case joining:
		d.linkSig = (*[64]byte)(w.LinkSignature)
	}
	return d, nil
}

// encodeSigned is the canonical encoding of a WireSignedChange, by hand
// so that it stays the same whatever the protobuf library's version:
// fields in order, empty ones left out.
func encodeSigned(change, sig, linkSig []byte) []byte {
	var b []byte
	for i, f := range [][]byte{change, sig, linkSig} {
		if len(f) > 0 {
			b = protowire.AppendTag(b, protowire.Number(i+1), protowire.BytesType)
			b = protowire.AppendBytes(b, f)
		}
	}
	return b
}

func (c *Change) marshal() ([]byte, error) {
	a, err := c.Action.wire()
	if err != nil {
		return nil, err
	}
	w := &WireChange{GroupId: c.GroupID[:], Seq: c.Seq, Author: c.Author,
		TimeMs: uint64(max(0, c.Time.UnixMilli())), Action: a}
	if c.Seq != 0 {
		w.Prev = c.Prev[:]
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return b, nil
}

func decodeChange(b []byte) (*Change, error) {
	var w WireChange
	if err := unmarshal(b, &w); err != nil {
		return nil, err
	}
	c := &Change{Seq: w.Seq, Author: w.Author}
	if len(w.GroupId) != len(c.GroupID) {
		return nil, fmt.Errorf("%w: a group id of %d bytes, not %d", ErrMalformed, len(w.GroupId), len(c.GroupID))
	}
	c.GroupID = [16]byte(w.GroupId)
	switch {
	case w.Seq == 0 && len(w.Prev) != 0:
		return nil, fmt.Errorf("%w: the first change has a previous one", ErrMalformed)
	case w.Seq != 0 && len(w.Prev) != len(c.Prev):
		return nil, fmt.Errorf("%w: change %d does not name the previous change", ErrMalformed, w.Seq)
	case w.Seq != 0:
		c.Prev = [32]byte(w.Prev)
	}
	if err := checkUser(w.Author); err != nil {
		return nil, fmt.Errorf("author: %w", err)
	}
	if w.TimeMs > maxTimeMs {
		return nil, fmt.Errorf("%w: a time after year 9999", ErrMalformed)
	}
	c.Time = time.UnixMilli(int64(w.TimeMs)).UTC()
	a, err := actionFromWire(&w)
	if err != nil {
		return nil, err
	}
	if _, genesis := a.(Genesis); genesis != (w.Seq == 0) {
		return nil, fmt.Errorf("%w: a log starts with a Create, and has only that one", ErrMalformed)
	}
	if g, ok := a.(Genesis); ok {
		for _, m := range g.Members {
			if m.User == w.Author {
				return nil, fmt.Errorf("%w: the creator, %s, is also among the other members", ErrMalformed, m.User)
			}
		}
	}
	c.Action = a
	return c, nil
}

func actionFromWire(w *WireChange) (Action, error) {
	switch a := w.Action.(type) {
	case *WireChange_Create:
		return genesisFromWire(a.Create)
	case *WireChange_Add:
		if err := checkUser(a.Add.GetUser()); err != nil {
			return nil, err
		}
		k, err := parseKey(a.Add.GetKey())
		return Add{User: a.Add.GetUser(), Key: k}, err
	case *WireChange_Remove:
		return Remove{User: a.Remove.GetUser()}, checkUser(a.Remove.GetUser())
	case *WireChange_SetRole:
		r := Role(a.SetRole.GetRole())
		if err := checkRole(r, RoleOwner); err != nil {
			return nil, err
		}
		return SetRole{User: a.SetRole.GetUser(), Role: r}, checkUser(a.SetRole.GetUser())
	case *WireChange_Leave:
		return Leave{}, nil
	case *WireChange_SetInfo:
		return infoFromWire(a.SetInfo)
	case *WireChange_SetSettings:
		st, err := settingsFromWire(a.SetSettings)
		return SetSettings{Settings: st}, err
	case *WireChange_SetLink:
		if len(a.SetLink.GetKey()) == 0 {
			if a.SetLink.GetApproval() {
				return nil, fmt.Errorf("%w: approval for joins with the link off", ErrMalformed)
			}
			return SetLink{}, nil
		}
		k, err := parseKey(a.SetLink.GetKey())
		return SetLink{Key: &k, Approval: a.SetLink.GetApproval()}, err
	case *WireChange_Join:
		k, err := parseKey(a.Join.GetKey())
		return Join{Key: k}, err
	case *WireChange_Approve:
		return Approve{User: a.Approve.GetUser()}, checkUser(a.Approve.GetUser())
	case *WireChange_Deny:
		return Deny{User: a.Deny.GetUser()}, checkUser(a.Deny.GetUser())
	}
	return nil, fmt.Errorf("%w: a change without an action", ErrMalformed)
}

func genesisFromWire(w *WireCreate) (Genesis, error) {
	var g Genesis
	var err error
	if g.Key, err = parseKey(w.GetOwnerKey()); err != nil {
		return g, err
	}
	if err := checkName(w.GetName()); err != nil {
		return g, err
	}
	g.Name = w.GetName()
	if g.Settings, err = settingsFromWire(w.GetSettings()); err != nil {
		return g, err
	}
	if len(w.GetMembers()) > MaxMembers-1 {
		return g, fmt.Errorf("%w: a group of %d members; the most is %d", ErrTooManyMembers, len(w.GetMembers())+1, MaxMembers)
	}
	seen := make(map[string]bool, len(w.GetMembers()))
	for _, wm := range w.GetMembers() {
		m, err := memberFromWire(wm, RoleAdmin)
		if err != nil {
			return g, err
		}
		if seen[m.User] {
			return g, fmt.Errorf("%w: %s is listed twice", ErrMalformed, m.User)
		}
		seen[m.User] = true
		g.Members = append(g.Members, m)
	}
	return g, nil
}

func (m Member) wire() *WireMember {
	return &WireMember{User: m.User, Key: m.Key.Serialize(), Role: WireRole(m.Role)}
}

// memberFromWire checks a member whose role is at most maxRole.
func memberFromWire(w *WireMember, maxRole Role) (Member, error) {
	m := Member{User: w.GetUser(), Role: Role(w.GetRole())}
	if err := checkUser(m.User); err != nil {
		return m, err
	}
	if err := checkRole(m.Role, maxRole); err != nil {
		return m, fmt.Errorf("%s: %w", m.User, err)
	}
	var err error
	if m.Key, err = parseKey(w.GetKey()); err != nil {
		return m, fmt.Errorf("%s: %w", m.User, err)
	}
	return m, nil
}

func (s Settings) wire() (*WireSettings, error) {
	if s.DisappearAfter < 0 || s.DisappearAfter > MaxDisappearAfter || s.DisappearAfter%time.Second != 0 {
		return nil, fmt.Errorf("%w: messages disappear after a whole number of seconds up to %v, not %v", ErrMalformed, MaxDisappearAfter, s.DisappearAfter)
	}
	return &WireSettings{AdminsOnlySend: s.AdminsOnlySend, AdminsOnlyEditInfo: s.AdminsOnlyEditInfo,
		DisappearAfterSeconds: uint32(s.DisappearAfter / time.Second)}, nil
}

func settingsFromWire(w *WireSettings) (Settings, error) {
	d := time.Duration(w.GetDisappearAfterSeconds()) * time.Second
	if d > MaxDisappearAfter {
		return Settings{}, fmt.Errorf("%w: messages disappear after at most %v, not %v", ErrMalformed, MaxDisappearAfter, d)
	}
	return Settings{AdminsOnlySend: w.GetAdminsOnlySend(), AdminsOnlyEditInfo: w.GetAdminsOnlyEditInfo(), DisappearAfter: d}, nil
}

func infoFromWire(w *WireInfo) (SetInfo, error) {
	i := SetInfo{Name: w.GetName(), Description: w.GetDescription(), Avatar: w.GetAvatar()}
	if err := checkName(i.Name); err != nil {
		return i, err
	}
	if len(i.Description) > MaxDescription || !utf8.ValidString(i.Description) {
		return i, fmt.Errorf("%w: a description is at most %d bytes of UTF-8", ErrMalformed, MaxDescription)
	}
	if len(i.Avatar) > MaxAvatar {
		return i, fmt.Errorf("%w: an avatar pointer is at most %d bytes", ErrMalformed, MaxAvatar)
	}
	if len(i.Avatar) == 0 {
		i.Avatar = nil // one value for "no avatar"
	}
	return i, nil
}

func checkName(name string) error {
	if len(name) > MaxName || !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: a group name is at most %d bytes of UTF-8 on one line, without control characters", ErrMalformed, MaxName)
	}
	return nil
}

// checkUser requires a username in its canonical form, so that one user
// has one name in a group.
func checkUser(u string) error {
	n, err := username.Normalize(u)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if n != u {
		return fmt.Errorf("%w: %q is not written in lower case", ErrMalformed, u)
	}
	return nil
}

func checkRole(r, maxRole Role) error {
	if r < RoleMember || r > maxRole {
		return fmt.Errorf("%w: role %d is not one of member to %s", ErrMalformed, r, maxRole)
	}
	return nil
}

// smallOrder lists the u-coordinates below p of the points of small order
// on Curve25519 and its twist (the list libsodium refuses in
// crypto_scalarmult, less its two unreduced encodings, which parseKey
// refuses anyway). For a key of small order anybody can make signatures
// that verify, and the X25519 result with it is known. A test checks each
// against curve's own low-order check (RFC 7748 §6.1), which is exact but
// takes a scalar multiplication per key.
var smallOrder = [][32]byte{
	{},     // 0, order 4
	{0: 1}, // 1, order 1
	{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
		0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00}, // order 8
	{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
		0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57}, // order 8
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p-1, order 2
}

// parseKey decodes a 33-byte identity or link key and refuses the keys
// that cannot be anyone's: a u-coordinate not reduced mod p (one key, one
// encoding), and points of small order.
func parseKey(b []byte) (curve.PublicKey, error) {
	k, err := curve.ParsePublicKey(b)
	if err != nil {
		return k, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	u, err := new(field.Element).SetBytes(k[:])
	if err != nil || subtle.ConstantTimeCompare(u.Bytes(), k[:]) != 1 {
		return k, fmt.Errorf("%w: a key that is not reduced", ErrMalformed)
	}
	if slices.Contains(smallOrder, [32]byte(k)) {
		return k, fmt.Errorf("%w: a key of small order, which cannot be anyone's", ErrMalformed)
	}
	return k, nil
}

// unmarshal decodes a protobuf message and refuses unknown fields, at any
// depth: a field this version does not know could change what the
// message means.
func unmarshal(b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if hasUnknown(m.ProtoReflect()) {
		return fmt.Errorf("%w: fields this version does not know; was it made by a newer Magpie?", ErrMalformed)
	}
	return nil
}

func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil:
		case fd.IsList():
			for i := range v.List().Len() {
				found = found || hasUnknown(v.List().Get(i).Message())
			}
		default: // group.proto has no maps
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

// MarshalBinary encodes s (a WireState) for UnmarshalBinary.
func (s *State) MarshalBinary() ([]byte, error) {
	st, err := s.Settings.wire()
	if err != nil {
		return nil, err
	}
	w := &WireState{Id: s.ID[:], Seq: s.Seq, Head: s.Head[:], Settings: st,
		Info:    &WireInfo{Name: s.Name, Description: s.Description, Avatar: s.Avatar},
		Members: sortedWire(s.Members), Requests: sortedWire(s.Requests), LinkApproval: s.LinkApproval}
	if s.LinkKey != nil {
		w.LinkKey = s.LinkKey.Serialize()
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return b, nil
}

func sortedWire(ms map[string]Member) []*WireMember {
	out := make([]*WireMember, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.wire())
	}
	slices.SortFunc(out, func(a, b *WireMember) int { return cmp.Compare(a.User, b.User) })
	return out
}

// UnmarshalBinary decodes a state that MarshalBinary made. It checks every
// bound and invariant a state reached by Apply has, and leaves s unchanged
// on error.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) > MaxStateSize {
		return fmt.Errorf("%w: a state of %d bytes; the most is %d", ErrMalformed, len(b), MaxStateSize)
	}
	var w WireState
	if err := unmarshal(b, &w); err != nil {
		return err
	}
	if len(w.Id) != 16 || len(w.Head) != 32 {
		return fmt.Errorf("%w: a state's id or head has the wrong size", ErrMalformed)
	}
	info, err := infoFromWire(w.GetInfo())
	if err != nil {
		return err
	}
	n := State{ID: [16]byte(w.Id), Seq: w.Seq, Head: [32]byte(w.Head),
		Name: info.Name, Description: info.Description, Avatar: info.Avatar, LinkApproval: w.LinkApproval}
	if n.Settings, err = settingsFromWire(w.GetSettings()); err != nil {
		return err
	}
	if n.Members, err = membersFromWire(w.Members, MaxMembers, RoleOwner, ErrTooManyMembers); err != nil {
		return err
	}
	if n.Requests, err = membersFromWire(w.Requests, MaxRequests, RoleMember, ErrTooManyRequests); err != nil {
		return err
	}
	owners := 0
	for _, m := range n.Members {
		if m.Role == RoleOwner {
			owners++
		}
		if _, ok := n.Requests[m.User]; ok {
			return fmt.Errorf("%w: %s is both a member and asking to join", ErrMalformed, m.User)
		}
	}
	if len(n.Members) > 0 && owners != 1 {
		return fmt.Errorf("%w: a group with %d owners", ErrMalformed, owners)
	}
	if len(w.LinkKey) > 0 {
		k, err := parseKey(w.LinkKey)
		if err != nil {
			return err
		}
		n.LinkKey = &k
	}
	if n.LinkKey == nil && (n.LinkApproval || len(n.Requests) > 0) {
		return fmt.Errorf("%w: requests to join or approval without a link", ErrMalformed)
	}
	*s = n
	return nil
}

// membersFromWire decodes a sorted list of at most limit members.
func membersFromWire(ws []*WireMember, limit int, maxRole Role, tooMany error) (map[string]Member, error) {
	if len(ws) > limit {
		return nil, fmt.Errorf("%w: %d, the most is %d", tooMany, len(ws), limit)
	}
	ms := make(map[string]Member, len(ws))
	for i, w := range ws {
		m, err := memberFromWire(w, maxRole)
		if err != nil {
			return nil, err
		}
		if i > 0 && ws[i-1].User >= m.User {
			return nil, fmt.Errorf("%w: members not in order, or listed twice", ErrMalformed)
		}
		ms[m.User] = m
	}
	return ms, nil
}
