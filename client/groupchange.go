package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/senderkey"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/username"
)

// Changing a group: a change is made on the newest state this device can
// fetch, handed to the server (which orders it), and applied here once the
// server has it. When another change came first the server answers
// ErrConflict, and the change is made again on the new head, if it still
// applies.

// maxChangeTries bounds the rounds of fetch, propose, conflict.
const maxChangeTries = 5

// groupErr makes an error of package group one the caller can branch on
// (ErrForbidden, ErrNotMember) and a person can read.
func groupErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, group.ErrNotMember):
		return fmt.Errorf("%w: %w", ErrNotMember, err)
	case errors.Is(err, group.ErrForbidden), errors.Is(err, group.ErrBadSignature):
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return err
}

// CreateGroup creates a group named name with this account as its owner
// and members as its members (each with the identity key this device holds
// for them, attested in the group's log). It needs the server.
func (c *Client) CreateGroup(ctx context.Context, name string, members []string) (*Group, error) {
	me, ok := c.Account()
	if !ok {
		return nil, ErrNotRegistered
	}
	users, err := normalizeUsers(members, me.User)
	if err != nil {
		return nil, err
	}
	if len(users) >= group.MaxMembers {
		return nil, fmt.Errorf("%w: a group has at most %d members, you included", ErrTooLarge, group.MaxMembers)
	}
	self, err := c.identity(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := group.NewID(rand.Reader)
	if err != nil {
		return nil, err
	}
	id := GroupID(raw)
	var g *Group
	err = c.withConn(ctx, func(conn *clientconn.Conn) error {
		ms := make([]group.Member, 0, len(users))
		for _, u := range users {
			key, err := c.memberKey(ctx, conn, u)
			if err != nil {
				return err
			}
			ms = append(ms, group.Member{User: u, Key: key, Role: group.RoleMember})
		}
		signed, _, err := group.Create(raw, me.User, self.Key, name, ms, group.Settings{}, c.opts.Now(), rand.Reader)
		if err != nil {
			return groupErr(err)
		}
		if _, err := conn.GroupChange(ctx, raw, signed); err != nil {
			return err
		}
		if err := c.applyFetched(ctx, id, 0, [][]byte{signed}); err != nil {
			return err
		}
		g, err = c.Group(ctx, id)
		return err
	})
	return g, err
}

// normalizeUsers checks and normalises user names, dropping me and repeats.
func normalizeUsers(names []string, me string) ([]string, error) {
	var out []string
	for _, n := range names {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		u, err := username.Normalize(n)
		if err != nil {
			return nil, err
		}
		if u != me && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// changeGroup makes the change that propose returns on the group's newest
// state, has the server order it, and applies it here.
func (c *Client) changeGroup(ctx context.Context, id GroupID, propose func(ctx context.Context, conn *clientconn.Conn, st *group.State, me string, key curve.KeyPair) ([]byte, error)) error {
	me, ok := c.Account()
	if !ok {
		return ErrNotRegistered
	}
	self, err := c.identity(ctx)
	if err != nil {
		return err
	}
	return c.withConn(ctx, func(conn *clientconn.Conn) error {
		for try := 0; ; try++ {
			st, err := c.syncGroup(ctx, conn, id)
			if err != nil {
				return err
			}
			signed, err := propose(ctx, conn, st, me.User, self.Key)
			if err != nil {
				return groupErr(err)
			}
			seq, err := conn.GroupChange(ctx, [16]byte(id), signed)
			if errors.Is(err, clientconn.ErrConflict) && try+1 < maxChangeTries {
				continue
			}
			if err != nil {
				return err
			}
			return c.applyFetched(ctx, id, seq, [][]byte{signed})
		}
	})
}

// syncGroup brings a known group's log up to the server's head and
// returns its state.
func (c *Client) syncGroup(ctx context.Context, conn *clientconn.Conn, id GroupID) (*group.State, error) {
	var rec *groupRecord
	var st *group.State
	err := c.view(ctx, func(t sealedTx) error {
		var err error
		rec, st, err = c.loadGroup(t, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownGroup, id)
	}
	if rec.Refused != "" {
		return nil, fmt.Errorf("%w: %s", ErrGroupRefused, rec.Refused)
	}
	if err := c.fetchLog(ctx, conn, id, rec.Seq+1, nil); err != nil {
		return nil, err
	}
	err = c.view(ctx, func(t sealedTx) error {
		var err error
		rec, st, err = c.loadGroup(t, id)
		if err == nil && rec.Refused != "" {
			err = fmt.Errorf("%w: %s", ErrGroupRefused, rec.Refused)
		}
		return err
	})
	return st, err
}

// fetchLog fetches a group's log from seq from on and applies it. proof
// is a link proof, for a joiner who is not in the group yet.
func (c *Client) fetchLog(ctx context.Context, conn *clientconn.Conn, id GroupID, from uint64, proof []byte) error {
	for {
		changes, more, err := conn.GroupLog(ctx, [16]byte(id), from, proof)
		if err != nil {
			return err
		}
		if len(changes) > 0 {
			if err := c.applyFetched(ctx, id, from, changes); err != nil {
				return err
			}
			from += uint64(len(changes))
		}
		if !more || len(changes) == 0 {
			return nil
		}
	}
}

// applyFetched applies changes, the first at seq first, in one
// transaction, and publishes what they changed.
func (c *Client) applyFetched(ctx context.Context, id GroupID, first uint64, changes [][]byte) error {
	var evs []Event
	err := c.update(ctx, func(t sealedTx) error {
		evs = nil
		return c.applyChanges(t, id, first, changes, &evs)
	})
	if err == nil {
		c.publish(evs...)
		c.kick(workerOutbox)
	}
	return err
}

// applyChanges verifies and applies changes to a group (the first at seq
// first; those this device has are skipped), adds a notice for each to the
// group's conversation, and rotates this device's sender key when someone
// left. A change that does not verify is refused: the group stays as it
// was, records why, and applies nothing more from the server.
func (c *Client) applyChanges(t sealedTx, id GroupID, first uint64, changes [][]byte, evs *[]Event) error {
	me, _ := c.Account()
	rec, st, err := c.loadGroup(t, id)
	if err != nil {
		return err
	}
	if rec != nil && rec.Refused != "" {
		return nil
	}
	changed := false
	for i, b := range changes {
		seq := first + uint64(i)
		if rec != nil && seq <= rec.Seq {
			continue
		}
		var next *group.State
		var ch *group.Change
		if rec == nil {
			if seq != 0 {
				return fmt.Errorf("group %s: its log starts at change %d", id, seq)
			}
			next, ch, err = c.replayCreate(t, b)
			if err != nil {
				// Nothing to keep: a group this device never had.
				c.opts.Logger.Warn("refused a group", "group", id.String(), "err", err)
				return nil
			}
			rec = &groupRecord{}
		} else {
			next, ch, err = st.Apply(b)
			if err != nil {
				rec.Refused = fmt.Sprintf("change %d from the server: %v", seq, err)
				c.opts.Logger.Warn("refused a group change", "group", id.String(), "seq", seq, "err", err)
				if err := c.addNotice(t, id, "", "This device refused a change to the group that the server sent ("+err.Error()+"). The group stays as it was; the server may be misbehaving.", evs); err != nil {
					return err
				}
				break
			}
		}
		if err := c.afterChange(t, id, rec, st, next, ch, me.User); err != nil {
			return err
		}
		if err := c.addNotice(t, id, ch.Author, describe(st, ch, me.User), evs); err != nil {
			return err
		}
		st, changed = next, true
	}
	if rec == nil {
		return nil
	}
	if err := c.saveGroup(t, id, rec, st, changed); err != nil {
		return err
	}
	*evs = append(*evs, Event{Kind: EventGroup, Peer: id.Peer()})
	return nil
}

// replayCreate verifies a group's first change, with the creator's
// identity key as this device knows it when it does.
func (c *Client) replayCreate(t sealedTx, b []byte) (*group.State, *group.Change, error) {
	ch, err := group.Decode(b)
	if err != nil {
		return nil, nil, err
	}
	var key *curve.PublicKey
	contact, err := e2e.LoadContact(t, ch.Author)
	if err != nil {
		return nil, nil, err
	}
	me, _ := c.Account()
	if ch.Author == me.User {
		self, err := e2e.LoadIdentity(t)
		if err != nil {
			return nil, nil, err
		}
		key = &self.Key.Public
	} else if contact != nil {
		key = &contact.Identity
	}
	st, err := group.Replay([][]byte{b}, key)
	return st, ch, err
}

// afterChange keeps this device's sender key in step with the members:
// when anyone left (or was removed), it moves to a new chain that only the
// remaining members will get, so that whoever left cannot read what it
// sends next; a member with a new identity key gets the key again.
func (c *Client) afterChange(t sealedTx, id GroupID, rec *groupRecord, before, after *group.State, ch *group.Change, me string) error {
	if before == nil || rec.Dist == nil {
		return nil
	}
	left := false
	for u := range before.Members {
		if _, ok := after.Members[u]; !ok {
			left = true
			break
		}
	}
	if left {
		old := senderkey.DistributionID(rec.Dist)
		rec.Dist = nil
		if err := e2e.ForgetSenderKey(t, old); err != nil {
			return err
		}
		return deletePrefix(t, nsGroupGiven, id.String()+"/")
	}
	if a, ok := ch.Action.(group.Add); ok {
		if m, was := before.Members[a.User]; was && m.Key != a.Key {
			return t.Delete(nsGroupGiven, givenKey(id, rec.Dist, a.User))
		}
	}
	return nil
}

func givenKey(id GroupID, dist []byte, user string) string {
	return fmt.Sprintf("%s/%x/%s", id, dist, user)
}

// deletePrefix deletes every key of ns that starts with prefix.
func deletePrefix(t sealedTx, ns, prefix string) error {
	keys, err := t.Keys(ns, prefix)
	for _, k := range keys {
		if err == nil {
			err = t.Delete(ns, k)
		}
	}
	return err
}

// addNotice adds a line to a group's conversation about its membership.
func (c *Client) addNotice(t sealedTx, id GroupID, author, text string, evs *[]Event) error {
	mid := NewMessageID()
	now := unixMs(c.opts.Now())
	me, _ := c.Account()
	r := &msgRecord{ID: mid[:], Peer: id.Peer(), From: author, Outgoing: author == me.User && author != "", Text: text,
		Notice: true, Composed: now, Stored: now, State: StateReceived}
	if r.Outgoing {
		r.State = StateSent
	}
	return c.addAndNote(t, r, evs)
}

// describe says what a change did, for the group's conversation.
func describe(before *group.State, ch *group.Change, me string) string {
	who := func(u string) string {
		if u == me {
			return "you"
		}
		return u
	}
	author := who(ch.Author)
	switch a := ch.Action.(type) {
	case group.Genesis:
		return fmt.Sprintf("%s created the group %q", author, a.Name)
	case group.Add:
		if before != nil {
			if _, ok := before.Members[a.User]; ok {
				if a.User == ch.Author {
					return fmt.Sprintf("%s changed their identity key (compare safety numbers)", author)
				}
				return fmt.Sprintf("%s changed %s's identity key (compare safety numbers)", author, who(a.User))
			}
		}
		return fmt.Sprintf("%s added %s", author, who(a.User))
	case group.Remove:
		return fmt.Sprintf("%s removed %s", author, who(a.User))
	case group.SetRole:
		switch a.Role {
		case group.RoleOwner:
			return fmt.Sprintf("%s made %s the owner", author, who(a.User))
		case group.RoleAdmin:
			return fmt.Sprintf("%s made %s an admin", author, who(a.User))
		}
		return fmt.Sprintf("%s made %s a member (no longer an admin)", author, who(a.User))
	case group.Leave:
		return fmt.Sprintf("%s left", author)
	case group.SetInfo:
		if before != nil && a.Name != before.Name {
			return fmt.Sprintf("%s renamed the group %q", author, a.Name)
		}
		if before != nil && !bytes.Equal(a.Avatar, before.Avatar) {
			if a.Avatar == nil {
				return fmt.Sprintf("%s removed the group's picture", author)
			}
			return fmt.Sprintf("%s changed the group's picture", author)
		}
		return fmt.Sprintf("%s changed the group's description", author)
	case group.SetSettings:
		var s []string
		if a.Settings.AdminsOnlySend {
			s = append(s, "only admins send")
		} else {
			s = append(s, "everyone sends")
		}
		if a.Settings.AdminsOnlyEditInfo {
			s = append(s, "only admins edit the info")
		}
		if a.Settings.DisappearAfter > 0 {
			s = append(s, "messages disappear after "+a.Settings.DisappearAfter.String())
		}
		return fmt.Sprintf("%s changed the settings: %s", author, strings.Join(s, ", "))
	case group.SetLink:
		switch {
		case a.Key == nil:
			return fmt.Sprintf("%s turned the join link off", author)
		case a.Approval:
			return fmt.Sprintf("%s set a join link (an admin approves each join)", author)
		}
		return fmt.Sprintf("%s set a join link", author)
	case group.Join:
		if before != nil && before.LinkApproval {
			return fmt.Sprintf("%s asked to join", author)
		}
		return fmt.Sprintf("%s joined with the link", author)
	case group.Approve:
		return fmt.Sprintf("%s let %s in", author, who(a.User))
	case group.Deny:
		return fmt.Sprintf("%s turned down %s's request to join", author, who(a.User))
	}
	return fmt.Sprintf("%s changed the group", author)
}

// GroupAdd adds users to a group, one change each, with the identity keys
// this device holds for them.
func (c *Client) GroupAdd(ctx context.Context, id GroupID, users ...string) error {
	me, _ := c.Account()
	names, err := normalizeUsers(users, me.User)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("%w: name someone to add", group.ErrNoChange)
	}
	for _, u := range names {
		err := c.changeGroup(ctx, id, func(ctx context.Context, conn *clientconn.Conn, st *group.State, me string, key curve.KeyPair) ([]byte, error) {
			if _, ok := st.Members[u]; ok {
				return nil, fmt.Errorf("%w: %s is already in the group", group.ErrNoChange, u)
			}
			mk, err := c.memberKey(ctx, conn, u)
			if err != nil {
				return nil, err
			}
			return st.Propose(me, key, group.Add{User: u, Key: mk}, c.opts.Now(), rand.Reader)
		})
		if err != nil {
			return fmt.Errorf("adding %s: %w", u, err)
		}
	}
	return nil
}

// propose returns a change function that proposes action.
func (c *Client) propose(action func(st *group.State, me string, key curve.KeyPair) (group.Action, error)) func(context.Context, *clientconn.Conn, *group.State, string, curve.KeyPair) ([]byte, error) {
	return func(_ context.Context, _ *clientconn.Conn, st *group.State, me string, key curve.KeyPair) ([]byte, error) {
		a, err := action(st, me, key)
		if err != nil {
			return nil, err
		}
		return st.Propose(me, key, a, c.opts.Now(), rand.Reader)
	}
}

func fixed(a group.Action) func(*group.State, string, curve.KeyPair) (group.Action, error) {
	return func(*group.State, string, curve.KeyPair) (group.Action, error) { return a, nil }
}

// GroupRemove removes a member.
func (c *Client) GroupRemove(ctx context.Context, id GroupID, user string) error {
	u, err := username.Normalize(user)
	if err != nil {
		return err
	}
	return c.changeGroup(ctx, id, c.propose(fixed(group.Remove{User: u})))
}

// GroupSetRole gives a member a role: RoleAdmin promotes, RoleMember
// demotes, RoleOwner hands the group over (this account becomes an admin).
func (c *Client) GroupSetRole(ctx context.Context, id GroupID, user, role string) error {
	u, err := username.Normalize(user)
	if err != nil {
		return err
	}
	var r group.Role
	switch role {
	case RoleOwner:
		r = group.RoleOwner
	case RoleAdmin:
		r = group.RoleAdmin
	case RoleMember:
		r = group.RoleMember
	default:
		return fmt.Errorf("%w: a role is owner, admin or member, not %q", group.ErrMalformed, role)
	}
	return c.changeGroup(ctx, id, c.propose(fixed(group.SetRole{User: u, Role: r})))
}

// GroupLeave leaves a group. Its owner hands it over first (GroupSetRole
// with RoleOwner), unless they are its last member.
func (c *Client) GroupLeave(ctx context.Context, id GroupID) error {
	return c.changeGroup(ctx, id, c.propose(fixed(group.Leave{})))
}

// GroupSetInfo renames a group and sets its description.
func (c *Client) GroupSetInfo(ctx context.Context, id GroupID, name, description string) error {
	return c.changeGroup(ctx, id, c.propose(func(st *group.State, _ string, _ curve.KeyPair) (group.Action, error) {
		return group.SetInfo{Name: name, Description: description, Avatar: st.Avatar}, nil
	}))
}

// GroupSetSettings changes a group's settings.
func (c *Client) GroupSetSettings(ctx context.Context, id GroupID, s GroupSettings) error {
	return c.changeGroup(ctx, id, c.propose(fixed(group.SetSettings{Settings: group.Settings{
		AdminsOnlySend: s.AdminsOnlySend, AdminsOnlyEditInfo: s.AdminsOnlyEditInfo, DisappearAfter: s.DisappearAfter,
	}})))
}

// GroupEditInfo changes a group's name, its description, or both (nil
// keeps a value as it is in the group's newest state, which this device
// fetches first: a change another member made meanwhile is not undone).
func (c *Client) GroupEditInfo(ctx context.Context, id GroupID, name, description *string) error {
	return c.changeGroup(ctx, id, c.propose(func(st *group.State, _ string, _ curve.KeyPair) (group.Action, error) {
		a := group.SetInfo{Name: st.Name, Description: st.Description, Avatar: st.Avatar}
		if name != nil {
			a.Name = *name
		}
		if description != nil {
			a.Description = *description
		}
		return a, nil
	}))
}

// GroupEditSettings changes some of a group's settings: edit gets them as
// they are in the group's newest state (fetched first, so a change
// another admin made meanwhile is not undone) and changes what it means
// to.
func (c *Client) GroupEditSettings(ctx context.Context, id GroupID, edit func(*GroupSettings)) error {
	return c.changeGroup(ctx, id, c.propose(func(st *group.State, _ string, _ curve.KeyPair) (group.Action, error) {
		s := GroupSettings{AdminsOnlySend: st.Settings.AdminsOnlySend, AdminsOnlyEditInfo: st.Settings.AdminsOnlyEditInfo,
			DisappearAfter: st.Settings.DisappearAfter}
		edit(&s)
		return group.SetSettings{Settings: group.Settings{
			AdminsOnlySend: s.AdminsOnlySend, AdminsOnlyEditInfo: s.AdminsOnlyEditInfo, DisappearAfter: s.DisappearAfter,
		}}, nil
	}))
}

// GroupLink makes a new join link for a group and returns its text (an
// earlier link stops working), or turns links off (on false, and ""
// returned). approval: an admin approves each join. Whoever holds the link
// can join: share it only with people you would let in.
func (c *Client) GroupLink(ctx context.Context, id GroupID, on, approval bool) (string, error) {
	if !on {
		err := c.changeGroup(ctx, id, c.propose(fixed(group.SetLink{})))
		if err == nil {
			err = c.update(ctx, func(t sealedTx) error { return setLink(t, id, "") })
		}
		return "", err
	}
	link, pub, err := group.NewLink([16]byte(id), rand.Reader)
	if err != nil {
		return "", err
	}
	if err := c.changeGroup(ctx, id, c.propose(fixed(group.SetLink{Key: &pub, Approval: approval}))); err != nil {
		return "", err
	}
	return link.Encode(), c.update(ctx, func(t sealedTx) error { return setLink(t, id, link.Encode()) })
}

func setLink(t sealedTx, id GroupID, link string) error {
	var rec groupRecord
	if ok, err := getJSON(t, nsGroup, id.String(), &rec); err != nil || !ok {
		return err
	}
	rec.Link = link
	return putJSON(t, nsGroup, id.String(), rec)
}

// GroupApprove lets a user who asked to join in (or, approve false, turns
// them down).
func (c *Client) GroupApprove(ctx context.Context, id GroupID, user string, approve bool) error {
	u, err := username.Normalize(user)
	if err != nil {
		return err
	}
	var a group.Action = group.Approve{User: u}
	if !approve {
		a = group.Deny{User: u}
	}
	return c.changeGroup(ctx, id, c.propose(fixed(a)))
}

// JoinGroup joins a group with its link: at once, or as a request that an
// admin approves when the group asks for that (Group.Role stays "" and the
// group's Requests name this account until then).
func (c *Client) JoinGroup(ctx context.Context, linkText string) (*Group, error) {
	link, err := group.ParseLink(linkText)
	if err != nil {
		return nil, fmt.Errorf("%w: that is not a group link (it starts %s)", err, group.LinkPrefix)
	}
	me, ok := c.Account()
	if !ok {
		return nil, ErrNotRegistered
	}
	self, err := c.identity(ctx)
	if err != nil {
		return nil, err
	}
	id := GroupID(link.Group)
	err = c.withConn(ctx, func(conn *clientconn.Conn) error {
		for try := 0; ; try++ {
			var rec *groupRecord
			err := c.view(ctx, func(t sealedTx) error {
				var err error
				rec, _, err = c.loadGroup(t, id)
				return err
			})
			if err != nil {
				return err
			}
			from := uint64(0)
			if rec != nil {
				from = rec.Seq + 1
			}
			proof, err := link.LogProof(me.User, rand.Reader)
			if err != nil {
				return err
			}
			if err := c.fetchLog(ctx, conn, id, from, proof); err != nil {
				return fmt.Errorf("reading the group with its link: %w", err)
			}
			var st *group.State
			err = c.view(ctx, func(t sealedTx) error {
				var err error
				rec, st, err = c.loadGroup(t, id)
				if err == nil && rec == nil {
					err = fmt.Errorf("%w: the server has no log for it", ErrUnknownGroup)
				}
				return err
			})
			if err != nil {
				return err
			}
			if _, ok := st.Members[me.User]; ok {
				return nil
			}
			signed, err := st.Join(me.User, self.Key, link, c.opts.Now(), rand.Reader)
			if err != nil {
				return groupErr(err)
			}
			seq, err := conn.GroupChange(ctx, link.Group, signed)
			if errors.Is(err, clientconn.ErrConflict) && try+1 < maxChangeTries {
				continue
			}
			if err != nil {
				return err
			}
			return c.applyFetched(ctx, id, seq, [][]byte{signed})
		}
	})
	if err != nil {
		return nil, err
	}
	return c.Group(ctx, id)
}

// groupMembers is the users of a group's state, sorted.
func groupMembers(st *group.State) []string {
	return slices.Sorted(maps.Keys(st.Members))
}
