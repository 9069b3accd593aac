// Package natsbus joins Magpie nodes that share one store into a cluster
// over NATS (core NATS: no JetStream, nothing persisted). It implements
// router.Peers.
//
// Each node subscribes to one subject per user that has a device connected
// to it, magpie.<cluster>.u.<user>, from that user's first attach to the
// last detach, and to magpie.<cluster>.all. It publishes there what the
// router tells its peers: wakes, attaches, ephemeral envelopes, pushes. A
// subject nobody subscribes to costs the NATS server a lookup and nothing
// more, so a node publishes without knowing where a user's devices are.
//
// NATS delivers at most once, and this package never waits on the network:
// it publishes from a queue and subscribes in the background. What it can
// lose, the router re-reads: after a reconnect the node re-reads every
// connected device's queue and asks the other nodes to do the same (the
// messages it published meanwhile may be gone), and the router re-reads
// them all periodically anyway (router.Config.Recheck).
package natsbus

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
)

// Options configure a Bus. Zero fields take the defaults shown.
type Options struct {
	// URLs are the NATS servers, comma-separated (nats://host:4222,…);
	// the client moves to another one when its server goes.
	URLs string
	// Cluster names the cluster: nodes with the same name on the same NATS
	// hear each other ("magpie"). Letters, digits, '-' and '_'.
	Cluster string
	// Node names this node in logs and as the NATS connection's name (the
	// host name).
	Node   string
	Logger *slog.Logger
	// Registerer, if set, gets the bus's metrics (magpie_cluster_*).
	Registerer prometheus.Registerer
	// ReconnectWait is how long the client waits before trying a server
	// again (1 s).
	ReconnectWait time.Duration
	// Queue bounds the messages waiting to be published (16,384); past
	// it, messages are dropped and counted (a wake dropped is read by the
	// recheck).
	Queue int
	// ConnectTimeout bounds the first connection (5 s).
	ConnectTimeout time.Duration
}

var clusterName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Bus is one node's connection to the cluster. It is a router.Peers: give
// it to one router (router.Config.Peers), and Close it after that router.
type Bus struct {
	nc     *nats.Conn
	log    *slog.Logger
	node   string
	id     uint64 // this process's id in messages
	userPf string // magpie.<cluster>.u.
	all    string // magpie.<cluster>.all
	in     atomic.Pointer[inbound]
	m      *metrics

	msgs chan *nats.Msg // every subscription's messages
	out  chan outMsg    // messages to publish

	mu      sync.Mutex
	want    map[string]bool // listen changes not yet applied: user → listening
	changed chan struct{}   // capacity 1: want has changes

	subs map[string]*nats.Subscription // subLoop's: user → subscription

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type inbound struct{ router.Inbound }

type outMsg struct {
	kind byte
	subj string
	data []byte
}

var _ router.Peers = (*Bus)(nil)

// Connect connects to NATS and returns the node's bus.
func Connect(o Options) (*Bus, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	var idb [8]byte
	rand.Read(idb[:])
	b := &Bus{
		log:     o.Logger.With("node", o.Node),
		node:    o.Node,
		id:      binary.BigEndian.Uint64(idb[:]),
		userPf:  "magpie." + o.Cluster + ".u.",
		all:     "magpie." + o.Cluster + ".all",
		m:       newMetrics(o.Registerer),
		msgs:    make(chan *nats.Msg, 8192),
		out:     make(chan outMsg, o.Queue),
		want:    map[string]bool{},
		changed: make(chan struct{}, 1),
		subs:    map[string]*nats.Subscription{},
		stop:    make(chan struct{}),
	}
	nc, err := nats.Connect(o.URLs, b.natsOptions(o)...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connecting to %s: %w", o.URLs, err)
	}
	b.nc = nc
	if _, err := nc.ChanSubscribe(b.all, b.msgs); err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: subscribing: %w", err)
	}
	b.wg.Add(3)
	go b.dispatchLoop()
	go b.publishLoop()
	go b.subLoop()
	return b, nil
}

// withDefaults fills in the zero fields of o and checks the cluster name.
func (o Options) withDefaults() (Options, error) {
	if o.Cluster == "" {
		o.Cluster = "magpie"
	}
	if !clusterName.MatchString(o.Cluster) {
		return o, fmt.Errorf("natsbus: cluster name %q: want 1 to 64 letters, digits, '-' or '_'", o.Cluster)
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReconnectWait == 0 {
		o.ReconnectWait = time.Second
	}
	if o.Queue == 0 {
		o.Queue = 16_384
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	return o, nil
}

// natsOptions are the NATS client's options for b, from o (defaults
// filled in).
func (b *Bus) natsOptions(o Options) []nats.Option {
	return []nats.Option{
		nats.Name("magpie " + o.Node),
		nats.NoEcho(), // a node's own messages are not for it
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		nats.Timeout(o.ConnectTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			select {
			case <-b.stop: // Close
			default:
				b.log.Warn("cluster: disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(b.reconnected),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// A slow consumer drops messages: read every queue again.
			b.log.Warn("cluster: NATS error", "err", err)
			if errors.Is(err, nats.ErrSlowConsumer) {
				b.m.dropped.WithLabelValues("slow_consumer").Inc()
				b.recheck()
			}
		}),
	}
}

// Node is this node's name.
func (b *Bus) Node() string { return b.node }

// ConnectedURL is the NATS server the bus is connected to now ("" while
// it is not).
func (b *Bus) ConnectedURL() string { return b.nc.ConnectedUrlRedacted() }

// Close leaves the cluster. Close the router first.
func (b *Bus) Close() {
	b.closeOnce.Do(func() {
		close(b.stop)
		b.nc.Close()
		b.wg.Wait()
	})
}

// reconnected runs when the client has a server again: messages for this
// node may have been lost meanwhile, and so may those it published.
func (b *Bus) reconnected(nc *nats.Conn) {
	b.m.reconnects.Inc()
	b.log.Info("cluster: reconnected to NATS; re-reading every connected device's queue", "server", nc.ConnectedUrlRedacted())
	b.recheck()
	b.send(kindRecheck, b.all, encodeRecheck(b.id))
}

func (b *Bus) recheck() {
	if in := b.in.Load(); in != nil {
		in.Recheck()
	}
}

// Bind implements router.Peers.
func (b *Bus) Bind(in router.Inbound) { b.in.Store(&inbound{in}) }

// Listen implements router.Peers.
func (b *Bus) Listen(user string) { b.setListen(user, true) }

// Unlisten implements router.Peers.
func (b *Bus) Unlisten(user string) { b.setListen(user, false) }

func (b *Bus) setListen(user string, on bool) {
	if !subjectSafe(user) {
		b.log.Error("cluster: a username unfit for a subject; its devices here hear nothing from other nodes", "user", user)
		return
	}
	b.mu.Lock()
	b.want[user] = on
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// Attached implements router.Peers.
func (b *Bus) Attached(d store.DeviceAddr, h router.Handshake) {
	if subjectSafe(d.User) {
		b.send(kindAttached, b.userPf+d.User, encodeAttached(b.id, d, h))
	}
}

// Wake implements router.Peers: one message per user.
func (b *Bus) Wake(devs []store.DeviceAddr) {
	var ids []uint32
	for len(devs) > 0 {
		user := devs[0].User
		ids = ids[:0]
		for len(devs) > 0 && devs[0].User == user && len(ids) < maxDevices {
			ids = append(ids, devs[0].Device)
			devs = devs[1:]
		}
		if subjectSafe(user) {
			b.send(kindWake, b.userPf+user, encodeWake(b.id, user, ids))
		}
	}
}

// Ephemeral implements router.Peers.
func (b *Bus) Ephemeral(to string, e *router.Ephemeral) {
	if subjectSafe(to) && subjectSafe(e.From.User) && len(e.Payloads) <= maxDevices {
		b.send(kindEphemeral, b.userPf+to, encodeEphemeral(b.id, to, e))
	}
}

// Push implements router.Peers.
func (b *Bus) Push(d store.DeviceAddr, p router.Push) {
	if !subjectSafe(d.User) || p.Ephemeral != nil && (!subjectSafe(p.Ephemeral.From.User) || len(p.Ephemeral.Payloads) > maxDevices) {
		return
	}
	if data, ok := encodePush(b.id, d, p); ok {
		b.send(kindPush, b.userPf+d.User, data)
	}
}

// send queues a message for publishing; it never blocks.
func (b *Bus) send(kind byte, subj string, data []byte) {
	if len(data) > maxMessage {
		b.m.dropped.WithLabelValues("too_large").Inc()
		return
	}
	select {
	case b.out <- outMsg{kind, subj, data}:
	default:
		b.m.dropped.WithLabelValues("queue_full").Inc()
	}
}

// publishLoop publishes queued messages. Publishing can block while the
// client dials a server, which is why it happens here and not in the
// router's goroutines; while disconnected, the client buffers.
func (b *Bus) publishLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case o := <-b.out:
			if int64(len(o.data)) > b.nc.MaxPayload() {
				b.m.dropped.WithLabelValues("too_large").Inc()
				continue
			}
			if err := b.nc.Publish(o.subj, o.data); err != nil {
				b.m.dropped.WithLabelValues("publish").Inc()
				b.log.Debug("cluster: publish failed", "err", err)
				continue
			}
			b.m.out.WithLabelValues(kindNames[o.kind]).Inc()
		}
	}
}

// subLoop applies Listen and Unlisten. Subscribing can block while the
// client dials, so it happens here; the router's lock is not held.
func (b *Bus) subLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			for _, s := range b.subs {
				s.Unsubscribe()
			}
			return
		case <-b.changed:
		}
		b.mu.Lock()
		want := b.want
		b.want = map[string]bool{}
		b.mu.Unlock()
		var added []string
		for user, on := range want {
			s := b.subs[user]
			switch {
			case on && s == nil:
				s, err := b.nc.ChanSubscribe(b.userPf+user, b.msgs)
				if err != nil {
					b.log.Error("cluster: subscribing", "err", err)
					continue
				}
				b.subs[user] = s
				added = append(added, user)
			case !on && s != nil:
				s.Unsubscribe()
				delete(b.subs, user)
			}
		}
		b.m.subjects.Set(float64(len(b.subs)))
		if len(added) == 0 {
			continue
		}
		// A wake published between the device's first read of its queue
		// and the server's having the subscription was not for us: once
		// the server has it (the round trip of a flush), read again.
		if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
			b.log.Debug("cluster: flush after subscribing", "err", err)
		}
		if in := b.in.Load(); in != nil {
			for _, u := range added {
				in.PeerWake(u, nil)
			}
		}
	}
}

// dispatchLoop hands the other nodes' messages to the router.
func (b *Bus) dispatchLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case msg := <-b.msgs:
			b.handle(msg)
		}
	}
}

func (b *Bus) handle(msg *nats.Msg) {
	m, err := decode(msg.Data)
	if err != nil {
		b.m.dropped.WithLabelValues("malformed").Inc()
		b.log.Debug("cluster: malformed message", "subject", msg.Subject, "err", err)
		return
	}
	in := b.in.Load()
	if m.node == b.id || in == nil {
		return
	}
	want := b.all
	if m.kind != kindRecheck {
		want = b.userPf + m.user
	}
	if msg.Subject != want {
		b.m.dropped.WithLabelValues("malformed").Inc()
		return
	}
	b.m.in.WithLabelValues(kindNames[m.kind]).Inc()
	switch m.kind {
	case kindWake:
		in.PeerWake(m.user, m.devices)
	case kindAttached:
		in.PeerAttached(store.DeviceAddr{User: m.user, Device: m.devices[0]}, m.hs)
	case kindEphemeral:
		in.PeerEphemeral(m.user, m.eph)
	case kindPush:
		in.PeerPush(store.DeviceAddr{User: m.user, Device: m.devices[0]}, router.Push{Ephemeral: m.eph, KeysLow: m.keys})
	case kindRecheck:
		in.Recheck()
	}
}

// metrics are the bus's Prometheus metrics.
type metrics struct {
	in, out    *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	reconnects prometheus.Counter
	subjects   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		in: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "magpie_cluster_messages_in_total", Help: "Messages from other nodes handed to the router, by kind."}, []string{"kind"}),
		out: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "magpie_cluster_messages_out_total", Help: "Messages published to the other nodes, by kind."}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "magpie_cluster_dropped_total", Help: "Messages between nodes dropped, by why (queue_full, too_large, publish, slow_consumer, malformed); a dropped wake is found by the periodic re-read."}, []string{"why"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "magpie_cluster_reconnects_total", Help: "Reconnections to NATS (each makes every node re-read its connected devices' queues)."}),
		subjects: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "magpie_cluster_subscriptions", Help: "Users this node listens for (users with a device connected here)."}),
	}
	if reg != nil {
		reg.MustRegister(m.in, m.out, m.dropped, m.reconnects, m.subjects)
	}
	return m
}
