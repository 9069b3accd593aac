package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/username"
)

// Remote is a Go client of an engine's local API, over its Unix socket.
type Remote struct {
	hc *http.Client
}

// ErrNoEngine means no engine answers on the home's socket.
var ErrNoEngine = errors.New("no Magpie engine is running for this home")

// Dial connects to the engine running for home.
func Dial(ctx context.Context, home string) (*Remote, error) {
	path, err := SocketPath(home)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	r := &Remote{hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns: 4,
	}}}
	if _, err := r.Status(ctx); err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			return r, nil // it answers
		}
		return nil, fmt.Errorf("%w: %w", ErrNoEngine, err)
	}
	return r, nil
}

// Close releases idle connections.
func (r *Remote) Close() { r.hc.CloseIdleConnections() }

// do sends a request and decodes the JSON answer into out (if not nil).
func (r *Remote) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	ct := ""
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd, ct = bytes.NewReader(b), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://engine"+path, rd)
	if err != nil {
		return err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("the Magpie engine stopped answering: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		var eb errorBody
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(&eb); err != nil || eb.Error.Code == "" {
			return &APIError{Status: resp.StatusCode, Code: CodeInternal, Message: fmt.Sprintf("the engine answered %s", resp.Status)}
		}
		return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("the engine's answer: %w", err)
	}
	return nil
}

// Status reports the engine's state and account.
func (r *Remote) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, r.do(ctx, http.MethodGet, "/api/v1/status", nil, &st)
}

// Register creates the account and starts the engine's connection.
func (r *Remote) Register(ctx context.Context, name string) (Status, error) {
	var st Status
	return st, r.do(ctx, http.MethodPost, "/api/v1/register", map[string]string{"name": name}, &st)
}

// Sync waits until the engine is up to date (or offline).
func (r *Remote) Sync(ctx context.Context) (Status, error) {
	var st Status
	return st, r.do(ctx, http.MethodPost, "/api/v1/sync", nil, &st)
}

// Send queues a text.
func (r *Remote) Send(ctx context.Context, req SendRequest) (Message, error) {
	var m Message
	return m, r.do(ctx, http.MethodPost, "/api/v1/messages", req, &m)
}

// SendFile queues the file at path (absolute) for to.
func (r *Remote) SendFile(ctx context.Context, to, path, caption string) (Message, error) {
	var m Message
	q := url.Values{"to": {to}, "caption": {caption}}
	return m, r.do(ctx, http.MethodPost, "/api/v1/files?"+q.Encode(), FileRequest{Path: path}, &m)
}

// Message returns message seq; with wait > 0 it waits up to wait for the
// message to leave the outbox.
func (r *Remote) Message(ctx context.Context, seq uint64, wait time.Duration) (Message, error) {
	var m Message
	p := "/api/v1/messages/" + strconv.FormatUint(seq, 10)
	if wait > 0 {
		p += "?wait=sent&timeout=" + wait.String()
	}
	return m, r.do(ctx, http.MethodGet, p, nil, &m)
}

// Cancel removes a queued message.
func (r *Remote) Cancel(ctx context.Context, seq uint64) error {
	return r.do(ctx, http.MethodDelete, "/api/v1/messages/"+strconv.FormatUint(seq, 10), nil, nil)
}

// Outbox lists the queued messages.
func (r *Remote) Outbox(ctx context.Context) ([]Message, error) {
	var out struct {
		Messages []Message `json:"messages"`
	}
	return out.Messages, r.do(ctx, http.MethodGet, "/api/v1/outbox", nil, &out)
}

// Conversations lists the conversations, most recent first.
func (r *Remote) Conversations(ctx context.Context) ([]Conversation, error) {
	var out struct {
		Conversations []Conversation `json:"conversations"`
	}
	return out.Conversations, r.do(ctx, http.MethodGet, "/api/v1/conversations", nil, &out)
}

// History returns a page of the conversation with peer.
func (r *Remote) History(ctx context.Context, peer string, before uint64, limit int, search string) ([]Message, bool, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if before != 0 {
		q.Set("before", strconv.FormatUint(before, 10))
	}
	if search != "" {
		q.Set("q", search)
	}
	var out struct {
		Messages []Message `json:"messages"`
		More     bool      `json:"more"`
	}
	err := r.do(ctx, http.MethodGet, "/api/v1/conversations/"+url.PathEscape(peer)+"/messages?"+q.Encode(), nil, &out)
	return out.Messages, out.More, err
}

// MarkRead marks the conversation with peer read.
func (r *Remote) MarkRead(ctx context.Context, peer string) error {
	return r.do(ctx, http.MethodPost, "/api/v1/conversations/"+url.PathEscape(peer)+"/read", nil, nil)
}

// Typing sends a typing indicator.
func (r *Remote) Typing(ctx context.Context, peer string, typing bool) error {
	return r.do(ctx, http.MethodPost, "/api/v1/conversations/"+url.PathEscape(peer)+"/typing", map[string]bool{"typing": typing}, nil)
}

// Contact asks the server about a user.
func (r *Remote) Contact(ctx context.Context, name string) (Contact, error) {
	var c Contact
	return c, r.do(ctx, http.MethodGet, "/api/v1/contacts/"+url.PathEscape(name), nil, &c)
}

// Safety returns the safety number with name (and records it shown).
func (r *Remote) Safety(ctx context.Context, name string) (Safety, error) {
	var s Safety
	return s, r.do(ctx, http.MethodGet, "/api/v1/contacts/"+url.PathEscape(name)+"/safety", nil, &s)
}

// Verify marks name verified.
func (r *Remote) Verify(ctx context.Context, name string, v Verify) error {
	return r.do(ctx, http.MethodPost, "/api/v1/contacts/"+url.PathEscape(name)+"/verify", v, nil)
}

// Settings reads the settings; with set, changes them first.
func (r *Remote) Settings(ctx context.Context, set *Settings) (Settings, error) {
	var s Settings
	if set != nil {
		return s, r.do(ctx, http.MethodPut, "/api/v1/settings", set, &s)
	}
	return s, r.do(ctx, http.MethodGet, "/api/v1/settings", nil, &s)
}

// Endpoints lists the endpoints in the order the engine tries them.
func (r *Remote) Endpoints(ctx context.Context) ([]Endpoint, error) {
	var out struct {
		Endpoints []Endpoint `json:"endpoints"`
	}
	return out.Endpoints, r.do(ctx, http.MethodGet, "/api/v1/endpoints", nil, &out)
}

// AddRelay adds a relay link.
func (r *Remote) AddRelay(ctx context.Context, link string) (Endpoint, error) {
	var e Endpoint
	return e, r.do(ctx, http.MethodPost, "/api/v1/relays", map[string]string{"link": link}, &e)
}

// Probe tests every endpoint the client may dial and returns the results
// ranked; with reorder, the client then dials in that order.
func (r *Remote) Probe(ctx context.Context, timeout time.Duration, reorder bool) ([]ProbeResult, error) {
	var out struct {
		Results []ProbeResult `json:"results"`
	}
	return out.Results, r.do(ctx, http.MethodPost, "/api/v1/probe", map[string]any{"timeout_ms": timeout.Milliseconds(), "reorder": reorder}, &out)
}

// Groups lists the groups this device knows (those it left too), by
// name.
func (r *Remote) Groups(ctx context.Context) ([]Group, error) {
	var out struct {
		Groups []Group `json:"groups"`
	}
	return out.Groups, r.do(ctx, http.MethodGet, "/api/v1/groups", nil, &out)
}

// CreateGroup creates a group with this account as its owner.
func (r *Remote) CreateGroup(ctx context.Context, name string, members []string) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPost, "/api/v1/groups", map[string]any{"name": name, "members": members}, &g)
}

// groupPath is the URL of group id (hex, or "group:" and hex), with rest
// after it.
func groupPath(id, rest string) string {
	return "/api/v1/groups/" + url.PathEscape(id) + rest
}

// Group returns group id (hex, or its conversation's peer).
func (r *Remote) Group(ctx context.Context, id string) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodGet, groupPath(id, ""), nil, &g)
}

// GroupAdd adds users to a group and returns the group.
func (r *Remote) GroupAdd(ctx context.Context, id string, users ...string) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPost, groupPath(id, "/members"), map[string][]string{"users": users}, &g)
}

// GroupRemove removes a member.
func (r *Remote) GroupRemove(ctx context.Context, id, user string) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodDelete, groupPath(id, "/members/"+url.PathEscape(user)), nil, &g)
}

// GroupSetRole gives a member a role: client.RoleAdmin, RoleMember, or
// RoleOwner (hands the group over).
func (r *Remote) GroupSetRole(ctx context.Context, id, user, role string) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPut, groupPath(id, "/members/"+url.PathEscape(user)), map[string]string{"role": role}, &g)
}

// GroupLeave leaves a group.
func (r *Remote) GroupLeave(ctx context.Context, id string) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPost, groupPath(id, "/leave"), nil, &g)
}

// GroupSetInfo renames a group or changes its description.
func (r *Remote) GroupSetInfo(ctx context.Context, id string, info GroupInfo) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPut, groupPath(id, "/info"), info, &g)
}

// GroupSetSettings changes a group's settings.
func (r *Remote) GroupSetSettings(ctx context.Context, id string, s GroupSettingsChange) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPut, groupPath(id, "/settings"), s, &g)
}

// GroupLink makes a new join link for a group (an earlier one stops
// working), or with on false turns links off.
func (r *Remote) GroupLink(ctx context.Context, id string, on, approval bool) (GroupLink, error) {
	var l GroupLink
	return l, r.do(ctx, http.MethodPost, groupPath(id, "/link"), map[string]bool{"on": on, "approval": approval}, &l)
}

// GroupSetAvatar sets a group's picture to the image at path, or with path
// "" removes it.
func (r *Remote) GroupSetAvatar(ctx context.Context, id, path string) (Group, error) {
	var g Group
	if path == "" {
		return g, r.do(ctx, http.MethodDelete, groupPath(id, "/avatar"), nil, &g)
	}
	return g, r.do(ctx, http.MethodPut, groupPath(id, "/avatar"), FileRequest{Path: path}, &g)
}

// JoinGroup joins a group with its link (or asks to, when an admin
// approves joins).
func (r *Remote) JoinGroup(ctx context.Context, link string) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPost, "/api/v1/groups/join", map[string]string{"link": link}, &g)
}

// GroupApprove lets user in, or with approve false turns them down.
func (r *Remote) GroupApprove(ctx context.Context, id, user string, approve bool) (Group, error) {
	var g Group
	return g, r.do(ctx, http.MethodPost, groupPath(id, "/requests/"+url.PathEscape(user)), map[string]bool{"approve": approve}, &g)
}

// FindGroup finds a group by what a person typed: its id (hex), its
// conversation's peer ("group:" and the id), or its name when exactly one
// known group has it (compared exactly, else ignoring case).
func (r *Remote) FindGroup(ctx context.Context, s string) (Group, error) {
	if _, err := client.ParseGroupID(s); err == nil {
		return r.Group(ctx, s)
	}
	gs, err := r.Groups(ctx)
	if err != nil {
		return Group{}, err
	}
	return groupNamed(gs, s)
}

// groupNamed is the one group of gs named name: compared exactly, else
// ignoring case.
func groupNamed(gs []Group, name string) (Group, error) {
	var found []Group
	for _, eq := range []func(a, b string) bool{func(a, b string) bool { return a == b }, strings.EqualFold} {
		for _, g := range gs {
			if eq(g.Name, name) {
				found = append(found, g)
			}
		}
		if len(found) > 0 {
			break
		}
	}
	switch len(found) {
	case 0:
		return Group{}, &APIError{Status: http.StatusNotFound, Code: CodeUnknownGroup,
			Message: fmt.Sprintf("no group named %q here (nor is it a group's id)", name)}
	case 1:
		return found[0], nil
	}
	ids := make([]string, 0, len(found))
	for _, g := range found {
		ids = append(ids, g.ID)
	}
	return Group{}, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest,
		Message: fmt.Sprintf("%d groups are named %q; name one by its id: %s", len(found), name, strings.Join(ids, ", "))}
}

// FindPeer finds a conversation by what a person typed: a group (as
// FindGroup does), or else a user. A name that is both a group's and that
// of a user this account talks to is refused as ambiguous.
func (r *Remote) FindPeer(ctx context.Context, s string) (string, error) {
	if _, err := client.ParseGroupID(s); err == nil {
		g, err := r.Group(ctx, s)
		return g.Peer, err
	}
	gs, err := r.Groups(ctx)
	if err != nil {
		return "", err
	}
	g, err := groupNamed(gs, s)
	if CodeOf(err) == CodeUnknownGroup {
		return s, nil // a user
	}
	if err != nil {
		return "", err
	}
	if u, err := username.Normalize(s); err == nil {
		convs, err := r.Conversations(ctx)
		if err != nil {
			return "", err
		}
		for _, c := range convs {
			if c.Peer == u {
				return "", &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest,
					Message: fmt.Sprintf("%q is a group's name and a user's: name the group by its id (%s)", s, g.ID)}
			}
		}
	}
	return g.Peer, nil
}

// App starts the web app (if needed) and returns a login URL.
func (r *Remote) App(ctx context.Context) (string, error) {
	var out struct {
		URL string `json:"url"`
	}
	return out.URL, r.do(ctx, http.MethodPost, "/api/v1/app", nil, &out)
}

// Event is one event of the stream (docs/LOCAL_API.md).
type Event struct {
	Name string
	Data json.RawMessage
}

// Events streams the engine's events until ctx ends or the engine stops;
// the channel is closed then.
func (r *Remote) Events(ctx context.Context) (<-chan Event, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://engine/api/v1/events", nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the Magpie engine stopped answering: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("the engine's event stream answered %s", resp.Status)
	}
	ch := make(chan Event, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var ev Event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Name != "" {
					select {
					case ch <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = Event{}
			case strings.HasPrefix(line, "event: "):
				ev.Name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.Data = json.RawMessage(line[len("data: "):])
			}
		}
	}()
	return ch, nil
}

// Session is a connection to the engine of a home, which this process runs
// when no other did.
type Session struct {
	*Remote
	// Engine is the engine this process started, or nil if another
	// process runs it.
	Engine *Engine
}

// Close stops the engine this process started, if any.
func (s *Session) Close() error {
	s.Remote.Close()
	if s.Engine != nil {
		return s.Engine.Close()
	}
	return nil
}

// ErrEngineBusy: another process holds the home but does not answer.
var ErrEngineBusy = errors.New("another magpie process holds this home but does not answer (is it asking for a passphrase?)")

// Connect reaches the engine of opts.Client.Home: the one running, or a new
// one in this process if none is. patience bounds the wait for an engine
// that holds the home but is still starting.
func Connect(ctx context.Context, opts Options, patience time.Duration) (*Session, error) {
	deadline := time.Now().Add(patience)
	for {
		if r, err := Dial(ctx, opts.Client.Home); err == nil {
			return &Session{Remote: r}, nil
		}
		e, err := Start(ctx, opts)
		if err == nil {
			r, err := Dial(ctx, opts.Client.Home)
			if err != nil {
				e.Close()
				return nil, err
			}
			return &Session{Remote: r, Engine: e}, nil
		}
		if !errors.Is(err, client.ErrHomeInUse) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, ErrEngineBusy
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
