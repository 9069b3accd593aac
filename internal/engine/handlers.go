package engine

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"rsc.io/qr"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/group"
)

// maxJSONBody bounds a JSON request.
const maxJSONBody = 1 << 20

// MaxFileBody bounds a file uploaded through the API (the server has its
// own, usually lower, limit).
const MaxFileBody = 4 << 30

// api serves the local API for one engine. local is true on the Unix
// socket, which only this user can reach: there, requests may name files
// by path, register, and open the web app.
type api struct {
	e     *Engine
	local bool
	mux   *http.ServeMux
}

func newAPI(e *Engine, local bool) http.Handler {
	a := &api{e: e, local: local, mux: http.NewServeMux()}
	routes := map[string]func(http.ResponseWriter, *http.Request) (any, error){
		"GET /api/v1/status":                        a.status,
		"GET /api/v1/conversations":                 a.conversations,
		"GET /api/v1/conversations/{peer}/messages": a.history,
		"POST /api/v1/conversations/{peer}/read":    a.markRead,
		"POST /api/v1/conversations/{peer}/typing":  a.typing,
		"POST /api/v1/messages":                     a.send,
		"GET /api/v1/messages/{seq}":                a.message,
		"DELETE /api/v1/messages/{seq}":             a.cancel,
		"GET /api/v1/outbox":                        a.outbox,
		"POST /api/v1/files":                        a.sendFile,
		"GET /api/v1/contacts/{name}":               a.contact,
		"GET /api/v1/contacts/{name}/safety":        a.safety,
		"POST /api/v1/contacts/{name}/verify":       a.verify,
		"GET /api/v1/settings":                      a.settings,
		"PUT /api/v1/settings":                      a.putSettings,
		"POST /api/v1/sync":                         a.sync,
		"GET /api/v1/endpoints":                     a.endpoints,
		"POST /api/v1/probe":                        a.probe,
		"GET /api/v1/groups":                        a.groups,
		"POST /api/v1/groups":                       a.createGroup,
		"POST /api/v1/groups/join":                  a.joinGroup,
		"GET /api/v1/groups/{id}":                   a.group,
		"POST /api/v1/groups/{id}/members":          a.groupAdd,
		"DELETE /api/v1/groups/{id}/members/{user}": a.groupRemove,
		"PUT /api/v1/groups/{id}/members/{user}":    a.groupSetRole,
		"POST /api/v1/groups/{id}/leave":            a.groupLeave,
		"PUT /api/v1/groups/{id}/info":              a.groupSetInfo,
		"PUT /api/v1/groups/{id}/settings":          a.groupSetSettings,
		"POST /api/v1/groups/{id}/link":             a.groupLink,
		"POST /api/v1/groups/{id}/requests/{user}":  a.groupApprove,
		"PUT /api/v1/groups/{id}/avatar":            a.groupSetAvatar,
		"DELETE /api/v1/groups/{id}/avatar":         a.groupSetAvatar,
		"POST /api/v1/register":                     a.localOnly(a.register),
		"POST /api/v1/relays":                       a.localOnly(a.addRelay),
		"POST /api/v1/app":                          a.localOnly(a.openApp),
		"/api/":                                     a.notFound,
	}
	for pattern, h := range routes {
		a.mux.HandleFunc(pattern, a.json(h))
	}
	a.mux.HandleFunc("GET /api/v1/contacts/{name}/safety.svg", a.safetySVG)
	a.mux.HandleFunc("GET /api/v1/files/{seq}", a.file)
	a.mux.HandleFunc("GET /api/v1/files/{seq}/thumbnail", a.thumbnail)
	a.mux.HandleFunc("GET /api/v1/groups/{id}/avatar", a.groupAvatar)
	a.mux.HandleFunc("GET /api/v1/events", a.events)
	return a.mux
}

// json adapts a handler that returns a value to encode (200, or 201 for a
// POST that made something) or an error.
func (a *api) json(h func(http.ResponseWriter, *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h(w, r)
		if err != nil {
			if code, _ := classify(err); code == CodeInternal {
				// An error no code describes is a bug or a broken
				// home: the page only sees "internal", so say what.
				a.e.opts.Client.Logger.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if m, ok := v.(created); ok {
			w.WriteHeader(http.StatusCreated)
			v = m.v
		}
		json.NewEncoder(w).Encode(v)
	}
}

// created marks a response that made something (201).
type created struct{ v any }

func writeError(w http.ResponseWriter, err error) {
	code, status := classify(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorBody{Error{Code: code, Message: err.Error()}})
}

func (a *api) localOnly(h func(http.ResponseWriter, *http.Request) (any, error)) func(http.ResponseWriter, *http.Request) (any, error) {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		if !a.local {
			return nil, refused("only the magpie command can do that")
		}
		return h(w, r)
	}
}

func (a *api) notFound(http.ResponseWriter, *http.Request) (any, error) {
	return nil, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no such API endpoint (see docs/LOCAL_API.md)"}
}

func decode(r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxJSONBody)).Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("the request body is not the JSON expected: %v", err)
	}
	return nil
}

func pathSeq(r *http.Request) (uint64, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		return 0, badRequest("%q is not a message number", r.PathValue("seq"))
	}
	return seq, nil
}

// groupPeerPrefix starts a group's conversation (client.GroupID.Peer).
const groupPeerPrefix = "group:"

// pathPeer is the {peer} of a conversation's URL: a user, or a group's
// conversation ("group:" and its id, whose hex may be in either case).
func (a *api) pathPeer(r *http.Request) (string, error) {
	p := r.PathValue("peer")
	if !strings.HasPrefix(p, groupPeerPrefix) {
		return p, nil
	}
	id, err := client.ParseGroupID(p)
	if err != nil {
		return "", err
	}
	return id.Peer(), nil
}

// knownGroup fails with unknown_group when peer is a group's conversation
// that this device does not know. A known group's conversation is seldom
// empty (it starts with the notice of the group's creation), so the
// handlers ask only when they found nothing: looking a group up reads
// each of its members' contacts.
func (a *api) knownGroup(ctx context.Context, peer string) error {
	id, err := client.ParseGroupID(peer)
	if !strings.HasPrefix(peer, groupPeerPrefix) || err != nil {
		return nil
	}
	_, err = a.e.c.Group(ctx, id)
	return err
}

func (a *api) status(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.e.status(r.Context())
}

func (a *api) conversations(w http.ResponseWriter, r *http.Request) (any, error) {
	cs, err := a.e.c.Conversations(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]Conversation, 0, len(cs))
	for _, c := range cs {
		cv := Conversation{Peer: c.Peer, Unread: c.Unread, Verified: c.Verified, IdentityChanged: c.IdentityChanged, Name: c.Name}
		if c.Group != nil {
			id := c.Group.String()
			cv.Group = &id
		}
		if c.Last != nil {
			m := apiMessage(c.Last)
			cv.Last = &m
		}
		out = append(out, cv)
	}
	return map[string]any{"conversations": out}, nil
}

// maxPage bounds a history page.
const maxPage = 500

func (a *api) history(w http.ResponseWriter, r *http.Request) (any, error) {
	q := client.HistoryQuery{Search: r.URL.Query().Get("q"), Limit: 50}
	if v := r.URL.Query().Get("before"); v != "" {
		b, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, badRequest("before=%q is not a message number", v)
		}
		q.Before = b
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, badRequest("limit=%q is not a positive number", v)
		}
		q.Limit = min(n, maxPage)
	}
	peer, err := a.pathPeer(r)
	if err != nil {
		return nil, err
	}
	msgs, more, err := a.e.c.History(r.Context(), peer, q)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 && q.Before == 0 && q.Search == "" {
		if err := a.knownGroup(r.Context(), peer); err != nil {
			return nil, err
		}
	}
	return map[string]any{"messages": apiMessages(msgs), "more": more}, nil
}

func (a *api) markRead(w http.ResponseWriter, r *http.Request) (any, error) {
	peer, err := a.pathPeer(r)
	if err != nil {
		return nil, err
	}
	n, err := a.e.c.MarkRead(r.Context(), peer)
	if err == nil && n == 0 {
		err = a.knownGroup(r.Context(), peer)
	}
	if err != nil {
		return nil, err
	}
	return map[string]int{"read": n}, nil
}

func (a *api) typing(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Typing bool `json:"typing"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	peer, err := a.pathPeer(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"ok": true}, a.e.c.Typing(r.Context(), peer, req.Typing)
}

func (a *api) send(w http.ResponseWriter, r *http.Request) (any, error) {
	var req SendRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	var opts []client.SendOption
	if req.ID != "" {
		id, err := client.ParseMessageID(req.ID)
		if err != nil {
			return nil, badRequest("id: %v", err)
		}
		opts = append(opts, client.WithID(id))
	}
	m, err := a.e.c.Send(r.Context(), req.To, req.Text, opts...)
	if err != nil {
		return nil, err
	}
	return created{apiMessage(m)}, nil
}

// fileBody is what a request carries: its body (at most limit bytes), or,
// from the magpie command, the file that {"path": …} names (path is then
// its path). Close closes that file.
func (a *api) fileBody(w http.ResponseWriter, r *http.Request, limit int64) (body io.Reader, path string, closeFn func(), err error) {
	closeFn = func() {}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		return http.MaxBytesReader(w, r.Body, limit), "", closeFn, nil
	}
	if !a.local {
		return nil, "", closeFn, refused("files are given by path only through the magpie command")
	}
	var req FileRequest
	if err := decode(r, &req); err != nil {
		return nil, "", closeFn, err
	}
	f, err := os.Open(req.Path)
	if err != nil {
		return nil, "", closeFn, badRequest("%v", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, "", closeFn, badRequest("%s is not a regular file", req.Path)
	}
	return f, req.Path, func() { f.Close() }, nil
}

func (a *api) sendFile(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	to, name := q.Get("to"), q.Get("name")
	body, path, closeFn, err := a.fileBody(w, r, MaxFileBody)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	if name == "" && path != "" {
		name = filepath.Base(path)
	}
	if to == "" || name == "" {
		return nil, badRequest("say whom to send the file to (to=) and its name (name=)")
	}
	m, err := a.e.c.SendFile(r.Context(), to, body, name, client.FileOptions{Caption: q.Get("caption")})
	if err != nil {
		return nil, err
	}
	return created{apiMessage(m)}, nil
}

// maxWait bounds ?timeout= on a message.
const maxWait = 10 * time.Minute

func (a *api) message(w http.ResponseWriter, r *http.Request) (any, error) {
	seq, err := pathSeq(r)
	if err != nil {
		return nil, err
	}
	if r.URL.Query().Get("wait") != "sent" {
		m, err := a.e.c.Message(r.Context(), seq)
		if err != nil {
			return nil, err
		}
		return apiMessage(m), nil
	}
	timeout := 30 * time.Second
	if v := r.URL.Query().Get("timeout"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
			return nil, badRequest("timeout=%q is not a duration such as 30s", v)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(timeout, maxWait))
	defer cancel()
	m, err := a.e.c.WaitSent(ctx, seq)
	if m == nil {
		return nil, err
	}
	// Still queued after the wait, or offline: the message is what the
	// caller wants to see, with its state; the reason goes in its error.
	out := apiMessage(m)
	if err != nil && out.Error == "" && !errors.Is(err, context.DeadlineExceeded) {
		out.Error = err.Error()
	}
	return out, nil
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request) (any, error) {
	seq, err := pathSeq(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"cancelled": true}, a.e.c.Cancel(r.Context(), seq)
}

func (a *api) outbox(w http.ResponseWriter, r *http.Request) (any, error) {
	ms, err := a.e.c.Outbox(r.Context())
	return map[string]any{"messages": apiMessages(ms)}, err
}

func (a *api) contact(w http.ResponseWriter, r *http.Request) (any, error) {
	u, err := a.e.c.Lookup(r.Context(), r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	out := Contact{User: u.Name, Devices: []ContactDevice{}}
	for _, d := range u.Devices {
		out.Devices = append(out.Devices, ContactDevice{Device: d.ID, Created: Time{d.Created}, Key: hex.EncodeToString(d.Key[:]), HasKeys: d.HasKeys})
	}
	return out, nil
}

func (a *api) safety(w http.ResponseWriter, r *http.Request) (any, error) {
	sn, err := a.e.c.SafetyNumber(r.Context(), r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	status := "unverified"
	switch {
	case sn.Changed:
		status = "changed"
	case sn.Verified:
		status = "verified"
	}
	return Safety{User: sn.User, Digits: sn.Digits, Status: status, QR: sn.Scannable}, nil
}

func (a *api) safetySVG(w http.ResponseWriter, r *http.Request) {
	sn, err := a.e.c.SafetyNumber(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	code, err := qr.Encode(string(sn.Scannable), qr.M)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	io.WriteString(w, qrSVG(code))
}

// qrSVG draws a QR code as SVG, one path of dark modules, with the
// four-module quiet zone the standard asks for.
func qrSVG(code *qr.Code) string {
	const quiet = 4
	n := code.Size + 2*quiet
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges"><rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n, n, n)
	for y := range code.Size {
		for x := range code.Size {
			if code.Black(x, y) {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x+quiet, y+quiet)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String()
}

func (a *api) verify(w http.ResponseWriter, r *http.Request) (any, error) {
	var req Verify
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if err := a.e.c.MarkVerified(r.Context(), r.PathValue("name"), client.Verification{Digits: req.Digits, Scanned: req.Scanned}); err != nil {
		return nil, err
	}
	return map[string]string{"status": "verified"}, nil
}

func (a *api) settings(w http.ResponseWriter, r *http.Request) (any, error) {
	on, plain := a.e.c.ReadReceipts(), a.e.c.PlainTCP()
	return Settings{ReadReceipts: &on, PlainTCP: &plain}, nil
}

func (a *api) putSettings(w http.ResponseWriter, r *http.Request) (any, error) {
	var req Settings
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.ReadReceipts != nil {
		if err := a.e.c.SetReadReceipts(r.Context(), *req.ReadReceipts); err != nil {
			return nil, err
		}
	}
	if req.PlainTCP != nil {
		if err := a.e.c.SetPlainTCP(r.Context(), *req.PlainTCP); err != nil {
			return nil, err
		}
	}
	return a.settings(w, r)
}

func (a *api) sync(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.e.c.Sync(r.Context()); err != nil {
		return nil, err
	}
	return a.e.status(r.Context())
}

func (a *api) endpoints(w http.ResponseWriter, r *http.Request) (any, error) {
	eps, err := a.e.c.Endpoints(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]Endpoint, 0, len(eps))
	for _, e := range eps {
		out = append(out, Endpoint{Transport: e.Transport, Address: e.Address, Priority: e.Priority, Key: e.Key(), Safe: e.Safe})
	}
	return map[string]any{"endpoints": out}, nil
}

func (a *api) addRelay(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Link string `json:"link"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	e, err := a.e.c.AddRelay(r.Context(), req.Link)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return created{Endpoint{Transport: e.Transport, Address: e.Address, Priority: e.Priority, Key: e.Key()}}, nil
}

func (a *api) probe(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		TimeoutMs int64 `json:"timeout_ms"`
		Reorder   bool  `json:"reorder"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	rs, err := a.e.c.Probe(r.Context(), client.ProbeOptions{Timeout: time.Duration(req.TimeoutMs) * time.Millisecond})
	if err != nil {
		return nil, err
	}
	if req.Reorder {
		a.e.c.ReorderByProbe(r.Context(), rs)
	}
	out := make([]ProbeResult, 0, len(rs))
	for _, x := range rs {
		p := ProbeResult{Transport: x.Endpoint.Transport, Address: x.Endpoint.Address, Verdict: x.Verdict,
			ConnectMs: ms(x.Connect), HandshakeMs: ms(x.Handshake), RoundTripMs: ms(x.RoundTrip), ThroughputBytesPerS: int64(x.Throughput),
			Stealthy: x.Endpoint.Stealthy()}
		if p.Transport == "" {
			p.Transport = "tcp"
		}
		if x.Err != nil {
			p.Error = x.Err.Error()
		}
		out = append(out, p)
	}
	return map[string]any{"results": out}, nil
}

// pathGroup is the {id} of a group's URL: its id in hex, or its
// conversation's peer ("group:" and the id).
func pathGroup(r *http.Request) (client.GroupID, error) {
	return client.ParseGroupID(r.PathValue("id"))
}

// pathUser is the {user} of a group member's URL.
func pathUser(r *http.Request) string { return r.PathValue("user") }

func (a *api) groups(w http.ResponseWriter, r *http.Request) (any, error) {
	gs, err := a.e.c.Groups(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]Group, 0, len(gs))
	for i := range gs {
		out = append(out, apiGroup(&gs[i]))
	}
	return map[string]any{"groups": out}, nil
}

func (a *api) group(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := pathGroup(r)
	if err != nil {
		return nil, err
	}
	return a.groupNow(r.Context(), id)
}

// groupNow is the group as this device knows it now.
func (a *api) groupNow(ctx context.Context, id client.GroupID) (Group, error) {
	g, err := a.e.c.Group(ctx, id)
	if err != nil {
		return Group{}, err
	}
	return apiGroup(g), nil
}

func (a *api) createGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Name    string   `json:"name"`
		Members []string `json:"members"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	g, err := a.e.c.CreateGroup(r.Context(), req.Name, req.Members)
	if err != nil {
		return nil, err
	}
	return created{apiGroup(g)}, nil
}

func (a *api) joinGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Link string `json:"link"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	g, err := a.e.c.JoinGroup(r.Context(), req.Link)
	if err != nil {
		return nil, err
	}
	return apiGroup(g), nil
}

// changeGroup decodes the request's body into req (unless nil), makes a
// change to the group of the URL, and answers with the group afterwards.
func (a *api) changeGroup(r *http.Request, req any, change func(context.Context, client.GroupID) error) (Group, error) {
	id, err := pathGroup(r)
	if err != nil {
		return Group{}, err
	}
	if req != nil {
		if err := decode(r, req); err != nil {
			return Group{}, err
		}
	}
	if err := change(r.Context(), id); err != nil {
		return Group{}, err
	}
	return a.groupNow(r.Context(), id)
}

func (a *api) groupAdd(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Users []string `json:"users"`
	}
	return a.changeGroup(r, &req, func(ctx context.Context, id client.GroupID) error {
		return a.e.c.GroupAdd(ctx, id, req.Users...)
	})
}

func (a *api) groupRemove(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.changeGroup(r, nil, func(ctx context.Context, id client.GroupID) error {
		return a.e.c.GroupRemove(ctx, id, pathUser(r))
	})
}

func (a *api) groupSetRole(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Role string `json:"role"`
	}
	return a.changeGroup(r, &req, func(ctx context.Context, id client.GroupID) error {
		return a.e.c.GroupSetRole(ctx, id, pathUser(r), req.Role)
	})
}

func (a *api) groupLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.changeGroup(r, nil, a.e.c.GroupLeave)
}

func (a *api) groupSetInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	var req GroupInfo
	return a.changeGroup(r, &req, func(ctx context.Context, id client.GroupID) error {
		if req.Name == nil && req.Description == nil {
			return badRequest("give the group's new name, its description, or both")
		}
		// Merged with the newest state, not this device's copy, which may
		// lag behind a change another member just made.
		return a.e.c.GroupEditInfo(ctx, id, req.Name, req.Description)
	})
}

func (a *api) groupSetSettings(w http.ResponseWriter, r *http.Request) (any, error) {
	var req GroupSettingsChange
	return a.changeGroup(r, &req, func(ctx context.Context, id client.GroupID) error {
		if req.AdminsOnlySend == nil && req.AdminsOnlyEditInfo == nil && req.DisappearAfterS == nil {
			return badRequest("give at least one setting to change")
		}
		if v := req.DisappearAfterS; v != nil && (*v < 0 || *v > int64(group.MaxDisappearAfter/time.Second)) {
			return badRequest("disappear_after_s is a number of seconds from 0 (for ever) to %d, not %d", int64(group.MaxDisappearAfter/time.Second), *v)
		}
		return a.e.c.GroupEditSettings(ctx, id, func(s *client.GroupSettings) {
			if req.AdminsOnlySend != nil {
				s.AdminsOnlySend = *req.AdminsOnlySend
			}
			if req.AdminsOnlyEditInfo != nil {
				s.AdminsOnlyEditInfo = *req.AdminsOnlyEditInfo
			}
			if req.DisappearAfterS != nil {
				s.DisappearAfter = time.Duration(*req.DisappearAfterS) * time.Second
			}
		})
	})
}

func (a *api) groupLink(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		On       *bool `json:"on"` // left out: on (a new link)
		Approval bool  `json:"approval"`
	}
	var link string
	g, err := a.changeGroup(r, &req, func(ctx context.Context, id client.GroupID) error {
		var err error
		link, err = a.e.c.GroupLink(ctx, id, req.On == nil || *req.On, req.Approval)
		return err
	})
	if err != nil {
		return nil, err
	}
	return GroupLink{Link: link, Group: g}, nil
}

func (a *api) groupApprove(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Approve *bool `json:"approve"`
	}
	return a.changeGroup(r, &req, func(ctx context.Context, id client.GroupID) error {
		if req.Approve == nil {
			return badRequest(`say {"approve": true} to let them in, or false to turn them down`)
		}
		return a.e.c.GroupApprove(ctx, id, pathUser(r), *req.Approve)
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (a *api) register(w http.ResponseWriter, r *http.Request) (any, error) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if err := a.e.register(r.Context(), req.Name); err != nil {
		return nil, err
	}
	return a.e.status(r.Context())
}

func (a *api) openApp(w http.ResponseWriter, r *http.Request) (any, error) {
	url, err := a.e.AppURL()
	if err != nil {
		return nil, err
	}
	return map[string]string{"url": url}, nil
}

func (a *api) file(w http.ResponseWriter, r *http.Request) {
	seq, err := pathSeq(r)
	if err != nil {
		writeError(w, err)
		return
	}
	f, err := a.e.c.OpenAttachment(r.Context(), seq)
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	ct := f.MIME
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	disp := "inline"
	if r.URL.Query().Get("download") != "" {
		disp = "attachment"
	}
	w.Header().Set("Content-Disposition", mime.FormatMediaType(disp, map[string]string{"filename": f.Name}))
	// The file came from another user: never let the browser run it as a
	// page of this origin.
	w.Header().Set("Content-Security-Policy", "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'")
	http.ServeContent(w, r, "", f.ModTime, f)
}

func (a *api) thumbnail(w http.ResponseWriter, r *http.Request) {
	seq, err := pathSeq(r)
	if err != nil {
		writeError(w, err)
		return
	}
	b, err := a.e.c.Thumbnail(r.Context(), seq)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Write(b)
}

// groupAvatar serves a group's picture, fetched from the server the first
// time.
func (a *api) groupAvatar(w http.ResponseWriter, r *http.Request) {
	id, err := pathGroup(r)
	if err != nil {
		writeError(w, err)
		return
	}
	img, ct, err := a.e.c.GroupAvatar(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Another user chose it: never a page of this origin.
	w.Header().Set("Content-Security-Policy", "sandbox; default-src 'none'")
	w.Header().Set("Cache-Control", "private, no-cache")
	w.Write(img)
}

// groupSetAvatar sets a group's picture from the request's body (an image,
// or, from the magpie command, {"path": …}), or removes it (DELETE).
func (a *api) groupSetAvatar(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := pathGroup(r)
	if err != nil {
		return nil, err
	}
	var img io.Reader
	if r.Method == http.MethodPut {
		body, _, closeFn, err := a.fileBody(w, r, client.MaxAvatarBody)
		if err != nil {
			return nil, err
		}
		defer closeFn()
		img = body
	}
	if err := a.e.c.GroupSetAvatar(r.Context(), id, img); err != nil {
		return nil, err
	}
	return a.groupNow(r.Context(), id)
}
