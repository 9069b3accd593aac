// Package engine runs a client home's engine for the magpie command: it
// opens the client (which locks the home), runs its connection
// (client.Run), and serves the local API (docs/LOCAL_API.md) on a Unix
// socket that only this user can reach, and, on request, the web app on
// loopback. Every client command talks to the engine through that API,
// whichever process runs it: the one that found no engine running starts
// one, and the others connect to it (Connect), so no command ever knocks
// another offline.
package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/webapp"
)

// SocketName is the engine's socket in the home.
const SocketName = "engine.sock"

// flushOnClose bounds how long Close waits for the outbox to empty.
const flushOnClose = 3 * time.Second

// Options start an engine.
type Options struct {
	// Client opens the home (Home and Unlocker are required).
	Client client.Options
	// Version is reported in the status.
	Version string
}

// Engine is a running engine for one home.
type Engine struct {
	c        *client.Client
	opts     Options
	ln       net.Listener
	srv      *http.Server
	stopping chan struct{}

	mu      sync.Mutex
	run     context.CancelFunc
	runDone chan struct{}
	runErr  error
	app     *webapp.App
	closed  bool
}

// SocketPath is where the engine of home listens. A Unix socket's path is
// limited to about 100 bytes: a home with a longer path gets its socket in
// a private directory under the system's temporary directory, named after
// the home.
func SocketPath(home string) (string, error) {
	abs, err := filepath.Abs(home)
	if err != nil {
		return "", err
	}
	if p := filepath.Join(abs, SocketName); len(p) < 100 {
		return p, nil
	}
	sum := sha256.Sum256([]byte(abs))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("magpie-%d", os.Getuid()))
	return filepath.Join(dir, hex.EncodeToString(sum[:12])+".sock"), nil
}

// Start opens the client in opts.Client.Home, starts its engine (Run) if
// it is registered, and serves the local API on the home's socket. It
// fails with client.ErrHomeInUse when another engine has the home.
func Start(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Client.Logger == nil {
		opts.Client.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := client.Open(ctx, opts.Client)
	if err != nil {
		return nil, err
	}
	e := &Engine{c: c, opts: opts, stopping: make(chan struct{})}
	if e.ln, err = listen(opts.Client.Home); err != nil {
		c.Close()
		return nil, err
	}
	e.srv = &http.Server{
		Handler:           newAPI(e, true),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Client.Logger.Handler(), slog.LevelDebug),
	}
	go e.srv.Serve(e.ln)
	if _, ok := c.Account(); ok {
		e.startRun()
	}
	return e, nil
}

// listen opens the home's socket. The caller holds the home's lock, so a
// socket file already there is a dead engine's, and goes.
func listen(home string) (net.Listener, error) {
	path, err := SocketPath(home)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("engine socket: %w", err)
	}
	if err := checkPrivateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("engine socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("engine socket: %w", err)
	}
	return sameUser(ln), nil
}

// checkPrivateDir refuses a socket directory that other users could
// reach.
func checkPrivateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("engine socket: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("engine socket: %s is open to other users (mode %v): make it private (chmod 700)", dir, fi.Mode().Perm())
	}
	return nil
}

// Client is the engine's client.
func (e *Engine) Client() *client.Client { return e.c }

// startRun starts client.Run in the background.
func (e *Engine) startRun() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run != nil || e.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.run, e.runDone = cancel, make(chan struct{})
	go func() {
		err := e.c.Run(ctx)
		e.mu.Lock()
		e.runErr = err
		e.mu.Unlock()
		close(e.runDone)
	}()
}

// register creates the account, then starts the engine.
func (e *Engine) register(ctx context.Context, name string) error {
	if _, err := e.c.Register(ctx, name); err != nil {
		return err
	}
	e.startRun()
	return nil
}

func (e *Engine) status(ctx context.Context) (Status, error) {
	me, ok := e.c.Account()
	st := e.c.Status()
	pk := e.c.PublicKey()
	out := Status{
		User: me.User, Device: me.Device, Registered: ok, State: string(st.State), Since: Time{st.Since},
		ServerFingerprint: e.c.Invite().Fingerprint(), DeviceKey: hex.EncodeToString(pk[:]),
		Version: e.opts.Version, ReadReceipts: e.c.ReadReceipts(), Home: e.opts.Client.Home,
	}
	if st.Err != nil {
		out.Error = st.Err.Error()
	}
	ob, err := e.c.Outbox(ctx)
	out.Outbox = len(ob)
	return out, err
}

// AppURL starts the web app if it is not running and returns a new login
// URL for it (a one-time token).
func (e *Engine) AppURL() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", errors.New("the engine is stopping")
	}
	if e.app == nil {
		app, err := webapp.Start(newAPI(e, false), e.opts.Client.Logger)
		if err != nil {
			return "", err
		}
		e.app = app
	}
	return e.app.LoginURL()
}

// Close stops the web app, the API and the engine, and releases the home.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	app, run, runDone := e.app, e.run, e.runDone
	e.mu.Unlock()
	close(e.stopping)
	// A command that ran the engine briefly may have queued something on
	// its way out (a read receipt, say): give it a moment to leave.
	if e.c.Status().State == client.ConnOnline {
		ctx, cancel := context.WithTimeout(context.Background(), flushOnClose)
		e.c.Flush(ctx)
		cancel()
	}
	var errs []error
	if app != nil {
		errs = append(errs, app.Close())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		e.srv.Close()
	}
	if run != nil {
		run()
		<-runDone
	}
	if path, err := SocketPath(e.opts.Client.Home); err == nil {
		os.Remove(path)
	}
	errs = append(errs, e.c.Close())
	return errors.Join(errs...)
}

// RunErr is why the engine's connection loop stopped for good (nil while
// it runs, or if it was stopped).
func (e *Engine) RunErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runErr
}
