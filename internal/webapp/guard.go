package webapp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The guard (docs/LOCAL_API.md, "The web app's guard"). Any web page the
// user visits can make their browser send requests to 127.0.0.1, and a
// DNS-rebinding page can even read the answers, so every request must prove
// that it comes from this app's own pages in a browser that opened the login
// link. In order, ServeHTTP checks:
//
//  1. Host is 127.0.0.1:PORT or localhost:PORT, else 421 Misdirected
//     Request. A rebinding page's requests carry its own host name; 421 (not
//     403) says "wrong server name" and keeps that case apart from a missing
//     session in logs and tests.
//  2. An Origin header, if present, is http://127.0.0.1:PORT or
//     http://localhost:PORT, else 403 (whatever the method).
//  3. Anything but GET and HEAD carries that Origin or, when a browser sent
//     no Origin, Sec-Fetch-Site: same-origin, else 403. So a cross-site form
//     cannot change state even if a cookie were sent.
//  4. Sec-Fetch-Site, when the browser sends it, is same-origin or none (the
//     user opened the link), else 403: no other site, not even another
//     port of 127.0.0.1, may make the browser send a request here.
//  5. GET /?token=T with a valid token (crypto/rand, 32 bytes, compared in
//     constant time, used once, expiring tokenTTL after it was made) is
//     exchanged for a new session: a cookie magpie_session_PORT (random 32
//     bytes; HttpOnly, SameSite=Strict, Path=/) and a 303 to /, which also
//     takes the token out of the address bar and the history. A spent,
//     expired or unknown token gets 403, or a 303 to / if the browser is
//     signed in already (the same link opened twice).
//  6. Every other request needs a valid session cookie, else 403 (the
//     assets too): a tiny page, or for /api/ the API's JSON error with the
//     code no_session, that says to run `magpie app` again for a new link.
//
// The server keeps only SHA-256 hashes of session ids, so looking one up
// in a map leaks no timing about a valid id. Tokens are few and short-lived;
// each candidate is compared with subtle.ConstantTimeCompare.
//
// Nothing here logs a token, a cookie or a header's value: a refusal is
// logged with its reason and the method only.

const (
	// cookiePrefix + the port names the session cookie. Cookies do not
	// keep ports apart, so one name for all would let two apps (two homes)
	// overwrite each other's sessions, and send one app's cookie to the
	// other.
	cookiePrefix = "magpie_session_"
	tokenTTL     = 5 * time.Minute
	// maxTokens bounds the tokens waiting to be used (LoginURL drops the
	// oldest beyond it); maxSessions bounds the sessions (a new login drops
	// the oldest). Only the local user can make tokens, so these are
	// generous.
	maxTokens   = 16
	maxSessions = 64
)

// The headers of every response (docs/LOCAL_API.md).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// No other site may embed this app's responses or keep a handle on its
	// window.
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

type token struct {
	value   string
	expires time.Time
}

type guard struct {
	cookie   string // the session cookie's name
	mu       sync.Mutex
	tokens   []token                     // oldest first
	sessions map[[32]byte]time.Time      // sha256(session id) → created
	order    [][32]byte                  // session hashes, oldest first
	random   func(b []byte) (int, error) // crypto/rand.Read; a test may fail it
}

func newGuard(port string) *guard {
	return &guard{cookie: cookiePrefix + port, sessions: make(map[[32]byte]time.Time), random: rand.Read}
}

func (g *guard) randomString() (string, error) {
	var b [32]byte
	if _, err := g.random(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// newToken makes a one-time login token valid until now+tokenTTL.
func (g *guard) newToken(now time.Time) (string, error) {
	v, err := g.randomString()
	if err != nil {
		return "", err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked(now)
	if len(g.tokens) >= maxTokens {
		g.tokens = append(g.tokens[:0], g.tokens[len(g.tokens)-maxTokens+1:]...)
	}
	g.tokens = append(g.tokens, token{value: v, expires: now.Add(tokenTTL)})
	return v, nil
}

func (g *guard) pruneLocked(now time.Time) {
	kept := g.tokens[:0]
	for _, t := range g.tokens {
		if now.Before(t.expires) {
			kept = append(kept, t)
		}
	}
	clear(g.tokens[len(kept):])
	g.tokens = kept
}

// useToken reports whether v is a valid unexpired token, and if so spends it.
func (g *guard) useToken(v string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked(now)
	found := -1
	for i, t := range g.tokens {
		// Every candidate is compared, in constant time for equal lengths.
		if subtle.ConstantTimeCompare([]byte(t.value), []byte(v)) == 1 {
			found = i
		}
	}
	if found < 0 {
		return false
	}
	g.tokens = append(g.tokens[:found], g.tokens[found+1:]...)
	return true
}

// newSession makes a session and returns its id (the cookie's value).
func (g *guard) newSession(now time.Time) (string, error) {
	id, err := g.randomString()
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(id))
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.order) >= maxSessions {
		delete(g.sessions, g.order[0])
		g.order = g.order[1:]
	}
	g.sessions[h] = now
	g.order = append(g.order, h)
	return id, nil
}

func (g *guard) validSession(r *http.Request) bool {
	cookies := r.CookiesNamed(g.cookie)
	if len(cookies) == 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range cookies {
		if _, ok := g.sessions[sha256.Sum256([]byte(c.Value))]; ok {
			return true
		}
	}
	return false
}

// sameOrigin reports whether o is this app's origin under either name.
func (a *App) sameOrigin(o string) bool {
	return o == a.origin || o == a.alt
}

// admit runs the guard. It answers and returns false when the request is
// refused or fully handled (the token exchange).
func (a *App) admit(w http.ResponseWriter, r *http.Request) bool {
	if r.Host != a.addr && !strings.EqualFold(r.Host, a.alt[len("http://"):]) {
		a.refuse(w, r, http.StatusMisdirectedRequest, "host")
		return false
	}
	origins := r.Header.Values("Origin")
	if len(origins) > 1 || len(origins) == 1 && !a.sameOrigin(origins[0]) {
		a.refuse(w, r, http.StatusForbidden, "origin")
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead &&
		len(origins) == 0 && r.Header.Get("Sec-Fetch-Site") != "same-origin" {
		a.refuse(w, r, http.StatusForbidden, "no origin")
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		a.refuse(w, r, http.StatusForbidden, "cross-site")
		return false
	}
	if r.Method == http.MethodGet && r.URL.Path == "/" && r.URL.Query().Has("token") {
		a.exchange(w, r)
		return false
	}
	if !a.guard.validSession(r) {
		a.refuse(w, r, http.StatusForbidden, "no session")
		return false
	}
	return true
}

// exchange spends the login token for a session cookie and redirects to /.
func (a *App) exchange(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if !a.guard.useToken(r.URL.Query().Get("token"), now) {
		if a.guard.validSession(r) {
			// A used link opened again in a browser that is signed in.
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		a.refuse(w, r, http.StatusForbidden, "token")
		return
	}
	id, err := a.guard.newSession(now)
	if err != nil {
		a.log.Error("web app: new session", "err", err)
		http.Error(w, "could not start a session: "+err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     a.guard.cookie,
		Value:    id,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	a.log.Info("web app: browser signed in")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

const refusedPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Magpie: new link needed</title></head>
<body><h1>Open Magpie with a new link</h1>
<p>This browser is not signed in to the Magpie app, or the link was already used or has expired.
For your safety each link works once.</p>
<p>Run <code>magpie app</code> again for a new link.</p></body></html>
`

// refuse answers a refused request. The reason is logged, never the
// request's headers, query or body.
func (a *App) refuse(w http.ResponseWriter, r *http.Request, status int, reason string) {
	level := slog.LevelDebug // a missing session is routine: an old tab
	if reason == "host" || reason == "origin" || reason == "no origin" || reason == "cross-site" {
		level = slog.LevelWarn // another site tried to reach the app
	}
	a.log.Log(r.Context(), level, "web app: request refused", "reason", reason, "method", r.Method, "status", status)
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case status == http.StatusMisdirectedRequest:
		http.Error(w, "Misdirected request: open the link that `magpie app` printed.", status)
	case reason == "origin" || reason == "no origin" || reason == "cross-site":
		http.Error(w, "Refused: this request did not come from the Magpie app's own page.", status)
	case strings.HasPrefix(r.URL.Path, "/api/"):
		writeAPIError(w, status, "no_session", "this browser is not signed in to the Magpie app", "run `magpie app` again for a new link")
	default:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte(refusedPage))
		}
	}
}

// writeAPIError writes the API's error shape (docs/LOCAL_API.md).
func writeAPIError(w http.ResponseWriter, status int, code, message, hint string) {
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Hint    string `json:"hint,omitempty"`
	}
	b, _ := json.Marshal(map[string]body{"error": {code, message, hint}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
