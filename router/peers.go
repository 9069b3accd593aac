package router

import (
	"time"

	"github.com/magpie-im/magpie/store"
)

// Peers joins a router to the other nodes of a cluster: several Magpie
// servers that share one store (one database), each with its own router and
// its own connections. The queues are in the store, so what crosses between
// nodes is only news: that a queue got items (a wake), that a device
// connected (so that its older connection elsewhere is closed), and what is
// never stored (ephemeral envelopes, KeysLow pushes).
//
// The router calls Peers after its own work: Wake after the commit that
// queued the items has returned, for devices not connected on this node;
// Ephemeral and Push besides (or instead of) the local delivery; Attached
// after the local attach. Every method must return promptly without
// blocking on the network (the committer calls Wake), must not call back
// into the router before returning, and must not keep the slices or
// envelopes it is given (copy what it sends). Listen and Unlisten are
// called with the router's lock held, in the order the router's online
// devices change: they should only note what is wanted.
//
// Delivery between nodes may be lossy (at most once), and the router is
// built for that: a lost wake delays the items until the next wake, a
// Recheck, or the periodic re-read (Config.Recheck), and never loses them,
// since they are in the store and a pump reads everything after the last
// item it pushed. This relies on the store's contract that a device's items
// become visible in Seq order (store.Message.Seq: "increases in commit
// order") across all the nodes committing to it. A lost Attached leaves two
// connections of one device pushing the same queue until the old one ends
// (the client drops repeats by sender and id). A lost ephemeral is lost, as
// it would be to a device offline.
//
// The messages from other nodes come in through Inbound, which a Router
// implements; New binds it.
type Peers interface {
	// Bind gives the peers the router that messages from other nodes are
	// for. New calls it once, before anything else.
	Bind(in Inbound)
	// Listen says that user has a device connected on this node (the
	// first one); Unlisten, that the last one has gone.
	Listen(user string)
	Unlisten(user string)
	// Attached says that device d connected on this node with handshake
	// h: a node whose connection of d it replaces (Handshake.Replaces)
	// should supersede that one (Inbound.PeerAttached).
	Attached(d store.DeviceAddr, h Handshake)
	// Wake says that the queues of devs got items. devs is sorted by user
	// and then device, without repeats.
	Wake(devs []store.DeviceAddr)
	// Ephemeral forwards e for user to's devices on other nodes.
	Ephemeral(to string, e *Ephemeral)
	// Push forwards p (an Ephemeral or KeysLow push) to device d, which is
	// not connected on this node.
	Push(d store.DeviceAddr, p Push)
}

// Inbound is what Peers hand other nodes' messages to: a Router.
type Inbound interface {
	// PeerWake makes the pumps of user's devices connected here read their
	// queues; no devices: all of user's devices here.
	PeerWake(user string, devices []uint32)
	// PeerAttached supersedes d's connection here, if any, when the one d
	// made on another node with handshake h replaces it
	// (Handshake.Replaces: news of a stale or losing connection elsewhere,
	// arriving late, must not close the current one here) and does not
	// come from the same dial (Handshake.Siblings: the client closes the
	// one it does not keep).
	PeerAttached(d store.DeviceAddr, h Handshake)
	// PeerEphemeral hands e to to's devices here, except the sender.
	PeerEphemeral(to string, e *Ephemeral) int
	// PeerPush hands p to d if it is connected here.
	PeerPush(d store.DeviceAddr, p Push) bool
	// Recheck makes every connected device's pump read its queue: the
	// peers may have missed wakes (they were cut off from the others).
	Recheck()
}

var _ Inbound = (*Router)(nil)

// PeerWake implements Inbound.
func (r *Router) PeerWake(user string, devices []uint32) {
	var subs []*Subscription
	r.mu.RLock()
	devs := r.online[user]
	if len(devices) == 0 {
		for _, s := range devs {
			subs = append(subs, s)
		}
	} else {
		for _, d := range devices {
			if s := devs[d]; s != nil {
				subs = append(subs, s)
			}
		}
	}
	r.mu.RUnlock()
	for _, s := range subs {
		s.wake()
	}
}

// PeerAttached implements Inbound.
func (r *Router) PeerAttached(d store.DeviceAddr, h Handshake) {
	r.mu.Lock()
	s := r.online[d.User][d.Device]
	if s != nil && (!h.Replaces(s.hs) || h.Siblings(s.hs)) {
		// The newer connection is this node's; or the two came from one
		// dial, and the client, which keeps the first that answered it
		// (not the first done by two machines' clocks), closes the other.
		s = nil
	}
	if s != nil {
		r.remove(d)
	}
	r.mu.Unlock()
	if s != nil {
		s.stop()
		s.mb.Superseded()
		// What this connection was pushed but had not acknowledged is
		// the newer one's, which may have read its queue before: it must
		// read again.
		r.peers.Wake([]store.DeviceAddr{d})
	}
}

// Recheck implements Inbound.
func (r *Router) Recheck() { r.recheck(func(*Subscription) bool { return true }) }

// recheck wakes the subscriptions that pick chooses.
func (r *Router) recheck(pick func(*Subscription) bool) {
	var subs []*Subscription
	r.mu.RLock()
	for _, devs := range r.online {
		for _, s := range devs {
			if pick(s) {
				subs = append(subs, s)
			}
		}
	}
	r.mu.RUnlock()
	for _, s := range subs {
		s.wake()
	}
}

// recheckSlots is how many parts the connected devices are split into for
// the periodic re-read, so that they are not all read at once.
const recheckSlots = 16

// recheckLoop reads every connected device's queue again each
// Config.Recheck, one slot at a time.
func (r *Router) recheckLoop() {
	defer r.sweep.Done()
	every := max(r.cfg.Recheck/recheckSlots, time.Millisecond)
	ticks, stop := r.cfg.recheckTicker(every)
	defer stop()
	for slot := uint32(0); ; slot = (slot + 1) % recheckSlots {
		select {
		case <-r.stop:
			return
		case <-ticks:
			r.recheck(func(s *Subscription) bool { return s.slot == slot })
		}
	}
}

// wake marks the queue as possibly holding items after lastSeq and starts
// a pump if the window has room.
func (s *Subscription) wake() {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
	s.kick()
}
