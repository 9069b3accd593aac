package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/attach"
	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/blobstore/pgblobs"
	"github.com/magpie-im/magpie/cluster/natsbus"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/signupcodes"
	"github.com/magpie-im/magpie/internal/signupcodes/pgcodes"
	"github.com/magpie-im/magpie/internal/signuppow"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pebblestore"
	"github.com/magpie-im/magpie/store/pgstore"
	"github.com/magpie-im/magpie/store/sqlite"
	"github.com/magpie-im/magpie/transport"
	"github.com/magpie-im/magpie/transport/tlsws"
)

// Default server port.
const DefaultPort = 7443

func serveCmd(g *globals) *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run a Magpie server",
		Long: `Run a Magpie server on the embedded store in --data: queues and groups in
Pebble (an LSM engine, in queues/), accounts and keys in SQLite (magpie.db).

On first start it creates the server's long-term Noise key in --data; keep
that directory (and back it up): the key is the server's identity, and every
invite names it. It prints the invite clients need, on a line of its own.

With --store postgres://…, accounts, queues, groups, attachments and
sign-up codes are in that PostgreSQL database, which the servers of a
cluster share; --data then keeps the server's key and endpoint list, which
every server of the cluster needs a copy of.

SIGINT or SIGTERM stop it gracefully: sends already received are committed
and acknowledged first. A message the server has acknowledged is on disk,
so even kill -9 loses none.`,
		Example: `  magpie serve
  magpie serve --data /var/lib/magpie --listen :7443 --listen tls://:443 --advertise chat.example.org:7443
  magpie serve --listen tls+proxy://127.0.0.1:8080   # behind nginx; see docs/TRANSPORTS.md
  magpie serve --signup pow   # strangers may sign up, each solving a puzzle that floods make harder
  magpie serve --cluster nats://10.0.0.5:4222,nats://10.0.0.6:4222 --node web1   # one node of several on one shared database`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.signup != "open" && o.signup != "invite" && o.signup != "pow" {
				return usageError{fmt.Errorf("--signup is open, invite or pow, not %q", o.signup)}
			}
			if o.pow.MinBits < 1 || o.pow.MaxBits < o.pow.MinBits || o.pow.MaxBits > signuppow.MaxBits {
				return usageError{fmt.Errorf("--signup-pow-min and --signup-pow-max: want 1 ≤ min ≤ max ≤ %d, not %d and %d", signuppow.MaxBits, o.pow.MinBits, o.pow.MaxBits)}
			}
			if o.memoryLimit < 0 || o.memoryLimit > 0 && o.memoryLimit < 64<<20 {
				return usageError{fmt.Errorf("--memory-limit is 0 (none) or at least 64 MiB (67108864), not %d", o.memoryLimit)}
			}
			o.admin.explicit = cmd.Flags().Changed("admin")
			return serve(cmd.Context(), g, o)
		},
	}
	c.Flags().StringVar(&o.data, "data", "magpie-data", "server data directory (store and key)")
	// Loopback by default: exposing a server to the network is a decision,
	// and a public server needs --advertise with its public name anyway.
	c.Flags().StringArrayVar(&o.listen, "listen", []string{"127.0.0.1:" + strconv.Itoa(DefaultPort)}, "[tcp|obfs|tls|tls+proxy://]host:port to listen on (repeatable); :7443 is every interface")
	c.Flags().StringArrayVar(&o.advertise, "advertise", nil, "host:port to put in the invite (repeatable; default: the listen addresses, with this machine's IPs for wildcard hosts)")
	c.Flags().IntVar(&o.queueLimit, "queue-limit", 10_000, "undelivered messages kept per device")
	c.Flags().IntVar(&o.senderShare, "sender-share", 0, "most undelivered messages one sender may have in a device's queue (default: a quarter of --queue-limit; -1: no share)")
	c.Flags().StringVar(&o.tlsOpts.certFile, "tls-cert", "", "tls transport: certificate file (PEM); default: a self-signed one, pinned by clients")
	c.Flags().StringVar(&o.tlsOpts.keyFile, "tls-key", "", "tls transport: private key file (PEM)")
	c.Flags().StringVar(&o.tlsOpts.sni, "tls-sni", "", "tls transport: server name clients send (default: the certificate's, or with the self-signed one a cover name generated for this server)")
	c.Flags().StringVar(&o.tlsOpts.path, "tls-path", tlsws.DefaultPath, "tls transport: WebSocket path")
	c.Flags().StringVar(&o.tlsOpts.fallback, "tls-fallback", "", "tls transport: host:port of a real HTTPS website with the same certificate (your site, or a local nginx) that gets, byte for byte, every connection that is not a Magpie client; see docs/TRANSPORTS.md")
	c.Flags().StringVar(&o.tlsOpts.decoyDir, "tls-decoy-dir", "", "tls transport without --tls-fallback: serve this static site instead of the one generated for this server")
	c.Flags().StringVar(&o.tlsOpts.acmeDomain, "tls-acme", "", "tls transport: get certificates for this domain from Let's Encrypt (needs its DNS pointing here and port 443 open)")
	c.Flags().DurationVar(&o.ttl, "ttl", 30*24*time.Hour, "how long undelivered messages (and attachments) are kept")
	c.Flags().Int64Var(&o.maxAttachment, "max-attachment", 2<<30, "largest attachment (file size) in bytes")
	c.Flags().StringVar(&o.admin.addr, "admin", "127.0.0.1:9465", "admin listener for /metrics (Prometheus) and /debug/pprof; keep it private; empty disables")
	c.Flags().Int64Var(&o.quota, "attachment-quota", 10<<30, "attachment bytes an account may keep on the server")
	c.Flags().StringVar(&o.signup, "signup", "open", "who may open an account: open (anyone with the invite), invite (only with a sign-up code: magpie invite --signup) or pow (anyone with the invite who solves a puzzle that gets harder as sign-ups come faster)")
	c.Flags().IntVar(&o.pow.MinBits, "signup-pow-min", 18, "with --signup pow: the puzzle's difficulty in bits when sign-ups are few (2^bits hashes: 18 is about 20 ms of a server's two cores)")
	c.Flags().IntVar(&o.pow.MaxBits, "signup-pow-max", 26, "with --signup pow: the difficulty sign-up floods raise it to at most (26 is about 6 s of a server's two cores; up to a minute on a phone)")
	c.Flags().Int64Var(&o.memoryLimit, "memory-limit", 0, "memory the server aims to stay under, in bytes (Go's soft limit, like GOMEMLIMIT; output waiting for slow clients gets at most a quarter of it); 0: no limit")
	c.Flags().StringVar(&o.cluster, "cluster", "", "join a cluster of nodes that share one database, through these NATS servers (nats://host:port[,nats://…]); see docs/ARCHITECTURE.md, \"Several nodes\"")
	c.Flags().StringVar(&o.node, "node", "", "with --cluster: this node's name, in logs and as its NATS connection's name (default: the host name)")
	c.Flags().StringVar(&o.store, "store", "pebble", "where queues are kept: sqlite (everything in magpie.db), pebble (queues and groups in a Pebble LSM in queues/, accounts and keys in magpie.db) or a postgres:// URL (accounts, queues, attachments and sign-up codes in that PostgreSQL database, which several servers may share)")
	g.addJSON(c)
	return c
}

// serveOptions are serve's flags.
type serveOptions struct {
	data                 string
	listen, advertise    []string
	queueLimit           int
	senderShare          int
	ttl                  time.Duration
	tlsOpts              tlsOptions
	maxAttachment, quota int64
	admin                adminOptions
	signup               string
	pow                  server.SignupPoW
	memoryLimit          int64
	store                string
	cluster, node        string
}

// storeNames says what each --store keeps where, for the banner.
var storeNames = map[string]string{
	"pebble":   "queues in Pebble, accounts in SQLite",
	"sqlite":   "SQLite, WAL",
	"postgres": "keys and endpoint list here; accounts, queues, attachments and sign-up codes in PostgreSQL",
}

// isPostgresURL reports whether --store names a PostgreSQL database.
func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// storeName is the banner's description of --store kind (a URL is not
// shown: it may hold a password).
func storeName(kind string) string {
	if isPostgresURL(kind) {
		return storeNames["postgres"]
	}
	return storeNames[kind]
}

// pgOpenTimeout bounds connecting to PostgreSQL and migrating its schema
// at start.
const pgOpenTimeout = time.Minute

// openStore opens the store --store names in the data directory.
func openStore(kind, data string, log *slog.Logger) (store.Store, error) {
	switch kind {
	case "sqlite":
		// Going back would leave Pebble's queues unread.
		if _, err := os.Stat(filepath.Join(data, "queues")); err == nil {
			return nil, usageError{fmt.Errorf("%s keeps its queues in Pebble (queues/): serve it with --store pebble", data)}
		}
		return sqlite.Open(filepath.Join(data, "magpie.db"), sqlite.Options{Logger: log})
	case "pebble":
		return pebblestore.Open(data, pebblestore.Options{Logger: log})
	}
	if isPostgresURL(kind) {
		ctx, cancel := context.WithTimeout(context.Background(), pgOpenTimeout)
		defer cancel()
		return pgstore.Open(ctx, kind, pgstore.Options{Logger: log})
	}
	return nil, usageError{errors.New("--store is sqlite, pebble or a postgres:// URL")}
}

// blobStore is an attachment store serve opens and closes.
type blobStore interface {
	blobstore.Blobs
	Close() error
}

// openBlobs opens the attachment store: in the PostgreSQL database with
// --store postgres://…, so that the servers of a cluster share
// attachments, or else in the data directory.
func openBlobs(kind, data string, opts blobstore.Options) (blobStore, error) {
	if isPostgresURL(kind) {
		ctx, cancel := context.WithTimeout(context.Background(), pgOpenTimeout)
		defer cancel()
		return pgblobs.Open(ctx, kind, opts)
	}
	return blobstore.Open(filepath.Join(data, "blobs"), opts)
}

// openSignupCodes opens the sign-up codes where openBlobs keeps
// attachments; close is a no-op for the data directory's.
func openSignupCodes(kind, data string, log *slog.Logger) (codes signupcodes.Codes, close func() error, err error) {
	if !isPostgresURL(kind) {
		return signupcodes.Book{Dir: data}, func() error { return nil }, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), pgOpenTimeout)
	defer cancel()
	b, err := pgcodes.Open(ctx, kind, pgcodes.Options{Logger: log, MaxConns: 2})
	if err != nil {
		return nil, nil, err
	}
	return b, b.Close, nil
}

// adminOptions is --admin and whether it was given explicitly.
type adminOptions struct {
	addr     string
	explicit bool
}

func serve(ctx context.Context, g *globals, o serveOptions) error {
	data, listen, advertise, queueLimit, ttl, tlsOpts := o.data, o.listen, o.advertise, o.queueLimit, o.ttl, o.tlsOpts
	var pow *server.SignupPoW
	if o.signup == "pow" {
		pow = &o.pow
	}
	log := g.logger()
	if queueLimit < 1 || ttl < time.Minute {
		return errors.New("--queue-limit must be at least 1 and --ttl at least 1m")
	}
	if o.cluster != "" && !isPostgresURL(o.store) {
		// Nodes on embedded stores would each keep their own queues.
		return usageError{errors.New("--cluster needs the nodes' shared database: add --store postgres://…")}
	}
	// Catch signals before anything else: a supervisor that sends SIGTERM as
	// soon as it sees the invite must get a graceful stop, not the default
	// action.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Listen before touching the data directory where possible, so a bad
	// --listen leaves nothing behind (a tls listener needs its secret and
	// certificate from it, after its address was checked).
	var lns []*listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, spec := range listen {
		if !strings.Contains(spec, "://") || strings.HasPrefix(spec, "tcp://") {
			ln, err := openListener(spec, data, tlsOpts)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	for _, spec := range listen {
		if strings.Contains(spec, "://") && !strings.HasPrefix(spec, "tcp://") {
			ln, err := openListener(spec, data, tlsOpts)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
	}

	key, err := server.LoadOrCreateKey(filepath.Join(data, "server.key"))
	if err != nil {
		return err
	}
	st, err := openStore(o.store, data, log)
	if err != nil {
		return err
	}
	defer st.Close()

	// The invite's plain addresses are the tcp listeners' (or --advertise);
	// the signed endpoint list names every public listener.
	var tcpLns, all []net.Listener
	for _, ln := range lns {
		all = append(all, ln)
		if ln.transport == transport.TCP {
			tcpLns = append(tcpLns, ln)
		}
	}
	inv := invite.Invite{ServerKey: key.Public, Addrs: advertise}
	if len(inv.Addrs) == 0 {
		inv.Addrs = advertised(tcpLns)
	}
	var implicit []endpoints.Endpoint
	for i, a := range inv.Addrs {
		p := 100 + i
		if o.cluster != "" {
			// The nodes (every node advertises them all) share one
			// priority, so that devices spread over them by key
			// (endpoints.Memory.Spread) instead of all taking the first.
			p = 100
		}
		implicit = append(implicit, endpoints.Endpoint{Transport: transport.TCP, Address: a, Priority: p})
	}
	for i, ln := range lns {
		if ln.transport == transport.TCP || !ln.public {
			continue
		}
		for _, a := range advertised([]net.Listener{ln}) {
			e := ln.template
			e.Address, e.Priority = a, 50+i
			implicit = append(implicit, e)
		}
	}
	pub, err := newPublisher(data, key, implicit, inv.Addrs)
	if err != nil {
		return fmt.Errorf("endpoint list: %w", err)
	}
	// --max-attachment is the file's size; the server stores it encrypted,
	// 16 bytes per 64 KiB larger.
	blobs, err := openBlobs(o.store, data, blobstore.Options{MaxSize: attach.EncryptedSize(o.maxAttachment), Quota: o.quota, TTL: ttl})
	if err != nil {
		return fmt.Errorf("attachment store: %w", err)
	}
	defer blobs.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := server.Config{Key: key, Store: st, Logger: log, QueueLimit: queueLimit, SenderShare: o.senderShare, TTL: ttl, Endpoints: pub.Current, Blobs: blobs,
		Metrics: server.NewMetrics(reg), SignupPoW: pow}
	var clusterNote string
	if o.cluster != "" {
		bus, err := natsbus.Connect(natsbus.Options{URLs: o.cluster, Node: o.node, Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
		defer bus.Close() // after the server's shutdown below
		cfg.Peers = bus
		clusterNote = fmt.Sprintf("node %s, through NATS at %s", bus.Node(), bus.ConnectedURL())
	}
	if o.memoryLimit > 0 {
		debug.SetMemoryLimit(o.memoryLimit)
		cfg.MaxUnsent = min(server.DefaultMaxUnsent, o.memoryLimit/4)
	}
	if o.signup == "invite" {
		codes, closeCodes, err := openSignupCodes(o.store, data, log)
		if err != nil {
			return fmt.Errorf("sign-up codes: %w", err)
		}
		defer closeCodes()
		cfg.SignupCodes = codes
	}
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	var adminAddr string
	if admin := o.admin; admin.addr != "" {
		stopAdmin, addr, err := serveAdmin(admin.addr, reg, g)
		switch {
		case err != nil && admin.explicit:
			return err
		case err != nil:
			// The default address is taken (another server here?): run
			// without it rather than not at all.
			log.Warn("no admin listener: its default address is in use; choose one with --admin", "err", err)
		default:
			defer stopAdmin()
			adminAddr = addr
		}
	}
	abs, _ := filepath.Abs(data)
	if g.json {
		var listening []map[string]any
		for _, ln := range lns {
			listening = append(listening, map[string]any{"transport": ln.transport, "address": ln.Addr().String(), "public": ln.public})
		}
		if err := g.printJSON(map[string]any{"version": Version, "data": abs, "listening": listening,
			"fingerprint": inv.Fingerprint(), "admin": adminAddr, "invite": pub.Invite(), "cluster": clusterNote}); err != nil {
			return err
		}
	} else {
		g.printBanner(abs, o.store, lns, inv.Fingerprint(), onlyLoopback(all), adminAddr, clusterNote, pub.Invite())
	}

	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	// Publish operator edits (magpie endpoints add|retire) even when no
	// client asks, so that `magpie invite` is current; collect expired and
	// fully fetched attachments.
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		lastGC := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				pub.Current()
				if time.Since(lastGC) > 5*time.Minute {
					lastGC = time.Now()
					if n, err := blobs.GC(); err != nil {
						log.Error("attachment garbage collection", "err", err)
					} else if n > 0 {
						log.Info("removed expired or fetched attachments", "count", n)
					}
				}
			}
		}
	}()
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, server.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		log.Error("listener failed; shutting down", "err", serveErr)
	}
	stop() // ends the publisher's ticker on either path
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; connections closed", "err", err)
	}
	wg.Wait()
	if err := st.Close(); err != nil {
		return fmt.Errorf("closing store: %w", err)
	}
	log.Info("stopped")
	return serveErr
}

// advertised turns listen addresses into addresses a client can dial: a
// wildcard host becomes this machine's unicast addresses (global ones first,
// loopback last).
func advertised(lns []net.Listener) []string {
	var out, loop []string
	seen := map[string]bool{}
	add := func(list *[]string, a string) {
		if !seen[a] {
			seen[a] = true
			*list = append(*list, a)
		}
	}
	for _, ln := range lns {
		ta, ok := ln.Addr().(*net.TCPAddr)
		if !ok {
			add(&out, ln.Addr().String())
			continue
		}
		port := strconv.Itoa(ta.Port)
		if !ta.IP.IsUnspecified() {
			add(&out, net.JoinHostPort(ta.IP.String(), port))
			continue
		}
		ifaddrs, _ := net.InterfaceAddrs()
		for _, ia := range ifaddrs {
			ipn, ok := ia.(*net.IPNet)
			if !ok || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsMulticast() {
				continue
			}
			if ta.IP.To4() != nil && ipn.IP.To4() == nil {
				continue // listening on 0.0.0.0 only
			}
			a := net.JoinHostPort(ipn.IP.String(), port)
			if ipn.IP.IsLoopback() {
				add(&loop, a)
			} else {
				add(&out, a)
			}
		}
	}
	out = append(out, loop...)
	if len(out) > invite.MaxAddrs {
		out = out[:invite.MaxAddrs]
	}
	return out
}

func onlyLoopback(lns []net.Listener) bool {
	for _, ln := range lns {
		ta, ok := ln.Addr().(*net.TCPAddr)
		if !ok || !ta.IP.IsLoopback() {
			return false
		}
	}
	return true
}

// serveAdmin serves Prometheus metrics and pprof profiles on their own
// listener, kept apart from client traffic (and on loopback by default:
// profiles and metrics are for the operator).
func serveAdmin(addr string, reg *prometheus.Registry, g *globals) (stop func(), bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("--admin %s: %w", addr, err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		g.logger().Warn("the admin listener is not on loopback: metrics and profiles are visible to anyone who can reach it", "addr", ln.Addr())
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	return func() { hs.Close() }, ln.Addr().String(), nil
}

// printBanner tells a person where the server runs and how to connect.
func (g *globals) printBanner(abs, storeKind string, lns []*listener, fingerprint string, loopback bool, adminAddr, cluster, invite string) {
	fmt.Fprintf(g.stdout, "Magpie server %s\n", Version)
	fmt.Fprintf(g.stdout, "  data:        %s (%s)\n", abs, storeName(storeKind))
	for _, ln := range lns {
		note := ln.note
		if !ln.public {
			note = " (behind a proxy: publish its address with magpie endpoints add)"
		}
		fmt.Fprintf(g.stdout, "  listening:   %s %s%s\n", ln.transport, ln.Addr(), note)
	}
	fmt.Fprintf(g.stdout, "  fingerprint: %s\n", fingerprint)
	if loopback {
		fmt.Fprintf(g.stdout, "  note:        loopback only; for other machines use --listen :%d --advertise YOUR_HOST:%d\n", DefaultPort, DefaultPort)
	}
	if cluster != "" {
		fmt.Fprintf(g.stdout, "  cluster:     %s\n", cluster)
	}
	if adminAddr != "" {
		fmt.Fprintf(g.stdout, "  admin:       http://%s/metrics and /debug/pprof (keep it private)\n", adminAddr)
	}
	fmt.Fprintf(g.stdout, "Clients connect with: magpie init --invite '<invite>'\n")
	fmt.Fprintf(g.stdout, "Invite (give it to your users over a channel you trust):\n")
	fmt.Fprintln(g.stdout, invite)
}
