package censor

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Comparing a suspect server with a real web server.
//
// A TLS-shaped proxy is only as good as its disguise: a censor that
// suspects a host sends it probes and compares the reactions with what a
// real web server (here nginx, serving the same site and certificate)
// would do. CompareServers does exactly that, class by class, and reports
// every difference in the bytes returned, in how the connection ended (FIN,
// RST, still open) and in when it ended.

// The probe classes CompareServers sends (see buildProbes). On bare TCP:
//
//	empty              connect, send nothing
//	random-N           N random bytes (1, 50, 1000, 10000)
//	http-get           a plain HTTP/1.1 GET on the TLS port
//	tls-junk           a TLS handshake record header with 512 random bytes
//	clienthello        a fresh, ordinary ClientHello (Go's), then nothing
//	replay-I           recorded genuine first packet I, as is
//	replay-modified-I  the same with its middle byte inverted
//
// After a full TLS handshake (the certificate not checked, as a prober's):
//
//	https-get          ALPN http/1.1, GET /
//	https-h2           h2 and http/1.1 offered; with h2, the client preface and SETTINGS
//	https-junk         ALPN http/1.1, a malformed request line
//	https-idle         nothing after the handshake
//	https-websocket    ALPN http/1.1, a WebSocket upgrade to /ws without credentials

// CompareConfig configures CompareServers.
type CompareConfig struct {
	// ServerName is the SNI and Host the probes send.
	ServerName string
	// FirstPackets are recorded genuine first packets, replayed as is and
	// modified (at least one is needed for the replay classes).
	FirstPackets [][]byte
	// Timeout is how long a probe waits for the server to close after
	// sending (default 5 s). Servers' own timeouts should be shorter, so
	// that closes are compared.
	Timeout time.Duration
	// Tolerance is the largest difference in close times taken for noise
	// (default 300 ms).
	Tolerance time.Duration
	// Retries is how many times a class that differs only in timing is
	// sent again (default 2); it differs if every attempt did.
	Retries int
}

// Reaction is what one probe got back from one server.
type Reaction struct {
	Shape   string        // the bytes returned, normalised (see shape)
	End     End           // how it ended
	Elapsed time.Duration // from the end of sending to the end
	Err     string
}

// ClassResult compares the reactions of the two servers to one class.
type ClassResult struct {
	Class              string
	Reference, Suspect Reaction
	Differs            bool
	Why                string
	Attempts           int
}

// CompareReport is the outcome of CompareServers.
type CompareReport struct {
	Results []ClassResult
	Differ  []string // classes whose reactions differ
}

// CompareServers sends every probe class to reference and to suspect (at
// the same time, so that both see the same load) and compares the
// reactions.
func CompareServers(ctx context.Context, reference, suspect string, cfg CompareConfig) CompareReport {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Tolerance <= 0 {
		cfg.Tolerance = 300 * time.Millisecond
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	probes := buildProbes(cfg)
	results := make([]ClassResult, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := ClassResult{Class: p.name}
			for attempt := 0; attempt <= cfg.Retries && ctx.Err() == nil; attempt++ {
				r.Attempts = attempt + 1
				var ref, sus Reaction
				var pw sync.WaitGroup
				pw.Add(2)
				go func() { defer pw.Done(); ref = p.run(ctx, reference, cfg) }()
				go func() { defer pw.Done(); sus = p.run(ctx, suspect, cfg) }()
				pw.Wait()
				r.Reference, r.Suspect = ref, sus
				var timingOnly bool
				r.Why, timingOnly = differ(ref, sus, cfg.Tolerance)
				r.Differs = r.Why != ""
				if !r.Differs || !timingOnly {
					break
				}
			}
			results[i] = r
		}()
	}
	wg.Wait()
	rep := CompareReport{Results: results}
	for _, r := range results {
		if r.Differs {
			rep.Differ = append(rep.Differ, r.Class)
		}
	}
	return rep
}

// differ says how two reactions differ ("" if they do not), and whether
// only in timing.
func differ(a, b Reaction, tol time.Duration) (string, bool) {
	var why []string
	if a.Shape != b.Shape {
		why = append(why, fmt.Sprintf("returned %q, nginx %q", clip(b.Shape), clip(a.Shape)))
	}
	if a.End != b.End {
		why = append(why, fmt.Sprintf("ended with %s, nginx %s", b.End, a.End))
	}
	if len(why) > 0 {
		return strings.Join(why, "; "), false
	}
	if (a.End == EndEOF || a.End == EndReset) && (a.Elapsed-b.Elapsed > tol || b.Elapsed-a.Elapsed > tol) {
		return fmt.Sprintf("closed after %v, nginx after %v", b.Elapsed.Round(time.Millisecond), a.Elapsed.Round(time.Millisecond)), true
	}
	return "", false
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

type probe struct {
	name string
	raw  []byte   // sent on bare TCP
	alpn []string // non-nil: a TLS handshake first, then raw inside
	h2   bool     // with h2 negotiated, send the client preface instead
}

func buildProbes(cfg CompareConfig) []probe {
	host := cfg.ServerName
	rnd := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	junk := append([]byte{22, 3, 1, 2, 0}, rnd(512)...)
	get := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n")
	ws := []byte("GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	h1 := []string{"http/1.1"}
	ps := []probe{
		{name: "empty"},
		{name: "random-1", raw: rnd(1)},
		{name: "random-50", raw: rnd(50)},
		{name: "random-1000", raw: rnd(1000)},
		{name: "random-10000", raw: rnd(10000)},
		{name: "http-get", raw: get},
		{name: "tls-junk", raw: junk},
		{name: "clienthello", raw: goClientHello(&tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})},
	}
	for i, fp := range cfg.FirstPackets {
		if len(fp) == 0 {
			continue
		}
		mod := slices.Clone(fp)
		mod[len(mod)/2] ^= 0xff
		ps = append(ps, probe{name: fmt.Sprintf("replay-%d", i), raw: slices.Clone(fp)},
			probe{name: fmt.Sprintf("replay-modified-%d", i), raw: mod})
	}
	return append(ps,
		probe{name: "https-get", alpn: h1, raw: get},
		probe{name: "https-h2", alpn: []string{"h2", "http/1.1"}, raw: get, h2: true},
		probe{name: "https-junk", alpn: h1, raw: []byte("HTTP_GET / junk\r\n\r\n")},
		probe{name: "https-idle", alpn: h1},
		probe{name: "https-websocket", alpn: h1, raw: ws},
	)
}

// goClientHello returns the first flight of Go's crypto/tls client with
// cfg: an ordinary ClientHello that is not the one being looked for.
func goClientHello(cfg *tls.Config) []byte {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, cfg).Handshake()
	buf := make([]byte, 1<<16)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := b.Read(buf)
	return buf[:n]
}

// http2Preface is the client connection preface and an empty SETTINGS
// frame (RFC 9113 §3.4).
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")

func (p probe) run(ctx context.Context, addr string, cfg CompareConfig) Reaction {
	d := net.Dialer{Timeout: cfg.Timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Reaction{End: EndRefused, Err: err.Error()}
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn := raw
	var prefix string
	if p.alpn != nil {
		tc := tls.Client(raw, &tls.Config{ServerName: cfg.ServerName, InsecureSkipVerify: true, NextProtos: p.alpn})
		raw.SetDeadline(time.Now().Add(cfg.Timeout))
		if err := tc.Handshake(); err != nil {
			return Reaction{End: classify(err), Err: err.Error(), Shape: "handshake failed"}
		}
		raw.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		prefix = fmt.Sprintf("TLS %x ALPN %q\n", st.Version, st.NegotiatedProtocol)
		conn = tc
	}
	send := p.raw
	if p.h2 && strings.HasPrefix(prefix, "TLS") && strings.Contains(prefix, `"h2"`) {
		send = http2Preface
	}
	if len(send) > 0 {
		conn.SetWriteDeadline(time.Now().Add(cfg.Timeout))
		if _, err := conn.Write(send); err != nil {
			return Reaction{Shape: prefix, End: classify(err), Err: err.Error()}
		}
	}
	start := time.Now()
	conn.SetReadDeadline(start.Add(cfg.Timeout))
	var got bytes.Buffer
	_, err = io.Copy(&got, conn)
	r := Reaction{Elapsed: time.Since(start)}
	switch {
	case err == nil:
		r.End = EndEOF
	default:
		r.End = classify(err)
		if r.End == EndError {
			r.Err = err.Error()
			// crypto/tls reports the peer's close_notify-less FIN as an
			// unexpected EOF, and an alert as an alert: both are ends.
			if errors.Is(err, io.ErrUnexpectedEOF) {
				r.End, r.Err = EndEOF, ""
			}
		}
	}
	if p.alpn != nil {
		r.Shape = prefix + maskDate(got.String())
	} else {
		r.Shape = shape(got.Bytes())
	}
	return r
}

var dateHeader = regexp.MustCompile(`(?m)^(Date: |date: )[^\r\n]*`)

func maskDate(s string) string { return dateHeader.ReplaceAllString(s, "${1}*") }

// shape normalises the bytes a server sent on a bare connection: TLS
// records as their headers (type, version, length), since their contents
// are random or encrypted; anything else as text with Date masked.
func shape(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if b[0] < 20 || b[0] > 23 {
		return maskDate(string(b))
	}
	var s strings.Builder
	for len(b) >= 5 && b[0] >= 20 && b[0] <= 23 {
		n := int(b[3])<<8 | int(b[4])
		fmt.Fprintf(&s, "record %d %02x%02x %d\n", b[0], b[1], b[2], n)
		if len(b) < 5+n {
			fmt.Fprintf(&s, "truncated at %d\n", len(b)-5)
			return s.String()
		}
		if b[0] == 21 && n == 2 { // alerts are short and plain before encryption
			fmt.Fprintf(&s, "alert % x\n", b[5:7])
		}
		b = b[5+n:]
	}
	if len(b) > 0 {
		fmt.Fprintf(&s, "then %q\n", b)
	}
	return s.String()
}

// Table formats the report as a Markdown table.
func (r CompareReport) Table() string {
	var s strings.Builder
	s.WriteString("| probe class | nginx | suspect | verdict |\n| --- | --- | --- | --- |\n")
	for _, c := range r.Results {
		verdict := "same"
		if c.Differs {
			verdict = "DIFFERS: " + c.Why
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s |\n", c.Class, summary(c.Reference), summary(c.Suspect), verdict)
	}
	return s.String()
}

func summary(r Reaction) string {
	n := strings.Count(r.Shape, "\n")
	return fmt.Sprintf("%s after %v (%d lines back)", r.End, r.Elapsed.Round(10*time.Millisecond), n)
}
