package tlsws

import (
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// No two deployments without a fallback share their site's content,
// hashes, error page, dates, cover name or timeouts.
func TestGeneratedSitesDiffer(t *testing.T) {
	const n = 40
	seen := map[string]map[string]bool{}
	add := func(what, v string) {
		if seen[what] == nil {
			seen[what] = map[string]bool{}
		}
		if seen[what][v] {
			t.Errorf("two deployments share their %s: %q", what, v)
		}
		seen[what][v] = true
	}
	get := func(h http.Handler, path string) *http.Response {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		return w.Result()
	}
	for range n {
		seed := randomSeed()
		site := GeneratedSite(seed)
		for _, path := range []string{"/", "/about.html", "/contact.html", "/style.css", "/nope"} {
			resp := get(site, path)
			body, _ := io.ReadAll(resp.Body)
			sum := sha256.Sum256(body)
			add("SHA-256 of "+path, string(sum[:]))
			if path == "/nope" {
				if resp.StatusCode != 404 {
					t.Fatalf("GET /nope: %d", resp.StatusCode)
				}
				continue
			}
			add("Last-Modified of "+path, resp.Header.Get("Last-Modified"))
			add("ETag of "+path, resp.Header.Get("ETag"))
		}
		add("cover name", SiteHost(seed))
	}
	headers := map[int]bool{}
	idles := map[int]bool{}
	for range n {
		tm := siteTimeouts(randomSeed())
		headers[int(tm.header.Seconds())] = true
		idles[int(tm.idle.Seconds())] = true
	}
	if len(headers) < 10 || len(idles) < 10 {
		t.Errorf("%d header timeouts and %d idle timeouts in %d deployments", len(headers), len(idles), n)
	}
	// The same seed, the same site: a restart changes nothing.
	seed := randomSeed()
	a, _ := io.ReadAll(get(GeneratedSite(seed), "/").Body)
	b, _ := io.ReadAll(get(GeneratedSite(seed), "/").Body)
	if string(a) != string(b) || SiteHost(seed) != SiteHost([32]byte(seed[:])) {
		t.Error("one seed, two sites")
	}
}
