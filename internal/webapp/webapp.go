// Package webapp is the browser side of `magpie app`: a loopback HTTP server
// that serves the embedded web app under / and the engine's local API
// (docs/LOCAL_API.md) under /api/v1/, behind the guard that the doc's
// section "The web app's guard" describes (guard.go).
//
// Everything the browser loads is embedded (assets/), so the app works
// offline and fetches nothing from anywhere else.
package webapp

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var embedded embed.FS

// Server timeouts. There is deliberately no ReadTimeout or WriteTimeout:
// /api/v1/events is a Server-Sent Events stream that stays open as long as
// the page does, and a large upload (POST /api/v1/files) or download can
// take longer than any fixed bound. A slow client costs only its own
// connection on loopback.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

// shutdownGrace is how long Close lets requests in flight finish after
// their contexts were cancelled, before it closes their connections. A
// variable so that a test can shorten it.
var shutdownGrace = 5 * time.Second

// App is a running web app server. Its methods are safe for concurrent use.
type App struct {
	addr   string // "127.0.0.1:PORT"
	origin string // "http://127.0.0.1:PORT"
	alt    string // "http://localhost:PORT"
	log    *slog.Logger
	api    http.Handler
	assets fs.FS
	guard  *guard
	srv    *http.Server

	cancel    context.CancelFunc // cancels every request's context
	served    chan struct{}      // closed when Serve has returned
	serveErr  error              // Serve's error, other than ErrServerClosed; read after served
	inflight  sync.WaitGroup     // handlers running
	closeOnce sync.Once
	closeErr  error
}

// Start listens on 127.0.0.1 at a random port and serves the app: the
// embedded assets under /, and api (the engine's handler, which serves
// /api/v1/...) under /api/v1/. A nil logger discards.
//
// api's handlers must return once their request's context is done: Close
// cancels every request's context and then waits for the handlers (the
// events stream included).
func Start(api http.Handler, logger *slog.Logger) (*App, error) {
	if api == nil {
		return nil, errors.New("webapp: nil api handler")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	assets, err := fs.Sub(embedded, "assets")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	base, cancel := context.WithCancel(context.Background())
	a := &App{
		addr:   "127.0.0.1:" + port,
		origin: "http://127.0.0.1:" + port,
		alt:    "http://localhost:" + port,
		log:    logger,
		api:    api,
		assets: assets,
		guard:  newGuard(port),
		cancel: cancel,
		served: make(chan struct{}),
	}
	a.srv = &http.Server{
		Handler:           a,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(a.served)
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.serveErr = err
		}
	}()
	logger.Info("web app listening", "addr", a.addr)
	return a, nil
}

// Addr is the address the app listens on, "127.0.0.1:PORT".
func (a *App) Addr() string { return a.addr }

// LoginURL returns http://127.0.0.1:PORT/?token=T with a fresh one-time
// token: it can be exchanged once, within tokenTTL, for a session cookie.
// Each call makes a new token; older ones stay valid until used or expired.
func (a *App) LoginURL() (string, error) {
	t, err := a.guard.newToken(time.Now())
	if err != nil {
		return "", err
	}
	return a.origin + "/?token=" + t, nil
}

// Close shuts the server down: it stops accepting, cancels every request's
// context (which ends the events streams), gives requests in flight
// shutdownGrace to finish, closes what is left and waits for the serving
// goroutine and every handler to return. Later calls return the same error.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		err := a.srv.Shutdown(ctx)
		cancel()
		if err != nil {
			// The grace period ran out: close the remaining connections.
			err = a.srv.Close()
		}
		<-a.served
		a.inflight.Wait()
		a.closeErr = errors.Join(err, a.serveErr)
		a.log.Info("web app stopped", "addr", a.addr)
	})
	return a.closeErr
}

// ServeHTTP runs the guard, then hands the request to the API or the
// assets.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.inflight.Add(1)
	defer a.inflight.Done()
	setSecurityHeaders(w.Header())
	if !a.admit(w, r) {
		return
	}
	switch {
	case r.URL.Path == "/api/v1" || strings.HasPrefix(r.URL.Path, "/api/v1/"):
		w.Header().Set("Cache-Control", "no-store")
		a.api.ServeHTTP(w, r)
	case r.URL.Path == "/api" || strings.HasPrefix(r.URL.Path, "/api/"):
		w.Header().Set("Cache-Control", "no-store")
		writeAPIError(w, http.StatusNotFound, "not_found", "no such API endpoint", "this app speaks /api/v1/")
	default:
		a.serveAsset(w, r)
	}
}

// contentTypes are the asset types the app uses, set explicitly so that the
// answer does not depend on the system's MIME tables (with nosniff, a
// script served as text/plain would not run).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
}

// serveAsset serves one embedded file. "/" is index.html; directories are
// not listed; anything else is 404.
func (a *App) serveAsset(w http.ResponseWriter, r *http.Request) {
	// Local files: always fetch the current ones, so an upgraded binary's
	// app is never mixed with a cached older script.
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := r.URL.Path[1:]
	if name == "" {
		name = "index.html"
	}
	ctype, ok := contentTypes[path.Ext(name)]
	if !ok {
		http.NotFound(w, r)
		return
	}
	// fs.ReadFile fails on directories and on paths that are not valid
	// (fs.ValidPath: no "..", no leading slash).
	b, err := fs.ReadFile(a.assets, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}
