package webapp

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeAPI stands in for the engine's handler: this tests the guard layer
// only. It counts the requests that got through.
type fakeAPI struct{ calls, running atomic.Int32 }

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	f.running.Add(1)
	defer f.running.Add(-1)
	if r.URL.Path == "/api/v1/events" {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: state\ndata: {\"state\":\"online\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"path":"`+r.URL.Path+`"}`)
}

func start(t *testing.T) (*App, *fakeAPI) {
	t.Helper()
	api := &fakeAPI{}
	a, err := Start(api, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a, api
}

// client never follows redirects, so each test sees every answer.
func client(t *testing.T) *http.Client {
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{},
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

type req struct {
	method, path string
	host         string // default: a.Addr()
	header       map[string]string
	cookie       *http.Cookie
	body         string
}

func do(t *testing.T, c *http.Client, a *App, q req) (*http.Response, string) {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodGet
	}
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r, err := http.NewRequest(q.method, "http://"+a.Addr()+q.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if q.host != "" {
		r.Host = q.host
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	if q.cookie != nil {
		r.AddCookie(q.cookie)
	}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// login exchanges a fresh token and returns the session cookie.
func login(t *testing.T, c *http.Client, a *App) *http.Cookie {
	t.Helper()
	u, err := a.LoginURL()
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := do(t, c, a, req{path: strings.TrimPrefix(u, "http://"+a.Addr())})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("token exchange: status %d, want 303", resp.StatusCode)
	}
	for _, ck := range resp.Cookies() {
		if strings.HasPrefix(ck.Name, cookiePrefix) {
			return ck
		}
	}
	t.Fatalf("token exchange set no %s cookie", cookiePrefix)
	return nil
}

func base64RawURL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func TestLoginURL(t *testing.T) {
	a, _ := start(t)
	u1, err := a.LoginURL()
	if err != nil {
		t.Fatal(err)
	}
	u2, _ := a.LoginURL()
	pu, err := url.Parse(u1)
	if err != nil {
		t.Fatal(err)
	}
	if pu.Scheme != "http" || pu.Host != a.Addr() || pu.Path != "/" || !strings.HasPrefix(a.Addr(), "127.0.0.1:") {
		t.Fatalf("LoginURL %q, Addr %q", u1, a.Addr())
	}
	tok := pu.Query().Get("token")
	if raw, err := base64RawURL(tok); err != nil || len(raw) != 32 {
		t.Fatalf("token %q is not 32 bytes of base64url (%v)", tok, err)
	}
	if u1 == u2 {
		t.Fatal("two LoginURL calls returned the same token")
	}
}

func TestTokenExchangeOnce(t *testing.T) {
	a, api := start(t)
	c := client(t)
	u, _ := a.LoginURL()
	path := strings.TrimPrefix(u, "http://"+a.Addr())

	resp, _ := do(t, c, a, req{path: path})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("first use: %d Location %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, x := range resp.Cookies() {
		if strings.HasPrefix(x.Name, cookiePrefix) {
			ck = x
		}
	}
	if ck == nil {
		t.Fatal("no session cookie")
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
	}
	if strings.Contains(ck.Value, strings.TrimPrefix(path, "/?token=")) {
		t.Fatal("the session id contains the token")
	}

	// The cookie opens the app and the API.
	if resp, body := do(t, c, a, req{path: "/", cookie: ck}); resp.StatusCode != 200 || !strings.Contains(body, "app.js") {
		t.Fatalf("GET / with the cookie: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do(t, c, a, req{path: "/api/v1/status", cookie: ck}); resp.StatusCode != 200 || api.calls.Load() != 1 {
		t.Fatalf("GET /api/v1/status with the cookie: %d, api calls %d", resp.StatusCode, api.calls.Load())
	}

	// The same token again, without the cookie: refused, no new cookie.
	resp, _ = do(t, c, a, req{path: path})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("second use: %d, want 403", resp.StatusCode)
	}
	if len(resp.Cookies()) != 0 {
		t.Fatal("second use set a cookie")
	}
	// A made-up token, and an empty one.
	for _, p := range []string{"/?token=" + strings.Repeat("A", 43), "/?token="} {
		if resp, _ := do(t, c, a, req{path: p}); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Fatalf("%s: %d, want 403 and no cookie", p, resp.StatusCode)
		}
	}
	// A token only works as GET /?token=: a POST does not spend it.
	u2, _ := a.LoginURL()
	p2 := strings.TrimPrefix(u2, "http://"+a.Addr())
	if resp, _ := do(t, c, a, req{method: "POST", path: p2, header: map[string]string{"Origin": "http://" + a.Addr()}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST with a token: %d, want 403", resp.StatusCode)
	}
	if resp, _ := do(t, c, a, req{path: p2}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a second token after a POST with it: %d, want 303", resp.StatusCode)
	}
}

func TestTokenExpiry(t *testing.T) {
	g := newGuard("1")
	t0 := time.Now()
	old, _ := g.newToken(t0)
	fresh, _ := g.newToken(t0.Add(2 * time.Second))
	if g.useToken(old, t0.Add(tokenTTL)) {
		t.Fatal("a token was accepted tokenTTL after it was made")
	}
	if !g.useToken(fresh, t0.Add(tokenTTL-time.Second)) {
		t.Fatal("a token was refused before tokenTTL")
	}
	if g.useToken(fresh, t0.Add(time.Second)) {
		t.Fatal("a token was accepted twice")
	}
}

func TestTokenLimit(t *testing.T) {
	g := newGuard("1")
	now := time.Now()
	var toks []string
	for range maxTokens + 3 {
		v, _ := g.newToken(now)
		toks = append(toks, v)
	}
	if len(g.tokens) != maxTokens {
		t.Fatalf("%d tokens kept, want %d", len(g.tokens), maxTokens)
	}
	if g.useToken(toks[0], now) {
		t.Fatal("the oldest token beyond the limit still works")
	}
	if !g.useToken(toks[len(toks)-1], now) {
		t.Fatal("the newest token does not work")
	}
}

func TestRandomFailure(t *testing.T) {
	a, _ := start(t)
	a.guard.random = func([]byte) (int, error) { return 0, errors.New("no entropy") }
	if u, err := a.LoginURL(); err == nil {
		t.Fatalf("LoginURL = %q with a failing random source", u)
	}
}

func TestNoCookieRefused(t *testing.T) {
	a, api := start(t)
	c := client(t)
	bogus := &http.Cookie{Name: a.guard.cookie, Value: strings.Repeat("A", 43)}
	for _, ck := range []*http.Cookie{nil, bogus} {
		for _, p := range []string{"/", "/app.js", "/index.html", "/api/v1/status", "/api/v1/events", "/nope"} {
			resp, body := do(t, c, a, req{path: p, cookie: ck})
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("GET %s (cookie %v): %d, want 403", p, ck != nil, resp.StatusCode)
			}
			if !strings.Contains(body, "magpie app") {
				t.Fatalf("GET %s: the 403 body does not say to run magpie app: %q", p, body)
			}
			if strings.HasPrefix(p, "/api/") && (resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, `"code":"no_session"`)) {
				t.Fatalf("GET %s: the 403 is not the API's JSON error no_session: %q", p, body)
			}
		}
	}
	if n := api.calls.Load(); n != 0 {
		t.Fatalf("the API saw %d requests without a session", n)
	}
}

func TestHost(t *testing.T) {
	a, api := start(t)
	c := client(t)
	ck := login(t, c, a)
	_, port, _ := strings.Cut(a.Addr(), ":")
	for _, h := range []string{"evil.example:" + port, "evil.example", "127.0.0.1", "127.0.0.2:" + port, "localhost.evil.example:" + port, "[::1]:" + port} {
		for _, p := range []string{"/", "/api/v1/status"} {
			resp, _ := do(t, c, a, req{path: p, host: h, cookie: ck})
			if resp.StatusCode != http.StatusMisdirectedRequest {
				t.Fatalf("Host %q %s: %d, want 421", h, p, resp.StatusCode)
			}
		}
	}
	// A token is not spent through a wrong host either.
	u, _ := a.LoginURL()
	p := strings.TrimPrefix(u, "http://"+a.Addr())
	if resp, _ := do(t, c, a, req{path: p, host: "evil.example:" + port}); resp.StatusCode != http.StatusMisdirectedRequest || len(resp.Cookies()) != 0 {
		t.Fatalf("token through a wrong host: %d", resp.StatusCode)
	}
	if n := api.calls.Load(); n != 0 {
		t.Fatalf("the API saw %d requests with a wrong Host", n)
	}
	for _, h := range []string{a.Addr(), "localhost:" + port} {
		if resp, _ := do(t, c, a, req{path: "/api/v1/status", host: h, cookie: ck}); resp.StatusCode != 200 {
			t.Fatalf("Host %q: %d, want 200", h, resp.StatusCode)
		}
	}
}

func TestOrigin(t *testing.T) {
	a, api := start(t)
	c := client(t)
	ck := login(t, c, a)
	_, port, _ := strings.Cut(a.Addr(), ":")
	foreign := []string{"http://evil.example", "null", "", "http://127.0.0.1:1", "https://127.0.0.1:" + port, "http://localhost.evil.example:" + port}
	for _, o := range foreign {
		for _, m := range []string{"GET", "POST", "HEAD", "PUT", "DELETE"} {
			for _, p := range []string{"/", "/api/v1/messages"} {
				resp, _ := do(t, c, a, req{method: m, path: p, cookie: ck, header: map[string]string{"Origin": o}})
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("%s %s Origin %q: %d, want 403", m, p, o, resp.StatusCode)
				}
			}
		}
	}
	if n := api.calls.Load(); n != 0 {
		t.Fatalf("the API saw %d requests from a foreign origin", n)
	}
	for _, o := range []string{"http://" + a.Addr(), "http://localhost:" + port} {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			if resp, _ := do(t, c, a, req{method: m, path: "/api/v1/messages", cookie: ck, header: map[string]string{"Origin": o}}); resp.StatusCode != 200 {
				t.Fatalf("%s with Origin %q: %d, want 200", m, o, resp.StatusCode)
			}
		}
	}
}

func TestStateChangeNeedsOrigin(t *testing.T) {
	a, api := start(t)
	c := client(t)
	ck := login(t, c, a)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		for _, sfs := range []string{"", "cross-site", "same-site", "none"} {
			h := map[string]string{}
			if sfs != "" {
				h["Sec-Fetch-Site"] = sfs
			}
			resp, _ := do(t, c, a, req{method: m, path: "/api/v1/messages", cookie: ck, header: h, body: `{"to":"bob","text":"hi"}`})
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("%s without Origin, Sec-Fetch-Site %q: %d, want 403", m, sfs, resp.StatusCode)
			}
		}
	}
	if n := api.calls.Load(); n != 0 {
		t.Fatalf("the API saw %d state-changing requests without an Origin", n)
	}
	resp, _ := do(t, c, a, req{method: "POST", path: "/api/v1/messages", cookie: ck, header: map[string]string{"Sec-Fetch-Site": "same-origin"}})
	if resp.StatusCode != 200 {
		t.Fatalf("POST with Sec-Fetch-Site: same-origin: %d, want 200", resp.StatusCode)
	}
	// A state-changing request with the right Origin still needs a session.
	resp, _ = do(t, c, a, req{method: "POST", path: "/api/v1/messages", header: map[string]string{"Origin": "http://" + a.Addr()}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST with Origin and no cookie: %d, want 403", resp.StatusCode)
	}
}

func TestHeadersOnEveryResponse(t *testing.T) {
	a, _ := start(t)
	c := client(t)
	ck := login(t, c, a)
	u, _ := a.LoginURL()
	tokenPath := strings.TrimPrefix(u, "http://"+a.Addr())
	cases := []struct {
		name   string
		q      req
		status int
	}{
		{"token exchange", req{path: tokenPath}, 303},
		{"spent token", req{path: tokenPath}, 403},
		{"no cookie", req{path: "/"}, 403},
		{"no cookie, api", req{path: "/api/v1/status"}, 403},
		{"wrong host", req{path: "/", host: "evil.example", cookie: ck}, 421},
		{"foreign origin", req{path: "/", cookie: ck, header: map[string]string{"Origin": "http://evil.example"}}, 403},
		{"post without origin", req{method: "POST", path: "/api/v1/messages", cookie: ck}, 403},
		{"index", req{path: "/", cookie: ck}, 200},
		{"script", req{path: "/app.js", cookie: ck}, 200},
		{"missing asset", req{path: "/nope.js", cookie: ck}, 404},
		{"asset by POST", req{method: "POST", path: "/", cookie: ck, header: map[string]string{"Origin": "http://" + a.Addr()}}, 405},
		{"api", req{path: "/api/v1/status", cookie: ck}, 200},
		{"other api version", req{path: "/api/v2/status", cookie: ck}, 404},
	}
	for _, tc := range cases {
		resp, _ := do(t, c, a, tc.q)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		h := resp.Header
		if got := h.Get("Content-Security-Policy"); got != contentSecurityPolicy {
			t.Fatalf("%s: Content-Security-Policy %q", tc.name, got)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Fatalf("%s: X-Content-Type-Options %q, Referrer-Policy %q", tc.name, h.Get("X-Content-Type-Options"), h.Get("Referrer-Policy"))
		}
		if strings.HasPrefix(tc.q.path, "/api/") && h.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s: Cache-Control %q on an API response", tc.name, h.Get("Cache-Control"))
		}
	}
	// The policy is the one the doc lists.
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:", "media-src 'self' blob:", "connect-src 'self'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(contentSecurityPolicy, d+";") && !strings.HasSuffix(contentSecurityPolicy, d) {
			t.Fatalf("the CSP lacks %q", d)
		}
	}
}

func TestAssets(t *testing.T) {
	a, _ := start(t)
	c := client(t)
	ck := login(t, c, a)
	for p, ctype := range map[string]string{
		"/":           "text/html; charset=utf-8",
		"/index.html": "text/html; charset=utf-8",
		"/app.js":     "text/javascript; charset=utf-8",
		"/app.css":    "text/css; charset=utf-8",
	} {
		resp, body := do(t, c, a, req{path: p, cookie: ck})
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctype || len(body) == 0 {
			t.Fatalf("GET %s: %d %q, %d bytes", p, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	// No directory listings, no escaping the asset tree.
	for _, p := range []string{"/icons/", "/icons", "/../webapp.go", "/%2e%2e/webapp.go", "/assets/index.html"} {
		if resp, _ := do(t, c, a, req{path: p, cookie: ck}); resp.StatusCode != 404 {
			t.Fatalf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
}

// TestAssetsObeyCSP checks what the CSP would silently break in a browser:
// inline scripts, inline styles, inline event handlers, and anything loaded
// from elsewhere.
func TestAssetsObeyCSP(t *testing.T) {
	sub, err := fs.Sub(embedded, "assets")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	inlineScript := regexp.MustCompile(`(?is)<script\b[^>]*>\s*[^<\s]`)
	scriptTag := regexp.MustCompile(`(?is)<script\b[^>]*>`)
	handler := regexp.MustCompile(`(?i)<[^>]+\son[a-z]+\s*=`)
	styleAttr := regexp.MustCompile(`(?i)<[^>]+\sstyle\s*=`)
	remote := regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[/"' )]`)
	for _, n := range names {
		b, err := fs.ReadFile(sub, n)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if strings.HasSuffix(n, ".html") {
			for _, re := range []*regexp.Regexp{inlineScript, handler, styleAttr} {
				if m := re.FindString(s); m != "" {
					t.Errorf("%s: %q is blocked by the CSP", n, m)
				}
			}
			for _, tag := range scriptTag.FindAllString(s, -1) {
				if !strings.Contains(tag, " src=") {
					t.Errorf("%s: %q has no src: an inline script is blocked by the CSP", n, tag)
				}
			}
			if strings.Contains(strings.ToLower(s), "<style") {
				t.Errorf("%s: an inline <style> is blocked by the CSP", n)
			}
		}
		if strings.HasSuffix(n, ".js") {
			for _, bad := range []string{"eval(", "new Function(", "setAttribute('style'", `setAttribute("style"`, ".innerHTML"} {
				if strings.Contains(s, bad) {
					t.Errorf("%s uses %s", n, bad)
				}
			}
		}
		// Only the SVG namespace may look like a URL.
		for _, m := range remote.FindAllString(strings.ReplaceAll(s, "http://www.w3.org/2000/svg", ""), -1) {
			t.Errorf("%s refers to %q: assets must not load anything from elsewhere", n, m)
		}
	}
}

func TestCloseEndsStreams(t *testing.T) {
	api := &fakeAPI{}
	a, err := Start(api, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := client(t)
	ck := login(t, c, a)
	r, _ := http.NewRequest("GET", "http://"+a.Addr()+"/api/v1/events", nil)
	r.AddCookie(ck)
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: state\n" {
		t.Fatalf("events: %q %v", line, err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(shutdownGrace / 2):
		t.Fatal("Close did not end an open events stream promptly")
	}
	// Close returned: nothing of the server may still run.
	if n := api.running.Load(); n != 0 {
		t.Fatalf("%d API handlers still running after Close", n)
	}
	select {
	case <-a.served:
	default:
		t.Fatal("Close returned while Serve was still running")
	}
	if _, err := io.ReadAll(resp.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("events stream after Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Get("http://" + a.Addr() + "/"); err == nil {
		t.Fatal("the server still answers after Close")
	}
}

// stuckAPI ignores its request's context until released: Close must still
// wait for it, after the grace period has closed its connection.
type stuckAPI struct {
	started chan struct{}
	release chan struct{}
	done    atomic.Bool
}

func (s *stuckAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	close(s.started)
	<-s.release
	s.done.Store(true)
}

func TestCloseWaitsForHandlers(t *testing.T) {
	old := shutdownGrace
	shutdownGrace = 50 * time.Millisecond
	defer func() { shutdownGrace = old }()

	api := &stuckAPI{started: make(chan struct{}), release: make(chan struct{})}
	a, err := Start(api, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := client(t)
	ck := login(t, c, a)
	r, _ := http.NewRequest("GET", "http://"+a.Addr()+"/api/v1/status", nil)
	r.AddCookie(ck)
	got := make(chan error, 1)
	go func() {
		resp, err := c.Do(r)
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	<-api.started
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was still running")
	case <-time.After(10 * shutdownGrace):
	}
	close(api.release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the handler did")
	}
	if !api.done.Load() {
		t.Fatal("Close returned before the handler did")
	}
	<-got // the client saw its connection closed
}

// A request the browser marks as coming from another site (even another
// port of 127.0.0.1, which is "same-site") is refused with a session, for
// reading and for writing; the app's own requests and an opened link are
// not.
func TestCrossSiteFetchRefused(t *testing.T) {
	a, _ := start(t)
	c := client(t)
	ck := login(t, c, a)
	for _, site := range []string{"cross-site", "same-site"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			resp, _ := do(t, c, a, req{method: method, path: "/api/v1/status", cookie: ck,
				header: map[string]string{"Sec-Fetch-Site": site, "Origin": "http://" + a.Addr()}})
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s: status %d, want 403", method, site, resp.StatusCode)
			}
		}
	}
	for _, site := range []string{"same-origin", "none"} {
		resp, _ := do(t, c, a, req{path: "/api/v1/status", cookie: ck, header: map[string]string{"Sec-Fetch-Site": site}})
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200", site, resp.StatusCode)
		}
	}
}

// The session cookie is named for the app's port, so two apps on one
// machine keep their sessions apart.
func TestCookieNamedForPort(t *testing.T) {
	a, _ := start(t)
	b, _ := start(t)
	c := client(t)
	ca, cb := login(t, c, a), login(t, c, b)
	_, port, _ := strings.Cut(a.Addr(), ":")
	if ca.Name != cookiePrefix+port || ca.Name == cb.Name {
		t.Fatalf("cookies %q and %q, want %q and another", ca.Name, cb.Name, cookiePrefix+port)
	}
	// a's cookie, under b's name, opens nothing on b.
	forged := &http.Cookie{Name: cb.Name, Value: ca.Value}
	if resp, _ := do(t, c, b, req{path: "/api/v1/status", cookie: forged}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a's session on b: status %d, want 403", resp.StatusCode)
	}
}

// TestAppElementsExist checks that every element app.js looks up by id
// ($('id')) is in index.html: a typo, or an element renamed on one side
// only, would otherwise show only as an exception in a browser.
func TestAppElementsExist(t *testing.T) {
	js, err := fs.ReadFile(embedded, "assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	html, err := fs.ReadFile(embedded, "assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`\sid="([^"]+)"`).FindAllStringSubmatch(string(html), -1) {
		if ids[m[1]] {
			t.Errorf("index.html: id %q is used twice", m[1])
		}
		ids[m[1]] = true
	}
	// And those app.js makes itself.
	for _, m := range regexp.MustCompile(`\bid: '([^']+)'`).FindAllStringSubmatch(string(js), -1) {
		ids[m[1]] = true
	}
	uses := regexp.MustCompile(`\$\('([^']+)'\)`).FindAllStringSubmatch(string(js), -1)
	if len(uses) < 50 {
		t.Fatalf("found only %d $('id') in app.js: has the way it looks elements up changed?", len(uses))
	}
	for _, m := range uses {
		if !ids[m[1]] {
			t.Errorf("app.js uses $('%s'), and index.html has no element with that id", m[1])
		}
	}
}
