package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
)

// Groups. A group's membership is its log of signed changes (package
// group), which this client verifies and replays itself: the server
// orders the log and fans messages out, but it cannot add, remove or
// promote anyone. A group is a conversation like any other, whose peer is
// GroupID.Peer ("group:" and the id in hex): Send, SendFile, History,
// MarkRead and Typing take it. Messages go out once, encrypted with this
// device's sender key (Sender Keys), which reaches each member's devices
// over the 1:1 sessions first (groupsend.go).

// GroupID names a group: 16 random bytes.
type GroupID [16]byte

// groupPeerPrefix starts a group conversation's peer; usernames cannot
// contain ':', so it never names a user.
const groupPeerPrefix = "group:"

func (g GroupID) String() string { return hex.EncodeToString(g[:]) }

// Peer is the group's conversation, as History and Send take it.
func (g GroupID) Peer() string { return groupPeerPrefix + g.String() }

// ParseGroupID reads a group id: its hex form, or its conversation's peer.
func ParseGroupID(s string) (GroupID, error) {
	var g GroupID
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), groupPeerPrefix))
	if err != nil || len(b) != len(g) {
		return g, fmt.Errorf("%w: %q is not a group id (32 hexadecimal digits)", ErrUnknownGroup, s)
	}
	return GroupID(b), nil
}

// groupOf reports whether peer is a group's conversation, and which.
func groupOf(peer string) (GroupID, bool) {
	if !strings.HasPrefix(peer, groupPeerPrefix) {
		return GroupID{}, false
	}
	g, err := ParseGroupID(peer)
	return g, err == nil
}

var (
	// ErrUnknownGroup: no group with that id on this device.
	ErrUnknownGroup = errors.New("no such group here")
	// ErrNotMember: this account is not in the group (any more), or the
	// server knows no such group.
	ErrNotMember = clientconn.ErrNotMember
	// ErrForbidden: the group's rules do not allow it (the role it needs,
	// or only admins may send).
	ErrForbidden = clientconn.ErrForbidden
	// ErrGroupRefused: this client refused a change the server delivered
	// for the group (a bad signature, a change by someone without the
	// role): the group stays as it was before, and stops following the
	// server's log. Group.Refused says what was refused.
	ErrGroupRefused = errors.New("this group's log was refused")
)

// Roles, as Group and GroupMember report them.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// GroupMember is a member of a group.
type GroupMember struct {
	User string
	Role string
	// KeyChanged: the identity key the group's log attests for User is not
	// the one this device holds for them (compare safety numbers).
	KeyChanged bool
}

// GroupSettings are a group's settings.
type GroupSettings struct {
	AdminsOnlySend     bool // only admins and the owner send
	AdminsOnlyEditInfo bool // only admins and the owner change the name and description
	// DisappearAfter is how long the group's messages stay (0: for ever).
	DisappearAfter time.Duration
}

// Group is a group as this device knows it.
type Group struct {
	ID          GroupID
	Peer        string // its conversation
	Name        string
	Description string
	// Members: the owner, then the admins, then the members, each by name.
	Members  []GroupMember
	Requests []string // users asking to join, by name
	Settings GroupSettings
	// LinkOn: joining by link is on; LinkApproval: joins wait for an
	// admin. Link is the link's text when this device made it.
	LinkOn       bool
	LinkApproval bool
	Link         string
	// HasAvatar: the group has a picture (GroupAvatar).
	HasAvatar bool
	Role      string // this account's role; "" when not a member
	CanSend   bool
	Seq       uint64 // the log's last change applied here
	// Refused says which change this device refused, if one was: the
	// group stays as it was before it (ErrGroupRefused).
	Refused string
}

// Namespaces of groups (sealed).
const (
	nsGroup      = "group"       // hex id → groupRecord
	nsGroupState = "group.state" // hex id → the group.State (MarshalBinary)
	nsGroupGiven = "group.given" // hex id/hex distribution id/user → {}: who has this device's sender key
	nsGroupAsked = "group.asked" // hex id/user → Unix ms: when this device last asked user for their sender key
)

// groupRecord is what this device keeps of a group beside its state.
type groupRecord struct {
	Seq  uint64 `json:"seq"`
	Head []byte `json:"head"`
	// Dist is the distribution id this device sends on (nil until the
	// first send, and again after a member leaves: a new one then).
	Dist []byte `json:"dist,omitempty"`
	// Refused: a change from the server did not verify (see Group.Refused).
	Refused string `json:"refused,omitempty"`
	Link    string `json:"link,omitempty"` // the link this device made
	Name    string `json:"name,omitempty"` // for the conversation list
	// DisappearMs is the group's setting, for each message stored.
	DisappearMs int64 `json:"disappear_ms,omitempty"`
}

// stateCache keeps decoded group states: every group message needs its
// group's members, and decoding a 1,024-member state costs more than the
// message. States are values, so sharing one is safe; an entry is used only
// while its seq and head are the stored ones.
type stateCache struct {
	mu sync.Mutex
	m  map[GroupID]*group.State
}

const maxCachedStates = 256

func (sc *stateCache) get(id GroupID, seq uint64, head []byte) *group.State {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	st := sc.m[id]
	if st == nil || st.Seq != seq || string(st.Head[:]) != string(head) {
		return nil
	}
	return st
}

func (sc *stateCache) put(id GroupID, st *group.State) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.m == nil || len(sc.m) >= maxCachedStates {
		sc.m = map[GroupID]*group.State{}
	}
	sc.m[id] = st
}

// loadGroup reads a group's record and state; nil, nil, nil if unknown.
func (c *Client) loadGroup(t sealedTx, id GroupID) (*groupRecord, *group.State, error) {
	var rec groupRecord
	if ok, err := getJSON(t, nsGroup, id.String(), &rec); err != nil || !ok {
		return nil, nil, err
	}
	if st := c.states.get(id, rec.Seq, rec.Head); st != nil {
		return &rec, st, nil
	}
	b, err := t.Get(nsGroupState, id.String())
	if err != nil {
		return nil, nil, err
	}
	st := new(group.State)
	if err := st.UnmarshalBinary(b); err != nil {
		return nil, nil, fmt.Errorf("%w: group %s: %w", ErrCorrupt, id, err)
	}
	c.states.put(id, st)
	return &rec, st, nil
}

// saveGroup writes a group's record and, when it changed, its state.
func (c *Client) saveGroup(t sealedTx, id GroupID, rec *groupRecord, st *group.State, stateChanged bool) error {
	rec.Seq, rec.Head, rec.Name = st.Seq, st.Head[:], st.Name
	rec.DisappearMs = st.Settings.DisappearAfter.Milliseconds()
	if stateChanged {
		b, err := st.MarshalBinary()
		if err != nil {
			return err
		}
		if err := t.Put(nsGroupState, id.String(), b); err != nil {
			return err
		}
	}
	if err := putJSON(t, nsGroup, id.String(), rec); err != nil {
		return err
	}
	c.states.put(id, st)
	return nil
}

func roleName(r group.Role) string {
	switch r {
	case group.RoleOwner:
		return RoleOwner
	case group.RoleAdmin:
		return RoleAdmin
	case group.RoleMember:
		return RoleMember
	}
	return ""
}

// publicGroup is what the application sees of a group.
func (c *Client) publicGroup(t sealedTx, id GroupID, rec *groupRecord, st *group.State) (*Group, error) {
	me, _ := c.Account()
	g := &Group{
		ID: id, Peer: id.Peer(), Name: st.Name, Description: st.Description,
		Settings: GroupSettings{
			AdminsOnlySend: st.Settings.AdminsOnlySend, AdminsOnlyEditInfo: st.Settings.AdminsOnlyEditInfo,
			DisappearAfter: st.Settings.DisappearAfter,
		},
		LinkOn: st.LinkKey != nil, LinkApproval: st.LinkApproval, HasAvatar: st.Avatar != nil,
		Role: roleName(st.Role(me.User)), CanSend: st.CanSend(me.User), Seq: st.Seq, Refused: rec.Refused,
	}
	if g.LinkOn {
		g.Link = rec.Link
	}
	for _, m := range st.Members {
		gm := GroupMember{User: m.User, Role: roleName(m.Role)}
		contact, err := e2e.LoadContact(t, m.User)
		if err != nil {
			return nil, err
		}
		if contact != nil && contact.Identity != m.Key && m.User != me.User {
			gm.KeyChanged = true
		}
		g.Members = append(g.Members, gm)
	}
	rank := map[string]int{RoleOwner: 0, RoleAdmin: 1, RoleMember: 2}
	slices.SortFunc(g.Members, func(a, b GroupMember) int {
		if d := rank[a.Role] - rank[b.Role]; d != 0 {
			return d
		}
		return strings.Compare(a.User, b.User)
	})
	for u := range st.Requests {
		g.Requests = append(g.Requests, u)
	}
	slices.Sort(g.Requests)
	return g, nil
}

// Group returns a group as this device knows it (ErrUnknownGroup if it
// does not).
func (c *Client) Group(ctx context.Context, id GroupID) (*Group, error) {
	var g *Group
	err := c.view(ctx, func(t sealedTx) error {
		rec, st, err := c.loadGroup(t, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("%w: %s", ErrUnknownGroup, id)
		}
		g, err = c.publicGroup(t, id, rec, st)
		return err
	})
	return g, err
}

// Groups lists the groups this device knows, by name (those it left or
// was removed from too: Role is "" for them).
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	var out []Group
	err := c.view(ctx, func(t sealedTx) error {
		var ids []GroupID
		err := t.Scan(nsGroup, "", "", false, func(k string, _ []byte) (bool, error) {
			id, err := ParseGroupID(k)
			ids = append(ids, id)
			return true, err
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			rec, st, err := c.loadGroup(t, id)
			if err != nil {
				return err
			}
			g, err := c.publicGroup(t, id, rec, st)
			if err != nil {
				return err
			}
			out = append(out, *g)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Group) int {
		if d := strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); d != 0 {
			return d
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
	return out, err
}

// groupName is the name of the group whose conversation is peer, for the
// conversation list.
func groupName(t sealedTx, id GroupID) (string, error) {
	var rec groupRecord
	_, err := getJSON(t, nsGroup, id.String(), &rec)
	return rec.Name, err
}

// memberKey is the identity key this device holds for user, for
// attesting it in the group's log: the contact's (a verified one only if
// it did not change since), or the server's answer for a user it has not
// talked to yet.
func (c *Client) memberKey(ctx context.Context, conn *clientconn.Conn, user string) (curve.PublicKey, error) {
	var contact *e2e.Contact
	err := c.view(ctx, func(t sealedTx) error {
		var err error
		contact, err = e2e.LoadContact(t, user)
		return err
	})
	if err != nil {
		return curve.PublicKey{}, err
	}
	if contact != nil {
		if contact.Pending != nil {
			return curve.PublicKey{}, fmt.Errorf("%s's safety number changed since you verified it: %w", user, ErrIdentityChanged)
		}
		return contact.Identity, nil
	}
	u, err := conn.Lookup(ctx, user)
	if err != nil {
		return curve.PublicKey{}, fmt.Errorf("%s: %w", user, err)
	}
	if len(u.IdentityKey) == 0 {
		return curve.PublicKey{}, fmt.Errorf("%s has not set up end-to-end encryption yet: %w", user, ErrNoKeys)
	}
	return curve.ParsePublicKey(u.IdentityKey)
}
