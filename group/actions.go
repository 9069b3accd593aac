package group

import (
	"bytes"
	"fmt"

	"github.com/magpie-im/magpie/e2e/curve"
)

// Action is what a change does: one of Genesis, Add, Remove, SetRole,
// Leave, SetInfo, SetSettings, SetLink, Join, Approve and Deny. The set is
// closed. The package documentation's table says who may do what.
type Action interface {
	wire() (isWireChange_Action, error)
}

// Genesis is the action of a log's first change, which Create makes: its
// author becomes the owner, with Key as identity key, and Members (the
// others, each a member or an admin) join with the keys the author attests.
type Genesis struct {
	Key      curve.PublicKey
	Name     string
	Members  []Member
	Settings Settings
}

// Add adds User with the identity key Key that the author attests, or,
// when User is a member, replaces their key (their role stays).
type Add struct {
	User string
	Key  curve.PublicKey
}

// Remove removes a member.
type Remove struct{ User string }

// SetRole gives a member a role. Role RoleOwner transfers ownership: the
// owner becomes an admin.
type SetRole struct {
	User string
	Role Role
}

// Leave is the author leaving the group.
type Leave struct{}

// SetInfo replaces the group's name, description and avatar (all three:
// copy those that stay from the state).
type SetInfo struct {
	Name        string
	Description string
	Avatar      []byte
}

// SetSettings replaces the group's settings.
type SetSettings struct{ Settings Settings }

// SetLink turns joining by link on, with the public key of a new link
// (LinkSecret.PublicKey), or off, with a nil Key. Approval: joins wait for
// an admin's Approve.
type SetLink struct {
	Key      *curve.PublicKey
	Approval bool
}

// Join is its author joining with the group's link, which State.Join
// makes; Key is the joiner's identity key.
type Join struct{ Key curve.PublicKey }

// Approve makes a pending request a membership.
type Approve struct{ User string }

// Deny drops a pending request.
type Deny struct{ User string }

func (a Genesis) wire() (isWireChange_Action, error) {
	ms := make([]*WireMember, len(a.Members))
	for i, m := range a.Members {
		ms[i] = m.wire()
	}
	st, err := a.Settings.wire()
	if err != nil {
		return nil, err
	}
	return &WireChange_Create{Create: &WireCreate{OwnerKey: a.Key.Serialize(), Name: a.Name, Members: ms, Settings: st}}, nil
}

func (a Add) wire() (isWireChange_Action, error) {
	return &WireChange_Add{Add: &WireAdd{User: a.User, Key: a.Key.Serialize()}}, nil
}

func (a Remove) wire() (isWireChange_Action, error) {
	return &WireChange_Remove{Remove: &WireUser{User: a.User}}, nil
}

func (a SetRole) wire() (isWireChange_Action, error) {
	return &WireChange_SetRole{SetRole: &WireSetRole{User: a.User, Role: WireRole(a.Role)}}, nil
}

func (Leave) wire() (isWireChange_Action, error) {
	return &WireChange_Leave{Leave: &WireLeave{}}, nil
}

func (a SetInfo) wire() (isWireChange_Action, error) {
	return &WireChange_SetInfo{SetInfo: &WireInfo{Name: a.Name, Description: a.Description, Avatar: a.Avatar}}, nil
}

func (a SetSettings) wire() (isWireChange_Action, error) {
	st, err := a.Settings.wire()
	if err != nil {
		return nil, err
	}
	return &WireChange_SetSettings{SetSettings: st}, nil
}

func (a SetLink) wire() (isWireChange_Action, error) {
	w := &WireSetLink{Approval: a.Approval}
	if a.Key != nil {
		w.Key = a.Key.Serialize()
	}
	return &WireChange_SetLink{SetLink: w}, nil
}

func (a Join) wire() (isWireChange_Action, error) {
	return &WireChange_Join{Join: &WireJoin{Key: a.Key.Serialize()}}, nil
}

func (a Approve) wire() (isWireChange_Action, error) {
	return &WireChange_Approve{Approve: &WireUser{User: a.User}}, nil
}

func (a Deny) wire() (isWireChange_Action, error) {
	return &WireChange_Deny{Deny: &WireUser{User: a.User}}, nil
}

// permit checks that the author of c, already authenticated, may make c
// on s. It changes nothing.
func (s *State) permit(c *Change) error {
	if _, ok := c.Action.(Join); ok {
		return s.permitJoin(c)
	}
	author := s.Members[c.Author] // authenticate made sure it exists
	admin := author.Role >= RoleAdmin
	switch a := c.Action.(type) {
	case Add:
		m, ok := s.Members[a.User]
		switch {
		case !ok && !admin:
			return fmt.Errorf("%w: only admins add members, and %s is %s", ErrForbidden, c.Author, article(author.Role))
		case !ok && len(s.Members) >= MaxMembers:
			return fmt.Errorf("%w: the group already has %d members, the most it can have", ErrTooManyMembers, MaxMembers)
		case !ok:
			return nil
		case m.Key == a.Key:
			return fmt.Errorf("%w: %s is already a member with this key", ErrNoChange, a.User)
		case a.User != c.Author && !outranks(author, m):
			return fmt.Errorf("%w: %s (%s) cannot change the key of %s (%s); only the member themself or an admin above them can", ErrForbidden, c.Author, author.Role, a.User, m.Role)
		}
	case Remove:
		m, ok := s.Members[a.User]
		switch {
		case a.User == c.Author:
			return fmt.Errorf("%w: %s cannot remove themself; leave the group instead", ErrForbidden, c.Author)
		case !ok:
			return fmt.Errorf("%w: %s is not in the group", ErrNotMember, a.User)
		case m.Role == RoleOwner:
			return fmt.Errorf("%w: nobody removes the owner, %s", ErrForbidden, a.User)
		case !outranks(author, m):
			return fmt.Errorf("%w: %s (%s) cannot remove %s (%s); %s", ErrForbidden, c.Author, author.Role, a.User, m.Role, whoRemoves(m.Role))
		}
	case SetRole:
		return s.permitRole(c.Author, author, a)
	case Leave:
		if author.Role == RoleOwner && len(s.Members) > 1 {
			return fmt.Errorf("%w: the owner leaves only as the last member; make another member the owner first", ErrForbidden)
		}
	case SetInfo:
		if s.Settings.AdminsOnlyEditInfo && !admin {
			return fmt.Errorf("%w: only admins change the group's info, and %s is %s", ErrForbidden, c.Author, article(author.Role))
		}
		if a.Name == s.Name && a.Description == s.Description && bytes.Equal(a.Avatar, s.Avatar) {
			return fmt.Errorf("%w: the group's info is already this", ErrNoChange)
		}
	case SetSettings:
		if !admin {
			return fmt.Errorf("%w: only admins change the group's settings, and %s is %s", ErrForbidden, c.Author, article(author.Role))
		}
		if a.Settings == s.Settings {
			return fmt.Errorf("%w: the group's settings are already these", ErrNoChange)
		}
	case SetLink:
		if !admin {
			return fmt.Errorf("%w: only admins change the group's link, and %s is %s", ErrForbidden, c.Author, article(author.Role))
		}
		if sameKey(a.Key, s.LinkKey) && a.Approval == s.LinkApproval {
			return fmt.Errorf("%w: the group's link is already this", ErrNoChange)
		}
	case Approve:
		return s.permitDecision(c.Author, author, a.User, true)
	case Deny:
		return s.permitDecision(c.Author, author, a.User, false)
	default: // Genesis: decode keeps it at seq 0, which check refuses.
		return fmt.Errorf("%w: a %T is not a change to an existing group", ErrMalformed, a)
	}
	return nil
}

func (s *State) permitRole(authorName string, author Member, a SetRole) error {
	m, ok := s.Members[a.User]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s is not in the group", ErrNotMember, a.User)
	case m.Role == a.Role:
		return fmt.Errorf("%w: %s is already %s", ErrNoChange, a.User, article(a.Role))
	case m.Role == RoleOwner:
		return fmt.Errorf("%w: nobody demotes the owner, %s; the owner makes another member the owner", ErrForbidden, a.User)
	case a.Role == RoleAdmin && author.Role < RoleAdmin:
		return fmt.Errorf("%w: only admins make admins, and %s is %s", ErrForbidden, authorName, article(author.Role))
	case a.Role == RoleMember && author.Role != RoleOwner:
		return fmt.Errorf("%w: only the owner demotes an admin", ErrForbidden)
	case a.Role == RoleOwner && author.Role != RoleOwner:
		return fmt.Errorf("%w: only the owner hands over ownership", ErrForbidden)
	}
	return nil
}

// permitDecision checks an Approve (approve) or a Deny of user's request.
func (s *State) permitDecision(authorName string, author Member, user string, approve bool) error {
	switch {
	case author.Role < RoleAdmin:
		return fmt.Errorf("%w: only admins decide on requests to join, and %s is %s", ErrForbidden, authorName, article(author.Role))
	case s.Requests[user].User == "":
		return fmt.Errorf("%w: %s has no pending request", ErrNoChange, user)
	case approve && len(s.Members) >= MaxMembers:
		return fmt.Errorf("%w: the group already has %d members, the most it can have", ErrTooManyMembers, MaxMembers)
	}
	return nil
}

func (s *State) permitJoin(c *Change) error {
	j := c.Action.(Join)
	m, member := s.Members[c.Author]
	_, pending := s.Requests[c.Author]
	switch {
	case len(s.Members) == 0:
		return fmt.Errorf("%w: the group has ended", ErrForbidden)
	case member && m.Key == j.Key:
		return fmt.Errorf("%w: %s is already a member", ErrNoChange, c.Author)
	case member:
		return fmt.Errorf("%w: %s is already a member with another key; an admin adds them again with the new key", ErrForbidden, c.Author)
	case pending && s.LinkApproval:
		return fmt.Errorf("%w: %s's request to join is already waiting for an admin", ErrNoChange, c.Author)
	case s.LinkApproval && len(s.Requests) >= MaxRequests:
		return fmt.Errorf("%w: %d requests to join are already waiting for an admin; try again later", ErrTooManyRequests, MaxRequests)
	case !s.LinkApproval && len(s.Members) >= MaxMembers:
		return fmt.Errorf("%w: the group already has %d members, the most it can have", ErrTooManyMembers, MaxMembers)
	}
	return nil
}

// effect applies c, which check accepted, to s in place, with head the
// hash of c's entry.
func (s *State) effect(c *Change, head [32]byte) {
	s.Seq, s.Head = c.Seq, head
	switch a := c.Action.(type) {
	case Add:
		m, ok := s.Members[a.User]
		if !ok {
			m = Member{User: a.User, Role: RoleMember}
		}
		m.Key = a.Key
		s.Members[a.User] = m
		delete(s.Requests, a.User)
	case Remove:
		delete(s.Members, a.User)
	case SetRole:
		m := s.Members[a.User]
		if a.Role == RoleOwner {
			old := s.Members[c.Author]
			old.Role = RoleAdmin
			s.Members[c.Author] = old
		}
		m.Role = a.Role
		s.Members[a.User] = m
	case Leave:
		delete(s.Members, c.Author)
	case SetInfo:
		s.Name, s.Description, s.Avatar = a.Name, a.Description, bytes.Clone(a.Avatar)
	case SetSettings:
		s.Settings = a.Settings
	case SetLink:
		if !sameKey(a.Key, s.LinkKey) {
			s.Requests = map[string]Member{}
		}
		s.LinkKey, s.LinkApproval = nil, a.Approval
		if a.Key != nil {
			k := *a.Key // not shared with the Change Apply returns
			s.LinkKey = &k
		}
	case Join:
		m := Member{User: c.Author, Key: a.Key, Role: RoleMember}
		if s.LinkApproval {
			s.Requests[c.Author] = m
		} else {
			s.Members[c.Author] = m
			delete(s.Requests, c.Author)
		}
	case Approve:
		s.Members[a.User] = s.Requests[a.User]
		delete(s.Requests, a.User)
	case Deny:
		delete(s.Requests, a.User)
	}
}

// outranks reports whether a may remove b or change b's key: an admin
// above b.
func outranks(a, b Member) bool { return a.Role >= RoleAdmin && a.Role > b.Role }

func whoRemoves(r Role) string {
	if r == RoleAdmin {
		return "only the owner removes an admin"
	}
	return "only admins remove members"
}

func article(r Role) string {
	if r == RoleOwner {
		return "the owner"
	}
	if r == RoleAdmin {
		return "an admin"
	}
	return "a member"
}

func sameKey(a, b *curve.PublicKey) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}
