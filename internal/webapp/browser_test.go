package webapp_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// The web app in a real browser: engines for alice and bob on one real
// server, each with its own web app, each app open in its own browser
// context (its own cookies) of one headless Chromium.
//
// Chromium is looked up on PATH as chromium (Debian's package) or
// chromium-browser. Without it these tests skip, unless
// MAGPIE_REQUIRE_CHROMIUM=1 (CI sets it), when they fail. With
// MAGPIE_BROWSER_SHOTS=DIR they save full-page screenshots in DIR, at
// each step and of a page that failed a check.

// waitTimeout bounds every wait for the page to show something.
const waitTimeout = 20 * time.Second

// chromium finds the browser, or skips (or fails) the test.
func chromium(tb testing.TB) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MAGPIE_REQUIRE_CHROMIUM") == "1" {
		tb.Fatal("chromium is not on PATH and MAGPIE_REQUIRE_CHROMIUM=1: install it (apt-get install chromium)")
	}
	tb.Skip("chromium is not on PATH (apt-get install chromium); MAGPIE_REQUIRE_CHROMIUM=1 makes this a failure")
	return ""
}

// startBrowser starts a headless Chromium with a fresh profile; it is
// stopped when the test ends.
func startBrowser(tb testing.TB) context.Context {
	tb.Helper()
	path := chromium(tb)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit
	})
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// page is one tab, in a browser context of its own.
type page struct {
	tb   testing.TB // the test its checks fail (see in)
	name string
	ctx  context.Context

	mu     *sync.Mutex
	errors *[]string // uncaught exceptions and console.error calls
}

// in is the page for the checks of test tb (a subtest).
func (p *page) in(tb testing.TB) *page {
	q := *p
	q.tb = tb
	return &q
}

// newPage opens a tab in a new browser context. The test fails at its
// end if the page threw an exception, logged an error, or the browser
// reported one (a request that failed, a Content-Security-Policy
// violation).
func newPage(tb testing.TB, browser context.Context, name string) *page {
	tb.Helper()
	return openTab(tb, browser, name, false, chromedp.WithNewBrowserContext())
}

// openTab opens a tab; with parent a tab's context and no options, in the
// same browser context (with its cookies). With refusals, requests that
// fail are expected.
func openTab(tb testing.TB, parent context.Context, name string, refusals bool, opts ...chromedp.ContextOption) *page {
	tb.Helper()
	ctx, cancel := chromedp.NewContext(parent, opts...)
	tb.Cleanup(cancel)
	p := &page{tb: tb, name: name, ctx: ctx, mu: new(sync.Mutex), errors: new([]string)}
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatal(err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = ev.ExceptionDetails.Text
			if ex := ev.ExceptionDetails.Exception; ex != nil {
				msg += " " + ex.Description
			}
		case *cdplog.EventEntryAdded:
			// The browser's own errors: a CSP violation, a failed load.
			e := ev.Entry
			if e.Level != cdplog.EntryLevelError || refusals && e.Source == cdplog.EntrySourceNetwork {
				return
			}
			msg = fmt.Sprintf("%s: %s (%s)", e.Source, e.Text, e.URL)
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			for _, a := range ev.Args {
				msg += fmt.Sprintf(" %s%s", a.Value, a.Description)
			}
		default:
			return
		}
		p.mu.Lock()
		*p.errors = append(*p.errors, msg)
		p.mu.Unlock()
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range *p.errors {
			tb.Errorf("%s's page reported an error: %s", name, e)
		}
	})
	return p
}

// do runs actions in the page.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail("%s: %s: %v", p.name, what, err)
	}
}

// eval evaluates a JavaScript expression in the page (awaiting a promise).
func eval[T any](p *page, expr string) T {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.fail("%s: evaluating %s: %v", p.name, expr, err)
	}
	return v
}

// wait polls the JavaScript expression cond until it is true, and fails
// the test if it is not within waitTimeout.
func (p *page) wait(what, cond string) {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+cond+")",
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		p.fail("%s: waiting for %s: %v", p.name, what, err)
	}
}

// fail ends the test with what the page shows (and a screenshot).
func (p *page) fail(format string, args ...any) {
	p.tb.Helper()
	p.shot("failed")
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	shown, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ''`))
	p.tb.Fatalf(format+"\n%s's page shows:\n%s", append(args, p.name, shown)...)
}

// shot saves a full-page screenshot in MAGPIE_BROWSER_SHOTS, if set.
func (p *page) shot(name string) {
	dir := os.Getenv("MAGPIE_BROWSER_SHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, p.name+"-"+name+".png"), b, 0o644)
	}
	if err != nil {
		p.tb.Logf("screenshot %s-%s: %v", p.name, name, err)
	}
}

// holdAnswer runs trigger in the page, holds the answer to the first
// request it makes to a URL that matches pattern (before its body) while
// whileHeld runs, then lets it through and waits until the page has read
// it (its JSON body, and every microtask that awaited that).
func (p *page) holdAnswer(pattern string, trigger chromedp.Action[chromedp.Void], whileHeld func()) {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	read := eval[int](p, `(() => {
		if (!window.jsonRead) {
			window.jsonRead = [];
			const json = Response.prototype.json;
			Response.prototype.json = function () {
				const body = json.call(this);
				const done = () => setTimeout(() => window.jsonRead.push(this.url));
				body.then(done, done);
				return body;
			};
		}
		return window.jsonRead.length;
	})()`)
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern, RequestStage: fetch.RequestStageResponse}}})
	if err != nil {
		p.fail("%s: intercepting %s: %v", p.name, pattern, err)
	}
	p.do("the request to hold", trigger)
	var held *fetch.EventRequestPaused
	for ev, err := range paused {
		if err != nil {
			p.fail("%s: waiting for a request to %s: %v", p.name, pattern, err)
		}
		held = &ev
		break
	}
	whileHeld()
	if _, err := chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: held.RequestID}); err != nil {
		p.fail("%s: letting the answer through: %v", p.name, err)
	}
	if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
		p.fail("%s: %v", p.name, err)
	}
	p.wait("the page to read the answer", fmt.Sprintf(`window.jsonRead.slice(%d).includes(%q)`, read, held.Request.URL))
}

// newHome prepares a client home for server s in a short directory (the
// engine's socket is in the home). The client reaches s at via if it is
// not "" (a relay).
func newHome(tb testing.TB, s *servertest.Server, via string) engine.Options {
	tb.Helper()
	home, err := os.MkdirTemp("", "mw")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(home) })
	// Errors go to stderr, which go test shows when the package fails:
	// a page sees only a status, the engine's log says why.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("home", filepath.Base(home))
	opts := engine.Options{Client: client.Options{Home: home, Unlocker: client.KeyUnlocker([32]byte{9}), Logger: logger}, Version: "browser-test"}
	inv := s.Invite
	if via != "" {
		inv.Addrs = []string{via}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := client.Init(ctx, opts.Client, inv); err != nil {
		tb.Fatal(err)
	}
	return opts
}

// startEngine starts the engine of a home in this process; it is stopped
// when the test ends.
func startEngine(tb testing.TB, opts engine.Options) *engine.Session {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sess, err := engine.Connect(ctx, opts, time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sess.Close() })
	if sess.Engine == nil {
		tb.Fatal("Connect to a fresh home did not start an engine here")
	}
	return sess
}

// newUser starts an engine for a new home registered as name on s
// (reached at via, see newHome).
func newUser(tb testing.TB, s *servertest.Server, via, name string) *engine.Session {
	tb.Helper()
	sess := startEngine(tb, newHome(tb, s, via))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := sess.Register(ctx, name); err != nil {
		tb.Fatalf("register %s: %v", name, err)
	}
	return sess
}

// signIn opens a fresh login link of sess's web app in p and waits until
// the app is online as user. It returns the app's origin.
func signIn(p *page, sess *engine.Session, user string) string {
	p.tb.Helper()
	u, err := sess.Engine.AppURL()
	if err != nil {
		p.tb.Fatal(err)
	}
	p.do("open the login link", chromedp.Navigate(u))
	p.wait("the app online as "+user, fmt.Sprintf(
		`document.querySelector('#state').dataset.state === 'online' && document.querySelector('#me-name').textContent === %q && location.search === ''`, user))
	origin, _, _ := strings.Cut(u, "/?")
	return origin
}

// msgJS is a JavaScript expression for the bubble in #messages (class
// dir: "in" or "out") whose text is text, or undefined.
func msgJS(dir, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .msg.%s')].find((m) => m.querySelector('.text')?.textContent === %q)`, dir, text)
}

// ticksJS is the state of the ticks of alice's outgoing text.
func ticksJS(text string) string {
	return fmt.Sprintf(`%s?.querySelector('.ticks')?.dataset.state`, msgJS("out", text))
}

// loadedJS is true when the selector's img has loaded, at width×height.
func loadedJS(sel string, width, height int) string {
	return fmt.Sprintf(`((img) => !!img && img.complete && img.naturalWidth === %d && img.naturalHeight === %d)(document.querySelector(%q))`, width, height, sel)
}

// TestBrowser drives both apps through a conversation: text both ways
// with the unread badge, typing and the read tick, a photo (its thumbnail
// while it downloads, then the full image), a voice note that plays, a
// reload, and the guard refusing a browser with no session and requests
// from another origin.
func TestBrowser(t *testing.T) {
	browser := startBrowser(t)
	s := servertest.Start(t, server.Config{Blobs: servertest.Blobs(t, blobstore.Options{})})
	// Bob's engine reaches the server through a relay that can slow down
	// what it receives, so that his page can be seen showing a photo's
	// thumbnail while the photo downloads.
	slow := servertest.StartRelay(t, s.Addr)
	alice, bob := newUser(t, s, "", "alice"), newUser(t, s, slow.Addr(), "bob")
	alicePage, bobPage := newPage(t, browser, "alice"), newPage(t, browser, "bob")
	signIn(alicePage, alice, "alice")
	bobOrigin := signIn(bobPage, bob, "bob")

	t.Run("text", func(t *testing.T) {
		ap, bp := alicePage.in(t), bobPage.in(t)
		ap.do("start a chat with bob", chromedp.SendKeys(chromedp.ID("new-chat"), "bob\r"))
		ap.wait("the chat with bob open", `location.hash === '#/chat/bob' && !document.querySelector('#chat-view').hidden && document.querySelector('#chat-peer').textContent === 'bob'`)
		ap.do("type a text", chromedp.SendKeys(chromedp.ID("composer"), "hello bob"))
		// The engine's events about the new message may reach the page
		// before its answer to the POST: hold the answer until they have
		// (delivered, as bob's engine has it), then see that the older
		// answer ("queued") does not undo them.
		ap.holdAnswer("*/api/v1/messages", chromedp.SendKeys(chromedp.ID("composer"), "\r"), func() {
			bp.wait("alice's chat in bob's list with 1 unread and the text", `((li) => !!li && li.querySelector('.unread')?.textContent === '1' && li.querySelector('.conv-preview').textContent === 'hello bob')(document.querySelector('#conversations li[data-peer="alice"]'))`)
			bp.wait("the unread count in bob's title", `document.title === '(1) Magpie'`)
			// Delivered, not read: bob has not opened the chat.
			ap.wait("alice's text delivered", ticksJS("hello bob")+` === 'delivered'`)
		})
		if got := eval[string](ap, ticksJS("hello bob")); got != "delivered" {
			ap.fail("alice: her text is %q once the page read the answer to its POST, after it was delivered", got)
		}
		bp.shot("1-unread")
		bp.do("open the chat with alice", chromedp.Click(chromedp.CSS(`#conversations li[data-peer="alice"] button`)))
		bp.wait("alice's text in bob's chat", msgJS("in", "hello bob"))
		bp.wait("the badge gone", `!document.querySelector('#conversations li[data-peer="alice"] .unread') && document.title === 'Magpie'`)
		bp.do("reply", chromedp.SendKeys(chromedp.ID("composer"), "hi alice\r"))
		ap.wait("bob's reply in alice's chat", msgJS("in", "hi alice"))
	})
	if t.Failed() {
		return
	}
	t.Run("read tick", func(t *testing.T) {
		ap := alicePage.in(t)
		ap.wait("alice's text read", ticksJS("hello bob")+` === 'read'`)
		ap.shot("2-read")
	})
	t.Run("typing", func(t *testing.T) {
		ap, bp := alicePage.in(t), bobPage.in(t)
		bp.wait("no typing line yet", `document.querySelector('#typing').hidden`)
		ap.do("type", chromedp.SendKeys(chromedp.ID("composer"), "are you there?"))
		bp.wait("alice typing on bob's page", `!document.querySelector('#typing').hidden && document.querySelector('#typing-text').textContent === 'alice is typing…'`)
		bp.shot("3-typing")
		ap.do("send", chromedp.SendKeys(chromedp.ID("composer"), "\r"))
		bp.wait("the text, and the typing line gone", msgJS("in", "are you there?")+` && document.querySelector('#typing').hidden`)
	})
	if t.Failed() {
		return
	}
	t.Run("photo", func(t *testing.T) {
		ap, bp := alicePage.in(t), bobPage.in(t)
		dir := t.TempDir()
		photo := filepath.Join(dir, "harbour.png")
		if err := os.WriteFile(photo, testPNG(t, 1024, 768), 0o600); err != nil {
			t.Fatal(err)
		}
		// 32 KiB/s: the message with its thumbnail arrives in about a
		// second, the photo (1 MB) would take half a minute.
		slow.Throttle(32 << 10)
		defer slow.Throttle(0)
		ap.do("attach the photo", chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{photo}))
		ap.wait("the photo on alice's page", loadedJS(`#messages .msg.out img.attachment-image[data-src-kind="full"]`, 1024, 768))
		bp.wait("the thumbnail on bob's page while the photo downloads",
			loadedJS(`#messages .msg.in img.attachment-image[data-src-kind="thumbnail"]`, 320, 240)+
				` && document.querySelector('#messages .msg.in .attachment').dataset.state !== 'saved'`)
		bp.shot("4-thumbnail")
		slow.Throttle(0)
		bp.wait("the full photo on bob's page", loadedJS(`#messages .msg.in img.attachment-image[data-src-kind="full"]`, 1024, 768))
		bp.shot("5-photo")
	})
	t.Run("voice note", func(t *testing.T) {
		ap, bp := alicePage.in(t), bobPage.in(t)
		voice := filepath.Join(t.TempDir(), "voice.opus")
		if err := os.WriteFile(voice, oggOpus(2), 0o600); err != nil {
			t.Fatal(err)
		}
		ap.do("attach the voice note", chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{voice}))
		const audio = `document.querySelector('#messages .msg.in audio.attachment-audio')`
		bp.wait("a playable voice note of 2 s on bob's page", fmt.Sprintf(`((a) => !!a && a.readyState >= 1 && Math.abs(a.duration - 2) < 0.05)(%s)`, audio))
		// Play it as a click on the play button would (a user gesture),
		// and see it advance.
		ctx, cancel := context.WithTimeout(bp.ctx, waitTimeout)
		defer cancel()
		_, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](audio+`.play()`, chromedp.EvalAwaitPromise,
			func(p *runtime.EvaluateParams) { p.UserGesture = new(true) }))
		if err != nil {
			bp.fail("bob: play() of the voice note: %v", err)
		}
		bp.wait("the voice note playing", audio+`.currentTime > 0.2`)
		bp.shot("6-voice")
	})
	if t.Failed() {
		return
	}
	t.Run("reload", func(t *testing.T) {
		ap, bp := alicePage.in(t), bobPage.in(t)
		// Something to tell the reloaded page from the old one.
		eval[chromedp.Void](bp, `window.beforeReload = true`)
		bp.do("reload", chromedp.Reload())
		bp.wait("bob's chat with alice again, with its history",
			`!window.beforeReload && location.hash === '#/chat/alice' && document.querySelector('#state').dataset.state === 'online' && `+
				msgJS("in", "hello bob")+` && `+msgJS("out", "hi alice")+` && `+msgJS("in", "are you there?")+` && `+
				loadedJS(`#messages .msg.in img.attachment-image[data-src-kind="full"]`, 1024, 768)+
				` && document.querySelector('#messages .msg.in audio.attachment-audio')`)
		bp.shot("7-reloaded")
		ap.shot("7-alice")
	})
	t.Run("guard", func(t *testing.T) {
		guardChecks(t, browser, bobPage.in(t), bob, bobOrigin)
	})
}

// guardChecks: without a session the app and its API answer 403, to a
// plain HTTP client and to a browser with no cookie; with a session, a
// request with another site's Origin is refused, including a forged
// POST from another origin in the signed-in browser.
func guardChecks(t *testing.T, browser context.Context, bp *page, bob *engine.Session, origin string) {
	hc := &http.Client{
		Timeout:       waitTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{},
	}
	defer hc.CloseIdleConnections()
	get := func(method, path string, cookie *http.Cookie, header ...string) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader(`{"to":"alice","text":"forged"}`)
		}
		req, err := http.NewRequest(method, origin+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, path := range []string{"/", "/app.js", "/api/v1/status", "/api/v1/conversations"} {
		if resp, body := get(http.MethodGet, path, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s without a cookie: %d %.200s, want 403", path, resp.StatusCode, body)
		}
	}
	// A session of its own, from a fresh link.
	link, err := bob.Engine.AppURL()
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := get(http.MethodGet, strings.TrimPrefix(link, origin), nil)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login link: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	cookie := resp.Cookies()[0]
	if resp, body := get(http.MethodGet, "/api/v1/status", cookie); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"user":"bob"`) {
		t.Fatalf("GET /api/v1/status with the cookie: %d %.200s", resp.StatusCode, body)
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		if resp, body := get(method, "/api/v1/conversations", cookie, "Origin", "http://evil.example"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s with the cookie and a foreign Origin: %d %.200s, want 403", method, resp.StatusCode, body)
		}
	}
	if resp, body := get(http.MethodPost, "/api/v1/messages", cookie, "Origin", "http://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST a message with the cookie and a foreign Origin: %d %.200s, want 403", resp.StatusCode, body)
	}

	// Another origin on this host (same site, so the browser sends bob's
	// SameSite=Strict cookie along) tries to send a message as bob.
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<!doctype html><title>elsewhere</title><p>another site")
	}))
	defer elsewhere.Close()
	other := openTab(t, bp.ctx, "elsewhere", true) // in bob's browser context
	other.do("open another origin in bob's browser", chromedp.Navigate(elsewhere.URL))
	// The page cannot see the answer (a no-cors request; and the app's
	// Cross-Origin-Resource-Policy makes the browser drop it), but once
	// the fetch settles the engine has answered.
	eval[string](other, fmt.Sprintf(`fetch(%q, {method: 'POST', mode: 'no-cors', credentials: 'include',
		headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({to: 'alice', text: 'forged in a browser'})}).then((r) => r.type, (e) => String(e))`, origin+"/api/v1/messages"))
	hctx, hcancel := context.WithTimeout(context.Background(), waitTimeout)
	defer hcancel()
	if msgs, _, err := bob.History(hctx, "alice", 0, 10, "forged in a browser"); err != nil || len(msgs) != 0 {
		t.Errorf("a POST from another origin sent %d messages (%v): %+v", len(msgs), err, msgs)
	}
	// A browser that never opened a link gets the refusal page.
	stranger := openTab(t, browser, "stranger", true, chromedp.WithNewBrowserContext())
	ctx, cancel := context.WithTimeout(stranger.ctx, waitTimeout)
	defer cancel()
	r, err := chromedp.Run(ctx, chromedp.NavigateResponse(origin+"/"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusForbidden {
		t.Errorf("a browser without the cookie opened / with status %d, want 403", r.Status)
	}
	stranger.wait("the refusal page", `document.body.innerText.includes('Open Magpie with a new link') && !document.querySelector('#app')`)
	stranger.shot("8-refused")
}

// testPNG is a photo-like PNG: a gradient with noise, so that it
// compresses poorly and its download takes a while when throttled.
func testPNG(tb testing.TB, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	rnd := rand.New(rand.NewPCG(1, 2))
	for y := range h {
		for x := range w {
			n := uint8(rnd.IntN(48))
			img.SetNRGBA(x, y, color.NRGBA{uint8(40 + x*120/w + int(n)), uint8(90 + y*100/h + int(n)), uint8(160 + int(n)), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// oggOpus is an Ogg Opus file (RFC 7845) of the given seconds of silence
// that a real decoder plays: an identification header, a comment header,
// then pages of 50 Opus packets of 20 ms each. Every packet is the
// 3-byte CELT frame that encoders emit for digital silence (TOC 0xf8:
// CELT-only, fullband, 20 ms, mono, one frame).
func oggOpus(seconds int) []byte {
	const preSkip = 312
	var out []byte
	var seq uint32
	addPage := func(flags byte, granule uint64, packets ...[]byte) {
		hdr := []byte("OggS\x00")
		hdr = append(hdr, flags)
		hdr = binary.LittleEndian.AppendUint64(hdr, granule)
		hdr = binary.LittleEndian.AppendUint32(hdr, 0x6d616770) // serial
		hdr = binary.LittleEndian.AppendUint32(hdr, seq)
		hdr = append(hdr, 0, 0, 0, 0, byte(len(packets))) // CRC, segments
		var body []byte
		for _, pk := range packets {
			hdr = append(hdr, byte(len(pk))) // each packet under 255 bytes: one segment
			body = append(body, pk...)
		}
		pg := append(hdr, body...)
		binary.LittleEndian.PutUint32(pg[22:], oggCRC(pg))
		out = append(out, pg...)
		seq++
	}
	head := []byte("OpusHead\x01\x01")
	head = binary.LittleEndian.AppendUint16(head, preSkip)
	head = binary.LittleEndian.AppendUint32(head, 48000)
	head = append(head, 0, 0, 0) // gain, mapping family 0
	addPage(0x02, 0, head)
	addPage(0, 0, []byte("OpusTags\x06\x00\x00\x00magpie\x00\x00\x00\x00"))
	silence := []byte{0xf8, 0xff, 0xfe}
	for p := range seconds {
		packets := make([][]byte, 50)
		for i := range packets {
			packets[i] = silence
		}
		var flags byte
		if p == seconds-1 {
			flags = 0x04 // end of stream
		}
		addPage(flags, uint64(preSkip+(p+1)*48000), packets...)
	}
	return out
}

// oggCRC is Ogg's page checksum: CRC-32 with polynomial 0x04c11db7, not
// reflected, initial value 0, over the page with its checksum field zero.
func oggCRC(page []byte) uint32 {
	var crc uint32
	for _, b := range page {
		crc ^= uint32(b) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
