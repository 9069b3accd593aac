// Package client is the Magpie client SDK: one device of one account, with
// its state kept sealed in a Store.
//
// A Client is the engine of its home: Run keeps one connection to the
// server, sends the durable outbox, receives and stores messages (and only
// then acknowledges them), transfers attachments resumably and follows
// receipts. Everything else (Send, SendFile, History, the event stream) is
// safe to call while it runs, from any goroutine; calls that need the
// server use Run's connection, or dial a short one when Run is not running.
//
//	c, err := client.Open(ctx, client.Options{Home: dir, Unlocker: client.KeyUnlocker(key)})
//	go c.Run(ctx)
//	sub := c.Subscribe()
//	c.Send(ctx, "bob", "hello")
//	for ev := range sub.Events() { … }
//
// Every payload a Client sends is end-to-end ciphertext (package e2e: a
// Signal-protocol session per device); the server sees only opaque bytes.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/flock"
	"github.com/magpie-im/magpie/internal/vault"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
)

// Options configure a Client.
type Options struct {
	// Home is the client's directory: its lock, attachment files and, with
	// the default Store, its state (required).
	Home string
	// Store keeps the state; nil means NewSQLiteStore(Home/client.db).
	Store Store
	// Unlocker supplies the key that seals the state (required).
	Unlocker Unlocker
	// DownloadDir is where received attachments are saved (Home/downloads).
	DownloadDir string
	// Dial tunes connections to the server (see DialOptions).
	Dial DialOptions
	// Keepalive, if set, is how often (on average, never at a fixed
	// period) an idle connection pings the server; a path silent for 2.5
	// pings (at least one ping and a second) is given up, which is how a
	// client that only receives notices a black-holed path. Shorter means
	// faster failover and more pings for the server to answer. The default
	// (0) is DefaultKeepalive, with TCP keepalive underneath.
	Keepalive time.Duration
	// Logger gets diagnostics (never message contents); nil discards them.
	Logger *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time
}

// DialOptions tune connections to the server: timeouts, keepalive, and
// dialers for tests. Zero fields take defaults.
type DialOptions = clientconn.DialOptions

// TransportDialer opens a connection to one endpoint of a transport.
type TransportDialer = clientconn.TransportDialer

// DefaultKeepalive is how often an idle client pings the server.
const DefaultKeepalive = clientconn.DefaultKeepalive

// DeviceAddr names one device of one user.
type DeviceAddr struct {
	User   string
	Device uint32
}

// ErrNotInitialized means the home has no client yet.
var ErrNotInitialized = errors.New("no Magpie client here yet")

// ErrHomeInUse means another Client (in this process or another) has the
// home open: a home has one engine at a time.
var ErrHomeInUse = errors.New("another Magpie engine is using this home")

// lockFile is the home's lock, held by the Client that has it open.
const lockFile = "engine.lock"

// Client is one device's state plus the engine that keeps it in step with
// its server.
type Client struct {
	opts Options
	st   Store
	seal Sealer
	lock *os.File
	key  link.KeyPair
	inv  invite.Invite

	mu      sync.Mutex
	account DeviceAddr
	prefs   prefs
	states  stateCache // decoded group states (groups.go)
	eng     engineState
	subs    map[*Subscription]struct{}
	closed  bool

	dialNow chan struct{} // capacity 1: reconnect now
	// expireNow (capacity 1) wakes the expiry loop: a message that will
	// disappear was stored.
	expireNow chan struct{}
}

// prefs are the user's settings.
type prefs struct {
	NoReadReceipts bool `json:"no_read_receipts,omitempty"`
	// PlainTCP: the user allows plain tcp endpoints the operator did not
	// mark safe (endpoints.Order).
	PlainTCP bool `json:"plain_tcp,omitempty"`
}

func (o *Options) setDefaults() error {
	if o.Home == "" {
		return errors.New("client: Options.Home is required")
	}
	if o.Unlocker == nil {
		return errors.New("client: Options.Unlocker is required: the local state is encrypted")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DownloadDir == "" {
		o.DownloadDir = filepath.Join(o.Home, "downloads")
	}
	if d := o.Keepalive; d > 0 {
		o.Dial.Link.KeepaliveInterval = d
		o.Dial.Link.IdleTimeout = max(d*5/2, d+time.Second)
	}
	return nil
}

// openHome locks the home and opens its store; create makes both as needed.
func openHome(opts *Options, create bool) (*os.File, Store, error) {
	if create {
		if err := os.MkdirAll(opts.Home, 0o700); err != nil {
			return nil, nil, fmt.Errorf("client home %s: %w", opts.Home, err)
		}
	} else if opts.Store == nil {
		if _, err := os.Stat(filepath.Join(opts.Home, StoreFileName)); errors.Is(err, os.ErrNotExist) {
			return nil, nil, ErrNotInitialized
		}
	}
	lock, err := flock.Lock(filepath.Join(opts.Home, lockFile))
	if errors.Is(err, flock.ErrLocked) {
		return nil, nil, ErrHomeInUse
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, ErrNotInitialized
	}
	if err != nil {
		return nil, nil, fmt.Errorf("client home %s: %w", opts.Home, err)
	}
	st := opts.Store
	if st == nil {
		if st, err = NewSQLiteStore(filepath.Join(opts.Home, StoreFileName)); err != nil {
			lock.Close()
			return nil, nil, err
		}
	}
	return lock, st, nil
}

// ErrVaultCorrupt means the vault header, the clear record that unlocks
// the client's state, is damaged: no passphrase or key can open the state
// until it is restored. It wraps ErrCorrupt.
var ErrVaultCorrupt = fmt.Errorf("%w: its vault header (the record that unlocks it) is corrupted, so no passphrase or key can open it "+
	"(the passphrase or key given is not the problem): restore the home's %s from a backup, or set up a new home (magpie init) and register again", ErrCorrupt, StoreFileName)

// vaultSum is the checksum kept beside the vault header (in nsMeta), so
// that a damaged header is told from a wrong passphrase: the header's own
// check cannot tell them apart.
func vaultSum(h []byte) []byte {
	s := sha256.Sum256(append([]byte("magpie vault header sum\x00"), h...))
	return s[:]
}

// unlock opens (or, with create, makes) the vault that seals the state.
func unlock(ctx context.Context, st Store, u Unlocker, create bool) (Sealer, error) {
	var h, sum []byte
	err := st.View(ctx, func(r ReadTx) error {
		var err error
		if h, err = r.Get(nsMeta, "vault"); err == nil && h == nil {
			h, err = r.Get(nsLegacySettings, "vault_header")
		}
		if err == nil {
			sum, err = r.Get(nsMeta, "vault.sum")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	switch {
	case h != nil:
		return openVault(ctx, st, u, h, sum)
	case !create:
		return nil, ErrNotInitialized
	}
	sl, h, err := u.Create()
	if err != nil {
		return nil, err
	}
	return sl, st.Update(ctx, func(w Tx) error {
		if err := w.Put(nsMeta, "vault", h); err != nil {
			return err
		}
		return w.Put(nsMeta, "vault.sum", vaultSum(h))
	})
}

// openVault unlocks header h, whose stored checksum is sum (nil in homes
// made before there was one: it is added once the header has opened).
func openVault(ctx context.Context, st Store, u Unlocker, h, sum []byte) (Sealer, error) {
	intact := sum != nil && bytes.Equal(sum, vaultSum(h))
	sl, err := u.Unlock(h)
	switch {
	case errors.Is(err, vault.ErrBadHeader):
		return nil, fmt.Errorf("%w (%w)", ErrVaultCorrupt, err)
	case err != nil && sum != nil && !intact && (errors.Is(err, vault.ErrWrongPassphrase) || errors.Is(err, vault.ErrWrongKey)):
		// The header no longer matches its checksum: its check value,
		// salt or parameters changed, which reads as a wrong secret.
		return nil, fmt.Errorf("%w (its checksum does not match)", ErrVaultCorrupt)
	case err != nil:
		return nil, err
	case !intact:
		// It opened, so the header is good: a home from before the
		// checksum, or a damaged checksum. Record the right one (next
		// time, if the disk is full now).
		st.Update(ctx, func(w Tx) error { return w.Put(nsMeta, "vault.sum", vaultSum(h)) })
	}
	return sl, nil
}

// Init prepares opts.Home (and opts.Store) for a new client of the server in
// inv: it creates the device's private key (once; running Init again with a
// new invite keeps the key and the account) and records the invite.
func Init(ctx context.Context, opts Options, inv invite.Invite) error {
	if err := opts.setDefaults(); err != nil {
		return err
	}
	if _, err := clientconn.InviteEndpoints(inv, opts.Now()); err != nil {
		return err
	}
	lock, st, err := openHome(&opts, true)
	if err != nil {
		return err
	}
	defer lock.Close()
	if opts.Store == nil {
		defer st.Close() // a Store the caller gave stays open, for Open
	}
	sl, err := unlock(ctx, st, opts.Unlocker, true)
	if err != nil {
		return err
	}
	if err := convertLegacy(ctx, st, sl); err != nil {
		return err
	}
	return st.Update(ctx, func(w Tx) error {
		t := sealedTx{r: w, w: w, s: sl}
		k, err := t.Get(nsSettings, "device_key")
		if err != nil {
			return err
		}
		if k == nil {
			kp, err := link.GenerateKey(rand.Reader)
			if err != nil {
				return fmt.Errorf("generating device key: %w", err)
			}
			if err := t.Put(nsSettings, "device_key", kp.Private[:]); err != nil {
				return err
			}
		}
		return t.Put(nsSettings, "invite", []byte(inv.String()))
	})
}

// Open opens the client in opts.Home, which Init must have prepared. The
// Client holds the home until Close: a second Open of it, in this process
// or another, fails with ErrHomeInUse.
func Open(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	lock, st, err := openHome(&opts, false)
	if err != nil {
		return nil, err
	}
	c := &Client{opts: opts, st: st, lock: lock, subs: map[*Subscription]struct{}{}, dialNow: make(chan struct{}, 1), expireNow: make(chan struct{}, 1)}
	c.eng.init()
	c.eng.status = Status{State: ConnStopped, Since: opts.Now()}
	if err := c.load(ctx); err != nil {
		st.Close()
		lock.Close()
		return nil, err
	}
	// Sealed copies that a crash left half written.
	if left, err := filepath.Glob(filepath.Join(opts.Home, filesDir, ".staging-*")); err == nil {
		for _, f := range left {
			os.Remove(f)
		}
	}
	return c, nil
}

func (c *Client) load(ctx context.Context) error {
	var err error
	if c.seal, err = unlock(ctx, c.st, c.opts.Unlocker, false); err != nil {
		return err
	}
	if err := convertLegacy(ctx, c.st, c.seal); err != nil {
		return err
	}
	var invText, k []byte
	var acct DeviceAddr
	err = c.view(ctx, func(t sealedTx) error {
		if invText, err = t.Get(nsSettings, "invite"); err != nil {
			return err
		}
		if k, err = t.Get(nsSettings, "device_key"); err != nil {
			return err
		}
		if _, err := getJSON(t, nsSettings, "account", &acct); err != nil {
			return err
		}
		_, err = getJSON(t, nsSettings, "prefs", &c.prefs)
		return err
	})
	if err != nil {
		return err
	}
	if invText == nil || len(k) != 32 {
		return ErrNotInitialized
	}
	if c.inv, err = invite.Parse(string(invText)); err != nil {
		return fmt.Errorf("%w: the stored invite: %w", ErrCorrupt, err)
	}
	if c.key, err = link.KeyPairFromPrivate([32]byte(k)); err != nil {
		return fmt.Errorf("%w: the stored device key: %w", ErrCorrupt, err)
	}
	c.account = acct
	return nil
}

// update runs fn in a sealed write transaction.
func (c *Client) update(ctx context.Context, fn func(t sealedTx) error) error {
	return c.st.Update(ctx, func(w Tx) error { return fn(sealedTx{r: w, w: w, s: c.seal}) })
}

// view runs fn in a sealed read transaction.
func (c *Client) view(ctx context.Context, fn func(t sealedTx) error) error {
	return c.st.View(ctx, func(r ReadTx) error { return fn(sealedTx{r: r, s: c.seal}) })
}

// Close stops delivering events and releases the state and the home. Stop
// Run (cancel its context) first.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for s := range c.subs {
		s.close()
	}
	c.subs = nil
	c.mu.Unlock()
	return errors.Join(c.st.Close(), c.lock.Close())
}

// Home is the client's directory.
func (c *Client) Home() string { return c.opts.Home }

// Invite returns the server this client uses.
func (c *Client) Invite() invite.Invite { return c.inv }

// PublicKey is this device's Noise static public key.
func (c *Client) PublicKey() [32]byte { return c.key.Public }

// Account returns the registered account, if any.
func (c *Client) Account() (DeviceAddr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.account, c.account.User != ""
}

func (c *Client) saveAccount(ctx context.Context, d DeviceAddr) error {
	c.mu.Lock()
	same := c.account == d
	c.mu.Unlock()
	if same {
		return nil
	}
	if err := c.update(ctx, func(t sealedTx) error { return putJSON(t, nsSettings, "account", d) }); err != nil {
		return err
	}
	c.mu.Lock()
	c.account = d
	c.mu.Unlock()
	return nil
}

// ReadReceipts reports whether this client tells senders when their
// messages were read.
func (c *Client) ReadReceipts() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.prefs.NoReadReceipts
}

// SetReadReceipts turns read receipts on or off. Off, this client sends
// none (and still shows the receipts of contacts who send them).
func (c *Client) SetReadReceipts(ctx context.Context, on bool) error {
	return c.setPrefs(ctx, func(p *prefs) { p.NoReadReceipts = !on })
}

// setPrefs changes the user's settings with change and stores them.
func (c *Client) setPrefs(ctx context.Context, change func(*prefs)) error {
	c.mu.Lock()
	p := c.prefs
	c.mu.Unlock()
	change(&p)
	if err := c.update(ctx, func(t sealedTx) error { return putJSON(t, nsSettings, "prefs", p) }); err != nil {
		return err
	}
	c.mu.Lock()
	c.prefs = p
	c.mu.Unlock()
	return nil
}

// seqKey is the fixed-width form of a local sequence number, so that keys
// sort in number order.
func seqKey(seq uint64) string { return fmt.Sprintf("%016x", seq) }

func parseSeqKey(k string) (uint64, error) { return strconv.ParseUint(k, 16, 64) }

// nextSeq allocates the next local sequence number inside t.
func nextSeq(t sealedTx) (uint64, error) {
	var n uint64
	b, err := t.Get(nsMeta, "seq")
	if err != nil {
		return 0, err
	}
	if b != nil {
		if err := json.Unmarshal(b, &n); err != nil {
			return 0, fmt.Errorf("%w: the sequence counter: %w", ErrCorrupt, err)
		}
	}
	n++
	return n, putJSON(t, nsMeta, "seq", n)
}
