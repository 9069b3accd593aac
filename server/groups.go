package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/wire"
)

// Groups. The server orders each group's log of signed changes and fans
// group messages out, but it cannot change a group: every change is
// verified here (package group: the author's signature with the key the
// log attests for them, and the author's role) and again by every member's
// client. What the server learns is who is in which group, which fan-out
// needs (docs/SECURITY.md).

// maxCachedGroups bounds the group states kept in memory.
const maxCachedGroups = 100_000

// groupLogPage bounds the changes one GroupLog answer carries (and its
// bytes, below the frame limit).
const (
	groupLogPage      = 256
	groupLogPageBytes = 768 << 10
)

// groups caches each group's verified state (its head), loaded from the
// store on first use. A group's changes are serialised by its entry's lock,
// so two changes on the same head cannot both be verified against it.
type groups struct {
	mu sync.Mutex
	m  map[[16]byte]*groupEntry
}

type groupEntry struct {
	mu sync.Mutex
	st *group.State // nil until loaded; nil after loading: no such group
	// seq is st's head as loaded from the store. In a cluster another
	// node may have changed the group: the head is read again on every
	// use, and the state parsed again when it moved (groupEntry).
	seq uint64
}

// entry returns id's entry, locked, with its state loaded.
func (s *Server) groupEntry(ctx context.Context, id [16]byte) (*groupEntry, error) {
	s.groups.mu.Lock()
	if s.groups.m == nil {
		s.groups.m = map[[16]byte]*groupEntry{}
	}
	e := s.groups.m[id]
	if e == nil {
		if len(s.groups.m) >= maxCachedGroups {
			for k := range s.groups.m { // evict one at random
				delete(s.groups.m, k)
				break
			}
		}
		e = &groupEntry{}
		s.groups.m[id] = e
	}
	s.groups.mu.Unlock()
	e.mu.Lock()
	// A cluster's other nodes change groups too: a member removed there
	// must not get the next message sent here, so the head is checked
	// against the store on every use.
	if e.st == nil || s.cfg.Peers != nil {
		seq, raw, err := s.cfg.Store.Group(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			e.st = nil
		case err != nil:
			e.mu.Unlock()
			return nil, err
		case e.st != nil && seq == e.seq:
		default:
			st := new(group.State)
			if err := st.UnmarshalBinary(raw); err != nil {
				e.mu.Unlock()
				return nil, fmt.Errorf("group %x: stored state: %w", id, err)
			}
			e.st, e.seq = st, seq
		}
	}
	return e, nil
}

// member reports whether user is in the group (the answer a non-member
// gets for a group that does not exist, too: NOT_MEMBER).
func member(st *group.State, user string) bool {
	if st == nil {
		return false
	}
	_, ok := st.Members[user]
	return ok
}

func (c *conn) groupChange(id uint64, req *wire.GroupChangeRequest) {
	gid := [16]byte(req.GetGroupId())
	signed := req.GetSignedChange()
	// The change names its group: it must be the one it is filed under
	// (else a Create would make a group whose log and state are another
	// group's).
	if named, err := group.Decode(signed); err != nil || named.GroupID != gid {
		if err == nil {
			err = fmt.Errorf("%w: the change is for group %x, not %x", group.ErrUnknownGroup, named.GroupID, gid)
		}
		c.groupErr(id, err)
		return
	}
	ctx := context.Background()
	e, err := c.s.groupEntry(ctx, gid)
	if err != nil {
		c.s.log.Error("loading a group", "err", err)
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	var next *group.State
	var ch *group.Change
	before := e.st
	if before == nil {
		// A new group: its first change must be the requesting user's, signed
		// with their account's identity key.
		key, kerr := c.s.identityKey(ctx, c.dev.User)
		if kerr != nil {
			e.mu.Unlock()
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_NO_KEYS, "set up end-to-end encryption before creating a group", 0)
			return
		}
		next, err = group.Replay([][]byte{signed}, &key)
		if err == nil {
			ch, err = group.Decode(signed)
		}
	} else {
		next, ch, err = before.Apply(signed)
	}
	if err == nil && ch.Author != c.dev.User {
		err = fmt.Errorf("%w: a change is proposed by its author's own device", group.ErrForbidden)
	}
	if err != nil {
		e.mu.Unlock()
		c.groupErr(id, err)
		return
	}
	state, err := next.MarshalBinary()
	if err != nil {
		e.mu.Unlock()
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	gc := &store.GroupChange{From: c.dev, Group: gid, Seq: ch.Seq, Change: signed, State: state, Notify: notifyList(before, next)}
	c.s.router.GroupChange(gc, func(err error) {
		defer e.mu.Unlock()
		switch {
		case errors.Is(err, router.ErrClosed):
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNAVAILABLE, "server shutting down; retry", 1000)
		case errors.Is(err, store.ErrStorageFull):
			c.storageFull(id)
		case err != nil:
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; the change was not stored; retry", 1000)
		case errors.Is(gc.Err, store.ErrConflict):
			e.st = nil // reload: another server process, or a stale cache
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_CONFLICT, "the group changed meanwhile; fetch its log and propose again", 0)
		case gc.Err != nil:
			c.storeErr(id, "", gc.Err)
		default:
			e.st, e.seq = next, ch.Seq
			c.respond(&wire.Response{Id: id, Body: &wire.Response_GroupChange{GroupChange: &wire.GroupChangeResponse{Seq: ch.Seq}}})
		}
	})
}

// notifyList is who learns of a change: everyone in the group before or
// after it, and those asking to join.
func notifyList(before, after *group.State) []string {
	seen := map[string]bool{}
	var out []string
	for _, st := range []*group.State{before, after} {
		if st == nil {
			continue
		}
		for _, m := range []map[string]group.Member{st.Members, st.Requests} {
			for u := range m {
				if !seen[u] {
					seen[u] = true
					out = append(out, u)
				}
			}
		}
	}
	return out
}

// groupErr answers a change the group's rules refuse.
func (c *conn) groupErr(id uint64, err error) {
	switch {
	case errors.Is(err, group.ErrOutOfOrder):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_CONFLICT, err.Error(), 0)
	case errors.Is(err, group.ErrMalformed), errors.Is(err, group.ErrUnknownGroup):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, err.Error(), 0)
	case errors.Is(err, group.ErrTooManyMembers), errors.Is(err, group.ErrTooManyRequests):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_TOO_LARGE, err.Error(), 0)
	default: // forbidden, bad signature, not a member
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_FORBIDDEN, err.Error(), 0)
	}
}

func (c *conn) groupLog(id uint64, req *wire.GroupLogRequest) {
	gid := [16]byte(req.GetGroupId())
	ctx := context.Background()
	e, err := c.s.groupEntry(ctx, gid)
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	ok := member(e.st, c.dev.User) || requested(e.st, c.dev.User)
	if !ok && e.st != nil && len(req.GetLinkProof()) > 0 {
		// Someone holding the join link reads the log to make their Join.
		ok = e.st.CheckLogProof(c.dev.User, req.GetLinkProof()) == nil
	}
	e.mu.Unlock()
	if !ok {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_NOT_MEMBER, "no such group, or you are not in it", 0)
		return
	}
	changes, err := c.s.cfg.Store.GroupLog(ctx, gid, req.GetFromSeq(), groupLogPage+1)
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	resp := &wire.GroupLogResponse{}
	size := 0
	for i, ch := range changes {
		if i == groupLogPage || (size+len(ch) > groupLogPageBytes && i > 0) {
			resp.More = true
			break
		}
		size += len(ch)
		resp.Changes = append(resp.Changes, ch)
	}
	c.respond(&wire.Response{Id: id, Body: &wire.Response_GroupLog{GroupLog: resp}})
}

func requested(st *group.State, user string) bool {
	if st == nil {
		return false
	}
	_, ok := st.Requests[user]
	return ok
}

func (c *conn) groupSend(id uint64, req *wire.GroupSendRequest) {
	gid := [16]byte(req.GetGroupId())
	ctx := context.Background()
	e, err := c.s.groupEntry(ctx, gid)
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	st := e.st
	e.mu.Unlock()
	if !member(st, c.dev.User) {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_NOT_MEMBER, "no such group, or you are not in it", 0)
		return
	}
	if !st.CanSend(c.dev.User) {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_FORBIDDEN, "only the group's admins may send to it", 0)
		return
	}
	to, err := c.s.memberDevices(ctx, st, c.dev)
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	var cid [store.ClientIDSize]byte
	copy(cid[:], req.GetClientMessageId())
	now := c.s.cfg.Now()
	if req.GetEphemeral() {
		n := 0
		for _, d := range to {
			if c.s.router.PushTo(d, router.Push{Ephemeral: &router.Ephemeral{From: c.dev, ClientID: cid, Payload: req.GetPayload(), Sent: now, Group: gid}}) {
				n++
			}
		}
		c.respond(&wire.Response{Id: id, Body: &wire.Response_GroupSend{GroupSend: &wire.SendResponse{ServerTimeMs: now.UnixMilli(), Devices: uint32(n)}}})
		return
	}
	if len(to) == 0 {
		// Alone in the group: nothing to queue, nothing lost.
		c.respond(&wire.Response{Id: id, Body: &wire.Response_GroupSend{GroupSend: &wire.SendResponse{ServerTimeMs: now.UnixMilli()}}})
		return
	}
	c.sends <- struct{}{}
	c.pending.Add(1)
	gs := &store.GroupSend{From: c.dev, ClientID: cid, Group: gid, Payload: req.GetPayload(), To: to}
	c.s.router.GroupSend(gs, func(err error) {
		defer c.pending.Done()
		<-c.sends
		switch {
		case errors.Is(err, router.ErrClosed):
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNAVAILABLE, "server shutting down; retry", 1000)
		case errors.Is(err, store.ErrStorageFull):
			c.storageFull(id)
		case err != nil:
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; the message was not stored; retry", 1000)
		case errors.Is(gs.Err, store.ErrQueueFull):
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_QUEUE_FULL, "every member's queue is full of undelivered messages; try again after they come online", 60_000)
		case gs.Err != nil:
			c.storeErr(id, "", gs.Err)
		default:
			if !gs.Duplicate {
				c.s.cfg.Metrics.in()
			}
			c.respond(&wire.Response{Id: id, Body: &wire.Response_GroupSend{GroupSend: &wire.SendResponse{
				ServerTimeMs: gs.Sent.UnixMilli(), Duplicate: gs.Duplicate, Devices: uint32(len(gs.Queued)),
			}}})
		}
	})
}

// memberDevices lists the devices a group message goes to: every device
// with keys of every member, but the sending device.
func (s *Server) memberDevices(ctx context.Context, st *group.State, from store.DeviceAddr) ([]store.DeviceAddr, error) {
	var out []store.DeviceAddr
	for u := range st.Members {
		devs, err := s.devices.get(ctx, s.cfg.Store, u)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			if d != from {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// identityKey returns an account's end-to-end identity key.
func (s *Server) identityKey(ctx context.Context, user string) (curve.PublicKey, error) {
	u, err := s.cfg.Store.User(ctx, user)
	if err != nil {
		return curve.PublicKey{}, err
	}
	if len(u.Identity) == 0 {
		return curve.PublicKey{}, store.ErrNoKeys
	}
	return curve.ParsePublicKey(u.Identity)
}

// deviceCache remembers each user's devices that have keys, for group
// fan-out: a 1,024-member group would otherwise cost 1,024 lookups a
// message. An entry is dropped when its user registers or uploads keys (the
// only ways the list changes on this server). In a cluster the list also
// changes on the other nodes, so an entry is kept for maxAge only: a
// device registered elsewhere gets group messages from here within it.
type deviceCache struct {
	mu     sync.Mutex
	m      map[string]cachedDevices
	maxAge time.Duration // 0: until forgotten
	now    func() time.Time
}

type cachedDevices struct {
	devs []store.DeviceAddr
	at   time.Time
}

const maxCachedUsers = 200_000

// clusterDeviceCacheAge is deviceCache.maxAge on a cluster's nodes.
const clusterDeviceCacheAge = 5 * time.Second

func (d *deviceCache) get(ctx context.Context, st store.Store, user string) ([]store.DeviceAddr, error) {
	d.mu.Lock()
	c, ok := d.m[user]
	d.mu.Unlock()
	if ok && (d.maxAge == 0 || d.now().Sub(c.at) < d.maxAge) {
		return c.devs, nil
	}
	var devs []store.DeviceAddr
	u, err := st.User(ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil // a member whose account is gone
	}
	if err != nil {
		return nil, err
	}
	for _, dv := range u.Devices {
		if dv.RegistrationID != 0 {
			devs = append(devs, dv.DeviceAddr)
		}
	}
	d.mu.Lock()
	if d.m == nil {
		d.m = map[string]cachedDevices{}
	}
	if len(d.m) >= maxCachedUsers {
		clear(d.m)
	}
	c = cachedDevices{devs: devs}
	if d.maxAge > 0 {
		c.at = d.now()
	}
	d.m[user] = c
	d.mu.Unlock()
	return devs, nil
}

func (d *deviceCache) forget(user string) {
	d.mu.Lock()
	delete(d.m, user)
	d.mu.Unlock()
}
