package endpoints

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// LinkScheme prefixes a relay link.
const LinkScheme = "magpie-relay"

// FormatLink encodes one endpoint as a link that can be passed around out of
// band (a relay a friend runs, a fresh endpoint for a blocked user):
//
//	magpie-relay://<transport>@<host:port>?cert=…&secret=…&sni=…&path=…&front=…
//
// Links are not signed: they need not be. The Noise handshake that follows
// authenticates the server by the key in the user's invite, so a link can
// at worst lead nowhere; it cannot lead to an impostor.
func FormatLink(e Endpoint) string {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("cert", e.Cert)
	set("sni", e.SNI)
	set("front", e.Front)
	set("path", e.Path)
	if len(e.Secret) > 0 {
		q.Set("secret", base64.RawURLEncoding.EncodeToString(e.Secret))
	}
	if e.Priority != 0 {
		q.Set("priority", strconv.Itoa(e.Priority))
	}
	u := url.URL{Scheme: LinkScheme, User: url.User(e.Transport), Host: e.Address, RawQuery: q.Encode()}
	return u.String()
}

// ParseLink decodes a link made by FormatLink.
func ParseLink(s string) (Endpoint, error) {
	if len(s) > 4096 {
		return Endpoint{}, fmt.Errorf("%w: link too long", ErrMalformed)
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != LinkScheme || u.User == nil || u.Host == "" {
		return Endpoint{}, fmt.Errorf("%w: a relay link looks like %s://tls@host:port?…", ErrMalformed, LinkScheme)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	q, err := url.ParseQuery(u.RawQuery) // strict: a mangled parameter is an error, not a silent drop
	if err != nil {
		return Endpoint{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := Endpoint{Transport: u.User.Username(), Address: u.Host, Cert: q.Get("cert"), SNI: q.Get("sni"),
		Front: q.Get("front"), Path: q.Get("path")}
	if s := q.Get("secret"); s != "" {
		if e.Secret, err = base64.RawURLEncoding.DecodeString(s); err != nil {
			return Endpoint{}, fmt.Errorf("%w: secret: %v", ErrMalformed, err)
		}
	}
	if p := q.Get("priority"); p != "" {
		if e.Priority, err = strconv.Atoi(p); err != nil {
			return Endpoint{}, fmt.Errorf("%w: priority: %v", ErrMalformed, err)
		}
	}
	return e, nil
}
