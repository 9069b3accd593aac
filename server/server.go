// Package server is the Magpie server's front: it accepts connections on any
// number of listeners, runs the link (Noise) handshake, authenticates the
// device by its static key, decodes wire frames and dispatches them: account
// requests to the store, envelopes and acknowledgements to the router.
//
// Per connection it keeps one reader goroutine and nothing else while idle:
// outgoing frames go through a small outbox whose writer goroutine exists only
// while there is something to write.
package server

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/internal/netpoll"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/wire"
)

// SignupCodes decides sign-ups on a server that opens accounts by
// invitation only (internal/signupcodes keeps them in the data directory).
type SignupCodes interface {
	// Take spends one use of code: ok is false for a code that is
	// unknown or used up; refund gives the use back when the account
	// was not made after all.
	Take(code []byte) (refund func(), ok bool, err error)
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("server: closed")

// Config configures a Server. Zero fields take the defaults shown.
type Config struct {
	Key    link.KeyPair // the server's long-term Noise static key
	Store  store.Store
	Logger *slog.Logger
	Link   link.Config // handshake, idle and write timeouts; message size

	QueueLimit int // items per device queue (10,000)
	// SenderShare is the most items one sender's account may hold in a
	// device's queue (a quarter of QueueLimit; negative: none): past it,
	// QUEUE_FULL for that sender only.
	SenderShare int
	TTL         time.Duration // undelivered message lifetime (30 days)

	// MaxHandshakes bounds connections mid-handshake (half of MaxConns,
	// at least 4,096). Past it, the
	// oldest is closed to make room: honest handshakes take a round trip,
	// so what has waited longest is what is holding a place (accept.go).
	MaxHandshakes int
	// MaxConns bounds open connections in all (default: the process's
	// open-file limit less 1,024 kept for the store, blobs and
	// listeners); MaxConnsPerNetwork bounds those from one source network,
	// a /24 or /56 (1,000: a campus behind one address fits, one machine
	// with a block of addresses cannot take the server's descriptors).
	// Connections over either are closed at once.
	MaxConns           int
	MaxConnsPerNetwork int
	// RegisterTimeout: a device that is not registered must register this
	// soon after its handshake, or its connection is closed (60 s).
	RegisterTimeout time.Duration
	MaxOutbox       int // bytes queued for a client that is not reading before it is dropped (8 MiB)
	// MaxUnsent bounds the output waiting to be written to all clients
	// together (512 MiB): past it, the connection holding the most is
	// closed first, so that clients that do not read cannot take the
	// server's memory between them.
	MaxUnsent        int64
	MaxInflightSends int // sends per connection awaiting commit (256)

	// ParkIdleAfter: a plain TCP connection that has received nothing for
	// this long gives up its goroutine until bytes arrive (internal/netpoll;
	// Linux only). Default 1 s; negative never parks.
	ParkIdleAfter time.Duration

	RequestRate  rate.Limit // requests per second per connection (1,000)
	RequestBurst int        // (2,000)
	// Requests are budgeted per account and per source network as well,
	// so that more connections (reconnecting, or from many addresses of
	// one network) do not multiply them. Rate Inf for RequestRate makes
	// these Inf too unless set.
	AccountRequestRate  rate.Limit // per account, all its devices' connections (2,000)
	AccountRequestBurst int        // (4,000)
	NetworkRequestRate  rate.Limit // per source network, /24 or /56 (10,000)
	NetworkRequestBurst int        // (20,000)
	// SignupCodes, when set, makes sign-up by invitation only: a new
	// account needs a sign-up code (the invite's), of which it spends a
	// use. Nil: anyone who has the invite may sign up.
	SignupCodes SignupCodes
	// SignupPoW, when set (and SignupCodes is not), makes sign-up take a
	// proof of work whose difficulty rises with the sign-up rate.
	SignupPoW   *SignupPoW
	SignupRate  rate.Limit // registrations per second per source network, /24 or /56 (1 per 10 s)
	SignupBurst int        // (5)
	// Key bundle fetches, budgeted per account (not per connection, so
	// reconnecting does not refill them). Starting sessions with a new
	// group's members takes one fetch per member, so an account's budget
	// for fetches in all is a full group. One-time prekeys are what a fetch
	// spends: an account gets a user's one-time keys only a few times, and
	// a user's one-time keys go to all requesters together at a bounded
	// rate. A fetch past either budget is not refused: it gets a bundle
	// without one-time keys (the last-resort keys), which sessions start
	// from too.
	BundleRate           rate.Limit // fetches per second per account (5)
	BundleBurst          int        // (1,100: a 1,024-member group at once)
	BundleTargetRate     rate.Limit // one user's one-time keys per second to one account (1 per 20 s)
	BundleTargetBurst    int        // (3)
	BundleTargetAllRate  rate.Limit // one user's one-time keys per second to everyone (1)
	BundleTargetAllBurst int        // (100)

	// Blobs stores attachments (end-to-end ciphertext); nil refuses them.
	Blobs blobstore.Blobs

	// Metrics, if set, records what the server does (NewMetrics).
	Metrics *Metrics

	// Peers, if set, makes this server one node of a cluster whose nodes
	// share Store (cluster/natsbus): commits here wake devices connected
	// to other nodes, and typing, KeysLow pushes and supersedes cross
	// between nodes (router.Peers). Close it after the server. Recheck is
	// then how often each connected device's queue is read again whatever
	// the peers said (router.Config.Recheck: 10 s).
	Peers   router.Peers
	Recheck time.Duration

	// Endpoints returns the current signed endpoint list, or nil if the
	// server publishes none (clients then know only the invite's
	// addresses). Called per request: keep it cheap (cache and re-sign only
	// on change).
	Endpoints func() *wire.SignedEndpointList

	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Link.IdleTimeout == 0 {
		// Clients ping every 2 minutes (clientconn.DefaultKeepalive); 2.5
		// intervals of silence end the connection. A client that vanished
		// without a word is usually found sooner, by the kernel's TCP
		// keepalive.
		c.Link.IdleTimeout = 5 * time.Minute
	}
	if c.Link.MaxMessageSize == 0 {
		c.Link.MaxMessageSize = wire.MaxFrame
	}
	if c.Link.Replay == nil {
		// Replayed first messages get the probe treatment (link/replay.go).
		c.Link.Replay = link.NewReplayCache(0)
	}
	if c.MaxConns == 0 {
		c.MaxConns = defaultMaxConns()
	}
	if c.MaxHandshakes == 0 {
		// Room for an attack's sockets to sit out their handshake deadline
		// (10–30 s) rather than churn: evicted sockets come straight back,
		// a connection flood that costs more than holding them.
		c.MaxHandshakes = max(4096, c.MaxConns/2)
	}
	if c.MaxConnsPerNetwork == 0 {
		c.MaxConnsPerNetwork = 1000
	}
	if c.RegisterTimeout == 0 {
		c.RegisterTimeout = time.Minute
	}
	if c.MaxOutbox == 0 {
		c.MaxOutbox = 8 << 20
	}
	if c.MaxUnsent == 0 {
		c.MaxUnsent = DefaultMaxUnsent
	}
	if c.MaxInflightSends == 0 {
		c.MaxInflightSends = 256
	}
	if c.ParkIdleAfter == 0 {
		c.ParkIdleAfter = time.Second
	}
	if c.RequestRate == 0 {
		c.RequestRate = 1000
	}
	if c.RequestBurst == 0 {
		c.RequestBurst = 2000
	}
	if c.AccountRequestRate == 0 {
		c.AccountRequestRate = 2000
		if c.RequestRate == rate.Inf {
			c.AccountRequestRate = rate.Inf
		}
	}
	if c.AccountRequestBurst == 0 {
		c.AccountRequestBurst = 4000
	}
	if c.NetworkRequestRate == 0 {
		c.NetworkRequestRate = 10_000
		if c.RequestRate == rate.Inf {
			c.NetworkRequestRate = rate.Inf
		}
	}
	if c.NetworkRequestBurst == 0 {
		c.NetworkRequestBurst = 20_000
	}
	if c.SignupRate == 0 {
		c.SignupRate = rate.Every(10 * time.Second)
	}
	if c.SignupBurst == 0 {
		c.SignupBurst = 5
	}
	if c.BundleRate == 0 {
		c.BundleRate = 5
	}
	if c.BundleBurst == 0 {
		c.BundleBurst = 1100
	}
	if c.BundleTargetRate == 0 {
		c.BundleTargetRate = rate.Every(20 * time.Second)
	}
	if c.BundleTargetBurst == 0 {
		c.BundleTargetBurst = 3
	}
	if c.BundleTargetAllRate == 0 {
		c.BundleTargetAllRate = 1
	}
	if c.BundleTargetAllBurst == 0 {
		c.BundleTargetAllBurst = 100
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DefaultMaxUnsent is Config.MaxUnsent's default.
const DefaultMaxUnsent = 512 << 20

// Server serves Magpie clients.
type Server struct {
	cfg    Config
	log    *slog.Logger
	router *router.Router
	// handshaking is the connections mid-handshake, oldest first;
	// guarded by mu.
	handshaking list.List
	signups     *budgets  // by source network
	pow         *powState // nil unless sign-up takes a proof of work
	// Request budgets by account and by source network.
	accountRequests, networkRequests *budgets
	// Key bundle budgets: fetches by requesting account, one-time keys by
	// (requester, target) and by target.
	bundles, bundlePairs, bundleTargets *budgets
	groups                              groups      // verified group states
	devices                             deviceCache // users' devices with keys, for group fan-out

	mu        sync.Mutex
	closed    bool
	poller    *netpoll.Poller // parks idle connections; nil until Serve, or if unsupported
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	byNetwork map[string]int // open connections by source network
	unsent    atomic.Int64   // output not yet written, all connections (MaxUnsent)
	connWG    sync.WaitGroup
}

// New creates a server; it starts no goroutines until Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	if cfg.Key.Public == ([32]byte{}) {
		return nil, errors.New("server: Config.Key is required")
	}
	cfg.setDefaults()
	s := &Server{
		cfg:             cfg,
		log:             cfg.Logger,
		signups:         newBudgets(cfg.SignupRate, cfg.SignupBurst, defaultBudgetKeys),
		accountRequests: newBudgets(cfg.AccountRequestRate, cfg.AccountRequestBurst, defaultBudgetKeys),
		networkRequests: newBudgets(cfg.NetworkRequestRate, cfg.NetworkRequestBurst, defaultBudgetKeys),
		bundles:         newBudgets(cfg.BundleRate, cfg.BundleBurst, defaultBudgetKeys),
		bundlePairs:     newBudgets(cfg.BundleTargetRate, cfg.BundleTargetBurst, defaultBudgetKeys),
		bundleTargets:   newBudgets(cfg.BundleTargetAllRate, cfg.BundleTargetAllBurst, defaultBudgetKeys),
		listeners:       make(map[net.Listener]struct{}),
		conns:           make(map[*conn]struct{}),
		byNetwork:       make(map[string]int),
	}
	s.devices.now = cfg.Now
	if cfg.Peers != nil {
		s.devices.maxAge = clusterDeviceCacheAge
	}
	if cfg.SignupPoW != nil && cfg.SignupCodes == nil {
		p := *cfg.SignupPoW
		p.setDefaults()
		if err := p.check(); err != nil {
			return nil, err
		}
		s.pow = newPoWState(p, cfg.Now)
		cfg.Metrics.watchPuzzles()
	}
	cfg.Metrics.watchQueue(cfg.Store)
	s.router = router.New(router.Config{
		Store:       cfg.Store,
		Logger:      cfg.Logger,
		QueueLimit:  cfg.QueueLimit,
		SenderShare: cfg.SenderShare,
		TTL:         cfg.TTL,
		Now:         cfg.Now,
		// Keep what the router may push to a connection well inside what
		// its outbox may hold, so that only a client that stops reading
		// is ever dropped.
		WindowBytes: cfg.MaxOutbox / 2,
		Peers:       cfg.Peers,
		Recheck:     cfg.Recheck,
		OnCommit: func(ops int, took time.Duration, err error) {
			if err == nil {
				cfg.Metrics.commit(ops, took)
			}
		},
	})
	return s, nil
}

// Serve accepts connections on ln until Shutdown or Close; it may be called
// for several listeners at once. It returns ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	if s.poller == nil && s.cfg.ParkIdleAfter > 0 {
		p, err := netpoll.New()
		switch {
		case err == nil:
			s.poller = p
		case !errors.Is(err, netpoll.ErrUnsupported):
			s.log.Warn("cannot park idle connections; each keeps a goroutine", "err", err)
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of file descriptors or similar: wait, don't spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; backing off", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("server: accept: %w", err)
		}
		backoff = 0
		c := &conn{s: s, nc: nc, accepted: time.Now(), network: network(nc.RemoteAddr())}
		if why := s.admit(c); why != "" {
			if why == "closed" {
				nc.Close()
				return ErrServerClosed
			}
			s.log.Debug("connection refused", "remote", nc.RemoteAddr(), "why", why)
			s.cfg.Metrics.refused(why)
			nc.Close()
			continue
		}
		go c.serve()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// shedUnsent closes the connection holding the most unwritten output.
func (s *Server) shedUnsent() {
	s.mu.Lock()
	var worst *conn
	most := 0
	for c := range s.conns {
		c.mu.Lock()
		if h := c.held; h > most && !c.closed {
			worst, most = c, h
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	if worst != nil {
		s.log.Info("output over the server's budget; dropping the connection holding the most", "remote", worst.nc.RemoteAddr().String(), "held", most)
		s.cfg.Metrics.refused("unsent")
		worst.close()
	}
}

// defaultMaxConns is the open-file limit less what the server needs
// besides connections.
func defaultMaxConns() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 1 << 20
	}
	return max(int(l.Cur)-1024, 64)
}

// Shutdown stops accepting, stops reading new requests, lets sends already
// received commit and be acknowledged, then closes every connection and the
// router. It does not close the store. If ctx ends first, the remaining
// connections are closed at once (nothing acknowledged is lost either way:
// acknowledgement follows commit).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.stopReading()
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range conns {
			c.close()
		}
		<-done
	}
	// Every connection has finished, so none is parked.
	s.mu.Lock()
	if s.poller != nil {
		s.poller.Close()
	}
	s.mu.Unlock()
	s.router.Close()
	return err
}

// Close shuts down at once.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Shutdown(ctx)
	return nil
}
