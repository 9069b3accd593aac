package tlsws

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path"
	"strings"
	"time"
)

// GeneratedSite returns the decoy for a server without a fallback: a small
// static website (a home page, an about page, a contact page, a style
// sheet, robots.txt) generated from seed, which a deployment keeps in its
// data directory (serve does). Different seeds give different names,
// texts, colours, file sizes and dates, so no hash, size or date is shared
// between deployments, and nothing is derived from the certificate. The
// files' Last-Modified dates are drawn from the seed too (within about
// three years before 2026), and each has an ETag in nginx's format.
//
// It serves GET and HEAD, 404 for unknown paths and 405 for other methods.
// It is still Go's HTTP server answering: with a fallback (ServerConfig.
// Fallback) every reaction is the real web server's instead, which is the
// recommended set-up (docs/TRANSPORTS.md).
func GeneratedSite(seed [32]byte) http.Handler {
	files := generateFiles(seed)
	r := seeded(seed, "headers")
	site := newSite(files)
	if r.IntN(3) > 0 {
		site.cacheControl = fmt.Sprintf("max-age=%d", []int{300, 600, 3600, 14400, 86400, 604800}[r.IntN(6)])
	}
	// Error pages in the site's own look, with its name: nothing in them is
	// shared with another deployment either.
	page := files["404.html"].data
	site.errorBody = func(code int) []byte {
		if code == http.StatusNotFound {
			return page
		}
		return bytes.Replace(page, []byte(notFoundText), []byte(http.StatusText(code)), -1)
	}
	delete(files, "404.html")
	return site
}

// notFoundText is the generated error page's heading.
const notFoundText = "Page not found"

// timeouts are a decoy web server's: how long it waits for a request (the
// TLS handshake included) and how long it keeps an idle connection.
type timeouts struct{ header, idle time.Duration }

// siteTimeouts draws a deployment's timeouts from its seed (whole seconds,
// 10–60 s and 30–180 s), so that no two deployments without a fallback
// close silent connections at the same moment.
func siteTimeouts(seed [32]byte) timeouts {
	r := seeded(seed, "timeouts")
	return timeouts{
		header: time.Duration(10+r.IntN(51)) * time.Second,
		idle:   time.Duration(30+r.IntN(151)) * time.Second,
	}
}

// SiteHost returns a host name generated from seed (another label than the
// site's, so it reveals nothing of it): the cover name serve puts in the
// self-signed certificate and the endpoint's SNI when the operator sets
// none.
//
// The name is two words from this package's lists, maybe a third or a
// number, and a top-level domain: millions of combinations, so a censor
// cannot block them all by SNI without blocking ordinary names too. It is
// still a name nobody registered: an operator who can, sets a real one
// (--tls-sni, or a domain and its certificate).
func SiteHost(seed [32]byte) string {
	r := seeded(seed, "host")
	name := pick(r, siteAdjectives) + pick(r, siteNouns)
	switch r.IntN(4) {
	case 0:
		name = pick(r, siteAdjectives) + "-" + pick(r, siteNouns)
	case 1:
		name += pick(r, hostSuffixes)
	case 2:
		name += fmt.Sprint(r.IntN(90) + 10)
	}
	return name + pick(r, []string{".com", ".net", ".org", ".studio", ".co", ".shop", ".info", ".site"})
}

// randomSeed is a fresh seed for a listener given no decoy.
func randomSeed() (s [32]byte) {
	rand.Read(s[:])
	return s
}

// DecoyDir returns a decoy that serves the static site in dir: files only
// (no directory listings), index.html for paths ending in "/", 404
// otherwise, with each file's own modification time.
func DecoyDir(dir string) http.Handler {
	return &staticSite{fsys: os.DirFS(dir)}
}

// seeded returns a random source for one purpose of seed.
func seeded(seed [32]byte, label string) *mrand.Rand {
	m := hmac.New(sha256.New, seed[:])
	m.Write([]byte("magpie tlsws site " + label))
	return mrand.New(mrand.NewChaCha8([32]byte(m.Sum(nil))))
}

func capitalize(w string) string { return strings.ToUpper(w[:1]) + w[1:] }

func pick(r *mrand.Rand, s []string) string { return s[r.IntN(len(s))] }

var (
	siteAdjectives = []string{"juniper", "copper", "willow", "harbor", "maple", "granite", "saffron", "linden", "amber", "cedar",
		"north", "riverside", "hollow", "bright", "quiet", "oak", "silver", "meadow", "ember", "tidal",
		"south", "east", "west", "old", "little", "green", "blue", "red", "golden", "stone",
		"iron", "birch", "ash", "elm", "pine", "rowan", "hazel", "clover", "thistle", "heather",
		"misty", "sunny", "windy", "lucky", "honest", "gentle", "humble", "noble", "rustic", "urban",
		"coastal", "alpine", "valley", "prairie", "orchard", "harvest", "velvet", "indigo", "scarlet", "ivory"}
	siteNouns = []string{"hill", "lane", "works", "studio", "yard", "field", "row", "house", "corner", "bay",
		"mill", "gate", "bridge", "loft", "garden", "point", "press", "forge", "market", "grove",
		"barn", "brook", "cove", "dale", "farm", "ford", "glen", "haven", "hearth", "inlet",
		"kiln", "ledge", "marsh", "moor", "nook", "pier", "quay", "ridge", "shed", "spring",
		"square", "street", "terrace", "tower", "wharf", "wood", "acre", "basin", "bench", "cellar",
		"crossing", "depot", "atelier", "workshop", "pantry", "parlour", "table", "kitchen", "canvas", "thread"}
	hostSuffixes = []string{"co", "shop", "works", "studio", "online", "store", "crafts", "goods", "hq", "web"}
	siteTrades   = []struct{ trade, things, verb string }{
		{"Pottery", "mugs, bowls and serving dishes", "throw and glaze"},
		{"Bakery", "sourdough, rye and seasonal pastries", "bake"},
		{"Bicycle Repair", "city bikes, tourers and cargo bikes", "service and rebuild"},
		{"Bookbinding", "notebooks, albums and restored books", "sew and bind"},
		{"Framing", "prints, photographs and textiles", "mount and frame"},
		{"Joinery", "tables, shelves and kitchen fittings", "design and build"},
		{"Tailoring", "suits, coats and alterations", "cut and sew"},
		{"Flowers", "bouquets, wreaths and event arrangements", "grow and arrange"},
		{"Coffee Roasters", "single-origin beans and house blends", "source and roast"},
		{"Letterpress", "cards, invitations and posters", "set and print"},
		{"Guitar Workshop", "acoustic guitars, mandolins and repairs", "build and set up"},
		{"Upholstery", "chairs, sofas and cushions", "strip and re-cover"},
	}
	siteOpenings = []string{"We %[1]s %[2]s in a small workshop", "For years we have made %[2]s; we %[1]s them by hand", "Our team of %[3]d will %[1]s your %[2]s", "Everything we sell we %[1]s ourselves: %[2]s"}
	siteDays     = []string{"Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays"}
	siteStreets  = []string{"Mill Street", "Station Road", "Church Lane", "High Street", "Market Square", "Bridge Street", "Park Avenue", "Canal Walk"}
	siteFonts    = []string{"Georgia, serif", "Helvetica, Arial, sans-serif", "\"Trebuchet MS\", sans-serif", "Palatino, serif", "Verdana, sans-serif", "system-ui, sans-serif"}
)

type siteFile struct {
	data []byte
	mod  time.Time
}

func generateFiles(seed [32]byte) map[string]siteFile {
	r := seeded(seed, "content")
	trade := siteTrades[r.IntN(len(siteTrades))]
	name := capitalize(pick(r, siteAdjectives)) + " " + capitalize(pick(r, siteNouns)) + " " + trade.trade
	since := 1988 + r.IntN(35)
	day1, day2 := r.IntN(len(siteDays)), r.IntN(len(siteDays))
	open, closeAt := 8+r.IntN(3), 16+r.IntN(4)
	street := fmt.Sprintf("%d %s", 2+r.IntN(180), pick(r, siteStreets))
	opening := fmt.Sprintf(pick(r, siteOpenings), trade.verb, trade.things, 2+r.IntN(9))
	page := func(title, body string) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>%s</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n", title)
		fmt.Fprintf(&b, "<header><h1>%s</h1><nav><a href=\"/\">Home</a> <a href=\"/about.html\">About</a> <a href=\"/contact.html\">Contact</a></nav></header>\n<main>\n%s</main>\n<footer><p>&copy; %d %s</p></footer>\n</body>\n</html>\n", name, body, since, name)
		return b.Bytes()
	}
	var idx, about, contact strings.Builder
	fmt.Fprintf(&idx, "<p>%s since %d.</p>\n", opening, since)
	for range 1 + r.IntN(3) {
		fmt.Fprintf(&idx, "<p>Orders placed before %d:00 on %s are ready the following week. Ask about %s.</p>\n", 10+r.IntN(6), siteDays[r.IntN(len(siteDays))], strings.Split(trade.things, ", ")[0])
	}
	fmt.Fprintf(&about, "<p>%s started in %d at %s. We %s %s, and take commissions.</p>\n", name, since, street, trade.verb, trade.things)
	for range 1 + r.IntN(3) {
		fmt.Fprintf(&about, "<p>%s to %s we are open from %d:00 to %d:00; other days by appointment.</p>\n", siteDays[day1], siteDays[max(day1, day2)], open, closeAt)
	}
	fmt.Fprintf(&contact, "<p>%s<br>Telephone 0%d %06d</p>\n<p>Write to us at info@%s.</p>\n", street, 1000+r.IntN(9000), r.IntN(1000000), strings.ToLower(strings.ReplaceAll(name, " ", ""))+".example")
	css := fmt.Sprintf("body { font-family: %s; max-width: %dem; margin: 0 auto; padding: %.1fem; color: #%06x; background: #%06x; }\nheader { border-bottom: %dpx solid #%06x; }\nnav a { margin-right: %.1fem; }\nfooter { margin-top: %dem; font-size: %d%%; }\n",
		pick(r, siteFonts), 36+r.IntN(20), 0.5+float64(r.IntN(20))/10, r.IntN(0x404040), 0xe0e0e0+r.IntN(0x1f1f1f), 1+r.IntN(4), r.IntN(0xffffff), 0.5+float64(r.IntN(15))/10, 1+r.IntN(4), 70+r.IntN(25))
	robots := "User-agent: *\nDisallow:\n"
	if r.IntN(2) == 0 {
		robots = "User-agent: *\nAllow: /\n"
	}
	// Published some time in the three years before 2026, edited since.
	base := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(3 * 365 * 24 * time.Hour)))).Truncate(time.Second)
	mod := func() time.Time {
		return base.Add(time.Duration(r.Int64N(int64(60 * 24 * time.Hour)))).Truncate(time.Second)
	}
	sorry := fmt.Sprintf("<h2>%s</h2>\n<p>Sorry, there is nothing at this address. Try the <a href=\"/\">home page</a> or call us at %s.</p>\n", notFoundText, street)
	return map[string]siteFile{
		"404.html":     {page(notFoundText+" – "+name, sorry), time.Time{}},
		"index.html":   {page(name, idx.String()), mod()},
		"about.html":   {page("About – "+name, about.String()), mod()},
		"contact.html": {page("Contact – "+name, contact.String()), mod()},
		"style.css":    {[]byte(css), mod()},
		"robots.txt":   {[]byte(robots), mod()},
	}
}

// memFS serves generated files.
type memFS map[string]siteFile

type memFile struct {
	*bytes.Reader
	name string
	f    siteFile
}

func (m memFS) Open(name string) (fs.File, error) {
	f, ok := m[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &memFile{Reader: bytes.NewReader(f.data), name: name, f: f}, nil
}

func (f *memFile) Stat() (fs.FileInfo, error) { return memInfo{f}, nil }
func (f *memFile) Close() error               { return nil }

type memInfo struct{ f *memFile }

func (i memInfo) Name() string       { return path.Base(i.f.name) }
func (i memInfo) Size() int64        { return int64(len(i.f.f.data)) }
func (i memInfo) Mode() fs.FileMode  { return 0o444 }
func (i memInfo) ModTime() time.Time { return i.f.f.mod }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

func newSite(files map[string]siteFile) *staticSite {
	return &staticSite{fsys: memFS(files)}
}

type staticSite struct {
	fsys         fs.FS
	cacheControl string                // if set, on every file
	errorBody    func(code int) []byte // if nil, a plain page
}

func (s *staticSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		s.errorPage(w, http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if strings.HasSuffix(p, "/") {
		p += "index.html"
	}
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if !fs.ValidPath(name) {
		s.errorPage(w, http.StatusNotFound)
		return
	}
	f, err := s.fsys.Open(name)
	if err != nil {
		s.errorPage(w, http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > 64<<20 {
		s.errorPage(w, http.StatusNotFound)
		return
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		b, err := io.ReadAll(f)
		if err != nil {
			s.errorPage(w, http.StatusNotFound)
			return
		}
		rs = bytes.NewReader(b)
	}
	if s.cacheControl != "" {
		w.Header().Set("Cache-Control", s.cacheControl)
	}
	// nginx's ETag: hex modification time and size.
	w.Header().Set("ETag", fmt.Sprintf("%q", fmt.Sprintf("%x-%x", st.ModTime().Unix(), st.Size())))
	http.ServeContent(w, r, name, st.ModTime(), rs)
}

func (s *staticSite) errorPage(w http.ResponseWriter, code int) {
	text := fmt.Sprintf("%d %s", code, http.StatusText(code))
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if s.errorBody != nil {
		w.Write(s.errorBody(code))
		return
	}
	msg := "The requested URL was not found on this server."
	if code == http.StatusMethodNotAllowed {
		msg = "The requested method is not allowed for this URL."
	}
	fmt.Fprintf(w, "<!DOCTYPE html>\n<html>\n<head><title>%s</title></head>\n<body>\n<h1>%s</h1>\n<p>%s</p>\n</body>\n</html>\n", text, text, msg)
}
