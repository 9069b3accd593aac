// Package peertest is a test double for router.Peers: an in-memory cluster
// (a Hub) that joins several routers in one process, delivering between
// them at once, on the caller's goroutine, and recording what crosses. A
// test can drop messages to see what a lost one costs.
package peertest

import (
	"slices"
	"sync"

	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
)

// Kind names a message between nodes.
type Kind string

const (
	Wake      Kind = "wake"
	Attached  Kind = "attached"
	Ephemeral Kind = "ephemeral"
	Push      Kind = "push"
)

// Msg is one message a node sent to the others.
type Msg struct {
	From    string // the sending node's name
	Kind    Kind
	User    string   // whose devices it is for
	Devices []uint32 // Wake: the devices; Attached and Push: the one device
}

// Hub is an in-memory cluster. The zero value is not usable: NewHub.
type Hub struct {
	mu    sync.Mutex
	nodes []*Node
	sent  []Msg
	// Drop, if set, is asked about each message before it is delivered:
	// true drops it (a message lost between nodes).
	drop func(Msg) bool
}

// NewHub returns an empty cluster.
func NewHub() *Hub { return &Hub{} }

// SetDrop sets the hub's message filter (nil: deliver everything).
func (h *Hub) SetDrop(drop func(Msg) bool) {
	h.mu.Lock()
	h.drop = drop
	h.mu.Unlock()
}

// Sent returns the messages sent so far, in order.
func (h *Hub) Sent() []Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.sent)
}

// Node returns a new member of the cluster, to be a router's Config.Peers.
func (h *Hub) Node(name string) *Node {
	n := &Node{hub: h, name: name, users: map[string]bool{}}
	h.mu.Lock()
	h.nodes = append(h.nodes, n)
	h.mu.Unlock()
	return n
}

// Node is one router's view of the hub: it implements router.Peers.
type Node struct {
	hub  *Hub
	name string

	mu    sync.Mutex
	in    router.Inbound
	users map[string]bool // Listen minus Unlisten
}

var _ router.Peers = (*Node)(nil)

// Listening reports whether the node's router has said it has user's
// devices (Listen without a later Unlisten).
func (n *Node) Listening(user string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.users[user]
}

func (n *Node) Bind(in router.Inbound) {
	n.mu.Lock()
	n.in = in
	n.mu.Unlock()
}

func (n *Node) Listen(user string) {
	n.mu.Lock()
	n.users[user] = true
	n.mu.Unlock()
}

func (n *Node) Unlisten(user string) {
	n.mu.Lock()
	delete(n.users, user)
	n.mu.Unlock()
}

// send records m and hands it to every other node that listens for
// m.User (as a subject per user would), outside every lock.
func (n *Node) send(m Msg, deliver func(router.Inbound)) {
	h := n.hub
	h.mu.Lock()
	h.sent = append(h.sent, m)
	drop := h.drop != nil && h.drop(m)
	nodes := slices.Clone(h.nodes)
	h.mu.Unlock()
	if drop {
		return
	}
	for _, o := range nodes {
		if o == n {
			continue
		}
		o.mu.Lock()
		in, ok := o.in, o.users[m.User]
		o.mu.Unlock()
		if ok && in != nil {
			deliver(in)
		}
	}
}

func (n *Node) Attached(d store.DeviceAddr, h router.Handshake) {
	n.send(Msg{From: n.name, Kind: Attached, User: d.User, Devices: []uint32{d.Device}},
		func(in router.Inbound) { in.PeerAttached(d, h) })
}

func (n *Node) Wake(devs []store.DeviceAddr) {
	for len(devs) > 0 {
		user := devs[0].User
		var ids []uint32
		for len(devs) > 0 && devs[0].User == user {
			ids = append(ids, devs[0].Device)
			devs = devs[1:]
		}
		n.send(Msg{From: n.name, Kind: Wake, User: user, Devices: ids},
			func(in router.Inbound) { in.PeerWake(user, ids) })
	}
}

func (n *Node) Ephemeral(to string, e *router.Ephemeral) {
	c := *e
	n.send(Msg{From: n.name, Kind: Ephemeral, User: to},
		func(in router.Inbound) { in.PeerEphemeral(to, &c) })
}

func (n *Node) Push(d store.DeviceAddr, p router.Push) {
	n.send(Msg{From: n.name, Kind: Push, User: d.User, Devices: []uint32{d.Device}},
		func(in router.Inbound) { in.PeerPush(d, p) })
}
