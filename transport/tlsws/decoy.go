package tlsws

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
	"time"
)

//go:embed decoy
var decoyFiles embed.FS

// started is the default site's Last-Modified: the time this server was
// deployed, as a real static site's files would show.
var started = time.Now().UTC().Truncate(time.Second)

// DefaultDecoy returns the built-in decoy: a small static website (a
// pottery studio's) with ordinary headers, served for GET and HEAD, 404 for
// unknown paths and 405 for other methods.
func DefaultDecoy() http.Handler {
	sub, err := fs.Sub(decoyFiles, "decoy")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	return &staticSite{fsys: sub, modTime: started}
}

// DecoyDir returns a decoy that serves the static site in dir like
// DefaultDecoy serves its own: files only (no directory listings),
// index.html for paths ending in "/", 404 otherwise.
func DecoyDir(dir string) http.Handler {
	return &staticSite{fsys: os.DirFS(dir)}
}

type staticSite struct {
	fsys    fs.FS
	modTime time.Time // zero: use each file's own
}

func (s *staticSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		errorPage(w, http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if strings.HasSuffix(p, "/") {
		p += "index.html"
	}
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if !fs.ValidPath(name) {
		errorPage(w, http.StatusNotFound)
		return
	}
	f, err := s.fsys.Open(name)
	if err != nil {
		errorPage(w, http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > 64<<20 {
		errorPage(w, http.StatusNotFound)
		return
	}
	mod := s.modTime
	if mod.IsZero() {
		mod = st.ModTime()
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		b, err := io.ReadAll(f)
		if err != nil {
			errorPage(w, http.StatusNotFound)
			return
		}
		rs = bytes.NewReader(b)
	}
	http.ServeContent(w, r, name, mod, rs)
}

func errorPage(w http.ResponseWriter, code int) {
	text := fmt.Sprintf("%d %s", code, http.StatusText(code))
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	msg := "The requested URL was not found on this server."
	if code == http.StatusMethodNotAllowed {
		msg = "The requested method is not allowed for this URL."
	}
	fmt.Fprintf(w, "<!DOCTYPE html>\n<html>\n<head><title>%s</title></head>\n<body>\n<h1>%s</h1>\n<p>%s</p>\n</body>\n</html>\n", text, text, msg)
}
