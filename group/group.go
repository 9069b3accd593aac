package group

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
)

// Limits on everything a change or a state holds.
const (
	// MaxMembers is the most members a group has, its owner included
	// (WhatsApp's limit).
	MaxMembers = 1024
	// MaxRequests is the most pending requests to join.
	MaxRequests = 1024
	// MaxName, MaxDescription and MaxAvatar bound the group's info, in
	// bytes. The avatar is an opaque attachment pointer.
	MaxName        = 64
	MaxDescription = 1024
	MaxAvatar      = 2048
	// MaxDisappearAfter bounds Settings.DisappearAfter.
	MaxDisappearAfter = 365 * 24 * time.Hour
	// MaxChangeSize bounds a serialized WireSignedChange. A Create of
	// MaxMembers members with the longest names takes about 80 KiB.
	MaxChangeSize = 128 << 10
	// MaxStateSize bounds a serialized State.
	MaxStateSize = 256 << 10
)

// domain separates the signatures of changes from any other use of an
// identity key.
const domain = "magpie group change v1\x00"

// Errors that callers branch on. Every error from decoding, verifying or
// applying a change (or a state, or a link) wraps one of them and says,
// after it, what was refused and why.
var (
	// ErrMalformed: the bytes are not a change (or a state, or a link) of
	// this version, or a field is out of bounds.
	ErrMalformed = errors.New("group: malformed")
	// ErrUnknownGroup: the change is for another group.
	ErrUnknownGroup = errors.New("group: for another group")
	// ErrOutOfOrder: the change's seq or prev is not the state's next seq
	// and head: a replayed, forked or out-of-order change. Its author
	// proposes again on the current state.
	ErrOutOfOrder = errors.New("group: not on the current head")
	// ErrBadSignature: the change is not signed by the key the group holds
	// for its author (or, for a Join, by the group's link).
	ErrBadSignature = errors.New("group: bad signature")
	// ErrForbidden: the author's role does not allow the change.
	ErrForbidden = errors.New("group: not allowed")
	// ErrNotMember: the author, or the user the change names, is not a
	// member. It is a kind of ErrForbidden: errors.Is(err, ErrForbidden)
	// holds too.
	ErrNotMember error = &subError{"group: not a member", ErrForbidden}
	// ErrTooManyMembers: the group already has MaxMembers members.
	ErrTooManyMembers = errors.New("group: full")
	// ErrTooManyRequests: MaxRequests requests are already pending.
	ErrTooManyRequests = errors.New("group: too many pending requests")
	// ErrNoChange: the change would change nothing (already a member,
	// already that role, no such request, the same info...).
	ErrNoChange = errors.New("group: nothing to change")
)

// subError is a sentinel that is also a kind of another.
type subError struct {
	msg    string
	parent error
}

func (e *subError) Error() string { return e.msg }
func (e *subError) Unwrap() error { return e.parent }

// Role is a member's role. The zero Role is no role.
type Role uint8

// Roles, in increasing order of power.
const (
	RoleMember Role = 1
	RoleAdmin  Role = 2
	RoleOwner  Role = 3
)

func (r Role) String() string {
	switch r {
	case RoleMember:
		return "member"
	case RoleAdmin:
		return "admin"
	case RoleOwner:
		return "owner"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Member is a user in a group, or asking to join it.
type Member struct {
	User string          // a canonical username (package username)
	Key  curve.PublicKey // identity key, as the log attests it
	Role Role            // RoleMember for a pending request
}

// Settings are a group's settings.
type Settings struct {
	// AdminsOnlySend: only admins and the owner send messages.
	AdminsOnlySend bool
	// AdminsOnlyEditInfo: only admins and the owner change the info.
	AdminsOnlyEditInfo bool
	// DisappearAfter is how long messages stay; 0 for ever. It is a whole
	// number of seconds, at most MaxDisappearAfter.
	DisappearAfter time.Duration
}

// Change is a decoded change: verified when Apply returns it, not when
// Decode does.
type Change struct {
	GroupID [16]byte
	Seq     uint64
	Prev    [32]byte // the head it was made on; zero for seq 0
	Author  string
	Time    time.Time // the author's clock: for display only
	Action  Action
}

// State is a group after the change at Seq. States are values: Apply
// returns a new State and never changes the one it is called on, so
// callers must not change a State's maps or slices either.
type State struct {
	ID          [16]byte
	Seq         uint64
	Head        [32]byte // SHA-256 of the signed change at Seq: the next one's Prev
	Name        string
	Description string
	Avatar      []byte
	Members     map[string]Member // by user; empty once the group has ended
	Requests    map[string]Member // pending requests to join, by user
	Settings    Settings
	// LinkKey is the public key of the group's join link, or nil when
	// joining by link is off. LinkApproval: joins wait for an admin.
	LinkKey      *curve.PublicKey
	LinkApproval bool
}

// NewID returns a new random group id.
func NewID(random io.Reader) ([16]byte, error) {
	var id [16]byte
	if _, err := io.ReadFull(random, id[:]); err != nil {
		return id, fmt.Errorf("group: reading randomness: %w", err)
	}
	return id, nil
}

// Create makes a new group: it returns the signed first change of its log
// (seq 0) and the group's state. author becomes the owner, with key as
// identity key; members are the others (at most MaxMembers-1), each with
// RoleMember or RoleAdmin and the identity key the author attests for
// them. now is the time the change shows; random is a secure source (it
// feeds the signature).
func Create(id [16]byte, author string, key curve.KeyPair, name string, members []Member, settings Settings, now time.Time, random io.Reader) ([]byte, *State, error) {
	c := &Change{GroupID: id, Author: author, Time: now,
		Action: Genesis{Key: key.Public, Name: name, Members: members, Settings: settings}}
	b, err := sign(c, key.Private, nil, random)
	if err != nil {
		return nil, nil, err
	}
	s, err := open(b, &key.Public)
	if err != nil {
		return nil, nil, err
	}
	return b, s, nil
}

// Propose makes the signed change by which author, whose identity key is
// key, does action on s (seq s.Seq+1, prev s.Head), for the server to
// order. It fails, with the error Apply would return, if s would not
// accept the change; Create and Join make the changes of their own kind.
func (s *State) Propose(author string, key curve.KeyPair, action Action, now time.Time, random io.Reader) ([]byte, error) {
	switch action.(type) {
	case Add, Remove, SetRole, Leave, SetInfo, SetSettings, SetLink, Approve, Deny:
		return s.propose(author, key.Private, nil, action, now, random)
	}
	return nil, fmt.Errorf("%w: Propose makes no %T (Create and State.Join make theirs; actions are values, not pointers)", ErrMalformed, action)
}

// Join makes the signed change by which user, whose identity key is key,
// joins s with the group's link: immediately, or as a pending request when
// the group's link needs approval.
func (s *State) Join(user string, key curve.KeyPair, link LinkSecret, now time.Time, random io.Reader) ([]byte, error) {
	if link.Group != s.ID {
		return nil, fmt.Errorf("%w: the link is for another group", ErrUnknownGroup)
	}
	return s.propose(user, key.Private, &link.Key, Join{Key: key.Public}, now, random)
}

func (s *State) propose(author string, key curve.PrivateKey, link *curve.PrivateKey, action Action, now time.Time, random io.Reader) ([]byte, error) {
	if s.Seq == math.MaxUint64 {
		return nil, fmt.Errorf("%w: the log is full", ErrOutOfOrder)
	}
	c := &Change{GroupID: s.ID, Seq: s.Seq + 1, Prev: s.Head, Author: author, Time: now, Action: action}
	b, err := sign(c, key, link, random)
	if err != nil {
		return nil, err
	}
	if _, _, err := s.check(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Apply verifies the signed change b against s and returns the state after
// it, and the change. It checks everything: the encoding and its bounds,
// the group, that the change is on s's head (seq and prev), the author's
// signature with the key s holds for them (and the link's for a Join), and
// that the author's role allows the change. On error s is unchanged (it
// always is) and no state is returned.
func (s *State) Apply(b []byte) (*State, *Change, error) {
	c, head, err := s.check(b)
	if err != nil {
		return nil, nil, err
	}
	n := *s
	n.Members = maps.Clone(s.Members)
	n.Requests = maps.Clone(s.Requests)
	n.effect(c, head)
	return &n, c, nil
}

// Replay verifies a whole log, from its Create, and returns the state
// after its last change. creatorKey is the creator's identity key as the
// caller knows it; nil trusts the key in the Create (trust on first use).
// Replay reaches the same state as applying the changes one by one.
func Replay(log [][]byte, creatorKey *curve.PublicKey) (*State, error) {
	if len(log) == 0 {
		return nil, fmt.Errorf("%w: an empty log", ErrMalformed)
	}
	s, err := open(log[0], creatorKey)
	if err != nil {
		return nil, fmt.Errorf("change 0: %w", err)
	}
	for i, b := range log[1:] {
		c, head, err := s.check(b)
		if err != nil {
			return nil, fmt.Errorf("change %d: %w", i+1, err)
		}
		s.effect(c, head) // s is Replay's own: no copy needed.
	}
	return s, nil
}

// CanSend reports whether user may send messages to the group.
func (s *State) CanSend(user string) bool {
	m, ok := s.Members[user]
	return ok && (!s.Settings.AdminsOnlySend || m.Role >= RoleAdmin)
}

// Role returns user's role, or 0 if user is not a member.
func (s *State) Role(user string) Role { return s.Members[user].Role }

// Owner returns the owner's username, or "" once the group has ended.
func (s *State) Owner() string {
	for u, m := range s.Members {
		if m.Role == RoleOwner {
			return u
		}
	}
	return ""
}

// open verifies the first change of a log and returns the group it
// creates.
func open(b []byte, creatorKey *curve.PublicKey) (*State, error) {
	d, err := decode(b)
	if err != nil {
		return nil, err
	}
	g, ok := d.change.Action.(Genesis)
	if !ok {
		return nil, fmt.Errorf("%w: a log starts with a Create", ErrOutOfOrder)
	}
	if !xeddsa.Verify(g.Key, d.message(), d.sig) {
		return nil, fmt.Errorf("%w: the Create is not signed by the key it names", ErrBadSignature)
	}
	if creatorKey != nil && *creatorKey != g.Key {
		return nil, fmt.Errorf("%w: the group was created with a key that is not the creator's identity key", ErrBadSignature)
	}
	c := d.change
	s := &State{ID: c.GroupID, Head: sha256.Sum256(b), Name: g.Name, Settings: g.Settings,
		Members:  make(map[string]Member, len(g.Members)+1),
		Requests: map[string]Member{}}
	s.Members[c.Author] = Member{User: c.Author, Key: g.Key, Role: RoleOwner}
	for _, m := range g.Members {
		s.Members[m.User] = m
	}
	return s, nil
}

// check verifies b against s and returns the change and its hash, the new
// head. It changes nothing.
func (s *State) check(b []byte) (*Change, [32]byte, error) {
	d, err := decode(b)
	if err != nil {
		return nil, [32]byte{}, err
	}
	c := d.change
	if c.GroupID != s.ID {
		return nil, [32]byte{}, fmt.Errorf("%w: the change is for group %x, not %x", ErrUnknownGroup, c.GroupID, s.ID)
	}
	if s.Seq == math.MaxUint64 || c.Seq != s.Seq+1 || c.Prev != s.Head {
		return nil, [32]byte{}, fmt.Errorf("%w: change %d was made on another state than the group's change %d (replayed, forked or out of order); propose it again", ErrOutOfOrder, c.Seq, s.Seq)
	}
	if err := s.authenticate(d); err != nil {
		return nil, [32]byte{}, err
	}
	if err := s.permit(c); err != nil {
		return nil, [32]byte{}, err
	}
	return c, sha256.Sum256(b), nil
}

// authenticate checks the signatures of d: the author's, with the key s
// holds for them (a joiner's with the key the Join states), and for a Join
// the link's.
func (s *State) authenticate(d *decoded) error {
	c := d.change
	j, joining := c.Action.(Join)
	if !joining {
		m, ok := s.Members[c.Author]
		if !ok {
			return fmt.Errorf("%w: %s is not a member of the group and cannot change it", ErrNotMember, c.Author)
		}
		if !xeddsa.Verify(m.Key, d.message(), d.sig) {
			return fmt.Errorf("%w: the change is not signed by %s's identity key in this group", ErrBadSignature, c.Author)
		}
		return nil
	}
	if !xeddsa.Verify(j.Key, d.message(), d.sig) {
		return fmt.Errorf("%w: the Join is not signed by the key it states for %s", ErrBadSignature, c.Author)
	}
	if s.LinkKey == nil {
		return fmt.Errorf("%w: joining by link is off in this group; ask an admin for a new link", ErrForbidden)
	}
	if d.linkSig == nil || !xeddsa.Verify(*s.LinkKey, d.message(), *d.linkSig) {
		return fmt.Errorf("%w: the Join is not signed with the group's current link; the link may have been reset", ErrBadSignature)
	}
	return nil
}

// sign encodes c and signs it with key (and with link, for a Join).
func sign(c *Change, key curve.PrivateKey, link *curve.PrivateKey, random io.Reader) ([]byte, error) {
	cb, err := c.marshal()
	if err != nil {
		return nil, err
	}
	msg := append([]byte(domain), cb...)
	sig, err := xsign(key, msg, random)
	if err != nil {
		return nil, err
	}
	var linkSig []byte
	if link != nil {
		if linkSig, err = xsign(*link, msg, random); err != nil {
			return nil, err
		}
	}
	return encodeSigned(cb, sig, linkSig), nil
}

func xsign(key curve.PrivateKey, msg []byte, random io.Reader) ([]byte, error) {
	var z [64]byte
	if _, err := io.ReadFull(random, z[:]); err != nil {
		return nil, fmt.Errorf("group: reading randomness: %w", err)
	}
	sig := xeddsa.Sign(key, msg, z)
	return sig[:], nil
}
