package engine_test

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// Groups through the local API, each engine on a real server: every group
// endpoint, a group's conversation (send, history, read, typing, events),
// and the codes of what is refused.

// waitGroup polls s's copy of group id until cond holds.
func waitGroup(t *testing.T, s *engine.Session, id, what string, cond func(engine.Group) bool) engine.Group {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		g, err := s.Group(testCtx(t), id)
		if err == nil && cond(g) {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: last saw %+v, %v", what, g, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func memberList(g engine.Group) []string {
	var out []string
	for _, m := range g.Members {
		out = append(out, m.User+":"+m.Role)
	}
	return out
}

// wantCode checks that err is an API error with code and HTTP status.
func wantCode(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	var ae *engine.APIError
	if !errors.As(err, &ae) || ae.Code != code || ae.Status != status {
		t.Errorf("%s: error %v (%#v), want %s (%d)", what, err, ae, code, status)
	}
}

func TestAPIGroupConversation(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice, bob, carol := user(t, s, "alice"), user(t, s, "bob"), user(t, s, "carol")
	aev, bev, cev := events(t, alice), events(t, bob), events(t, carol)
	online(t, aev)
	online(t, bev)
	online(t, cev)
	ctx := testCtx(t)

	g, err := alice.CreateGroup(ctx, "Harbour", []string{"Bob", "carol", "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.ID) != 32 || g.Peer != "group:"+g.ID || g.Name != "Harbour" || g.Role != "owner" || !g.CanSend ||
		!slices.Equal(memberList(g), []string{"alice:owner", "bob:member", "carol:member"}) || g.Requests == nil {
		t.Fatalf("created: %+v", g)
	}
	// The members learn of it from the server, with a group event.
	waitFor(t, bev, "group", func(p engine.PeerEvent) bool { return p.Peer == g.Peer })
	gs, err := bob.Groups(ctx)
	if err != nil || len(gs) != 1 || gs[0].ID != g.ID || gs[0].Role != "member" || gs[0].Name != "Harbour" {
		t.Fatalf("bob's groups: %+v, %v", gs, err)
	}
	// By id, by peer, in capitals, and by name whatever its case.
	for _, q := range []string{g.ID, g.Peer, strings.ToUpper(g.ID), "Harbour", "harbour"} {
		if f, err := bob.FindGroup(ctx, q); err != nil || f.ID != g.ID {
			t.Errorf("FindGroup(%q) = %+v, %v", q, f, err)
		}
		if p, err := bob.FindPeer(ctx, q); err != nil || p != g.Peer {
			t.Errorf("FindPeer(%q) = %q, %v", q, p, err)
		}
	}
	if p, err := bob.FindPeer(ctx, "alice"); err != nil || p != "alice" {
		t.Errorf("FindPeer(alice) = %q, %v", p, err)
	}
	wantCode(t, "FindGroup of a name nobody has", second(bob.FindGroup(ctx, "Lighthouse")), engine.CodeUnknownGroup, http.StatusNotFound)

	// A message to the group reaches both members, named by its sender.
	m, err := alice.Send(ctx, engine.SendRequest{To: g.Peer, Text: "hello, group"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Peer != g.Peer || m.Sender != "alice" || !m.Outgoing || m.Notice {
		t.Fatalf("alice's message: %+v", m)
	}
	for _, ch := range []<-chan engine.Event{bev, cev} {
		got := waitFor(t, ch, "message", func(x engine.Message) bool { return x.Peer == g.Peer && !x.Notice })
		if got.Sender != "alice" || got.Text != "hello, group" || got.ID != m.ID || !got.Unread || got.Outgoing {
			t.Fatalf("received: %+v; sent %+v", got, m)
		}
	}
	// Receipts per member: delivered to both, then read by bob.
	waitFor(t, aev, "update", func(u engine.Message) bool { return u.Seq == m.Seq && u.State == "delivered" })
	got, err := alice.Message(ctx, m.Seq, 0)
	slices.Sort(got.DeliveredTo)
	if err != nil || got.Recipients != 2 || !slices.Equal(got.DeliveredTo, []string{"bob", "carol"}) || len(got.ReadBy) != 0 {
		t.Fatalf("after delivery: %+v, %v", got, err)
	}
	if err := bob.MarkRead(ctx, "group:"+strings.ToUpper(g.ID)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, aev, "update", func(u engine.Message) bool { return u.Seq == m.Seq && slices.Equal(u.ReadBy, []string{"bob"}) })

	// Histories: the notice first (by nobody's hand but attributed), then
	// the message with its sender.
	h, more, err := carol.History(ctx, g.Peer, 0, 10, "")
	if err != nil || more || len(h) != 2 {
		t.Fatalf("carol's history: %+v, %v, %v", h, more, err)
	}
	if !h[0].Notice || h[0].Text != `alice created the group "Harbour"` || h[0].Sender != "alice" || h[0].Unread {
		t.Errorf("the notice: %+v", h[0])
	}
	if h[1].Notice || h[1].Sender != "alice" || h[1].Text != "hello, group" {
		t.Errorf("the message: %+v", h[1])
	}
	if found, _, err := carol.History(ctx, g.Peer, 0, 10, "HELLO"); err != nil || len(found) != 1 {
		t.Errorf("search in the group: %+v, %v", found, err)
	}
	convs, err := carol.Conversations(ctx)
	if err != nil || len(convs) != 1 || convs[0].Group == nil || *convs[0].Group != g.ID || convs[0].Name != "Harbour" ||
		convs[0].Peer != g.Peer || convs[0].Unread != 1 {
		t.Fatalf("carol's conversations: %+v, %v", convs, err)
	}
	// A 1:1 conversation has no group.
	if _, err := alice.Send(ctx, engine.SendRequest{To: "bob", Text: "just us"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bev, "message", func(x engine.Message) bool { return x.Peer == "alice" })
	bconvs, err := bob.Conversations(ctx)
	if err != nil || len(bconvs) != 2 {
		t.Fatalf("bob's conversations: %+v, %v", bconvs, err)
	}
	for _, c := range bconvs {
		if (c.Peer == "alice") != (c.Group == nil) {
			t.Errorf("conversation %+v", c)
		}
	}

	// Typing, once bob has sent (members then hold his sender key), names
	// him.
	if _, err := bob.Send(ctx, engine.SendRequest{To: g.Peer, Text: "hi from bob"}); err != nil {
		t.Fatal(err)
	}
	if x := waitFor(t, cev, "message", func(x engine.Message) bool { return x.Text == "hi from bob" }); x.Sender != "bob" {
		t.Fatalf("bob's message at carol's: %+v", x)
	}
	if err := bob.Typing(ctx, g.Peer, true); err != nil {
		t.Fatal(err)
	}
	ty := waitFor(t, cev, "typing", func(p engine.PeerEvent) bool { return p.Peer == g.Peer })
	if ty.Sender != "bob" || ty.Typing == nil || !*ty.Typing {
		t.Errorf("typing event: %+v", ty)
	}
	// In a user's conversation, the sender is the user.
	if err := alice.Typing(ctx, "bob", true); err != nil {
		t.Fatal(err)
	}
	if ty := waitFor(t, bev, "typing", func(p engine.PeerEvent) bool { return p.Peer == "alice" }); ty.Sender != "alice" {
		t.Errorf("1:1 typing event: %+v", ty)
	}

	// A group this device does not know.
	unknown := "group:" + strings.Repeat("ab", 16)
	for what, err := range map[string]error{
		"history":        third(alice.History(ctx, unknown, 0, 10, "")),
		"read":           alice.MarkRead(ctx, unknown),
		"typing":         alice.Typing(ctx, unknown, true),
		"send":           second(alice.Send(ctx, engine.SendRequest{To: unknown, Text: "anyone?"})),
		"show":           second(alice.Group(ctx, unknown)),
		"show (not hex)": second(alice.Group(ctx, "zz")),
		"add":            second(alice.GroupAdd(ctx, unknown, "bob")),
		"leave":          second(alice.GroupLeave(ctx, unknown)),
	} {
		wantCode(t, what+" of an unknown group", err, engine.CodeUnknownGroup, http.StatusNotFound)
	}
}

func TestAPIGroupMembership(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice, bob, carol, dave := user(t, s, "alice"), user(t, s, "bob"), user(t, s, "carol"), user(t, s, "dave")
	for _, u := range []*engine.Session{alice, bob, carol, dave} {
		online(t, events(t, u))
	}
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Board", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	waitGroup(t, bob, g.ID, "bob's copy", func(engine.Group) bool { return true })

	// What needs a role is refused to a member (403 forbidden).
	wantCode(t, "a member removing someone", second(bob.GroupRemove(ctx, g.ID, "carol")), engine.CodeForbidden, http.StatusForbidden)
	wantCode(t, "a member changing settings", second(bob.GroupSetSettings(ctx, g.ID, engine.GroupSettingsChange{AdminsOnlySend: ptr(true)})), engine.CodeForbidden, http.StatusForbidden)
	wantCode(t, "a member making a link", second(bob.GroupLink(ctx, g.ID, true, false)), engine.CodeForbidden, http.StatusForbidden)

	// Bad input (400 bad_request).
	wantCode(t, "a role that is none", second(alice.GroupSetRole(ctx, g.ID, "bob", "boss")), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "an over-long name", second(alice.CreateGroup(ctx, strings.Repeat("n", 65), nil)), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "renaming over-long", second(alice.GroupSetInfo(ctx, g.ID, engine.GroupInfo{Name: ptr(strings.Repeat("n", 65))})), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "no info", second(alice.GroupSetInfo(ctx, g.ID, engine.GroupInfo{})), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "no settings", second(alice.GroupSetSettings(ctx, g.ID, engine.GroupSettingsChange{})), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "negative disappear", second(alice.GroupSetSettings(ctx, g.ID, engine.GroupSettingsChange{DisappearAfterS: ptr(int64(-1))})), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "adding a member again", second(alice.GroupAdd(ctx, g.ID, "bob")), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "adding nobody", second(alice.GroupAdd(ctx, g.ID)), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "adding an unknown user", second(alice.GroupAdd(ctx, g.ID, "nobody_here")), engine.CodeUnknownUser, http.StatusNotFound)
	wantCode(t, "a group with an unknown user", second(alice.CreateGroup(ctx, "Ghosts", []string{"nobody_here"})), engine.CodeUnknownUser, http.StatusNotFound)

	// Roles.
	g, err = alice.GroupSetRole(ctx, g.ID, "bob", "admin")
	if err != nil || !slices.Equal(memberList(g), []string{"alice:owner", "bob:admin", "carol:member"}) {
		t.Fatalf("after promoting bob: %v, %v", memberList(g), err)
	}
	waitGroup(t, bob, g.ID, "bob an admin", func(g engine.Group) bool { return g.Role == "admin" })

	// Info: a field left out keeps its value.
	g, err = alice.GroupSetInfo(ctx, g.ID, engine.GroupInfo{Name: ptr("Board of trustees")})
	if err != nil || g.Name != "Board of trustees" || g.Description != "" {
		t.Fatalf("renamed: %+v, %v", g, err)
	}
	g, err = bob.GroupSetInfo(ctx, g.ID, engine.GroupInfo{Description: ptr("Meets on Mondays")})
	if err != nil || g.Name != "Board of trustees" || g.Description != "Meets on Mondays" {
		t.Fatalf("described: %+v, %v", g, err)
	}

	// Settings: only admins send; messages disappear after an hour.
	g, err = alice.GroupSetSettings(ctx, g.ID, engine.GroupSettingsChange{AdminsOnlySend: ptr(true), DisappearAfterS: ptr(int64(3600))})
	if err != nil || !g.Settings.AdminsOnlySend || g.Settings.AdminsOnlyEditInfo || g.Settings.DisappearAfterS != 3600 {
		t.Fatalf("settings: %+v, %v", g.Settings, err)
	}
	cg := waitGroup(t, carol, g.ID, "carol sees admins-only", func(g engine.Group) bool { return g.Settings.AdminsOnlySend })
	if cg.CanSend || cg.Name != "Board of trustees" {
		t.Errorf("carol's copy: %+v", cg)
	}
	wantCode(t, "a member sending when only admins send", second(carol.Send(ctx, engine.SendRequest{To: g.Peer, Text: "may I?"})), engine.CodeForbidden, http.StatusForbidden)
	g, err = alice.GroupSetSettings(ctx, g.ID, engine.GroupSettingsChange{AdminsOnlySend: ptr(false)})
	if err != nil || g.Settings.AdminsOnlySend || g.Settings.DisappearAfterS != 3600 {
		t.Fatalf("settings back: %+v, %v", g.Settings, err)
	}

	// An admin adds and removes.
	g, err = bob.GroupAdd(ctx, g.ID, "dave")
	if err != nil || !slices.Contains(memberList(g), "dave:member") {
		t.Fatalf("after adding dave: %v, %v", memberList(g), err)
	}
	waitGroup(t, dave, g.ID, "dave added", func(g engine.Group) bool { return g.Role == "member" })
	g, err = bob.GroupRemove(ctx, g.ID, "carol")
	if err != nil || slices.Contains(memberList(g), "carol:member") {
		t.Fatalf("after removing carol: %v, %v", memberList(g), err)
	}
	// carol keeps the group (and its history), no longer in it.
	cg = waitGroup(t, carol, g.ID, "carol removed", func(g engine.Group) bool { return g.Role == "" })
	if cg.CanSend {
		t.Errorf("carol's copy after removal: %+v", cg)
	}
	wantCode(t, "a removed member sending", second(carol.Send(ctx, engine.SendRequest{To: g.Peer, Text: "hello?"})), engine.CodeNotMember, http.StatusForbidden)
	wantCode(t, "a removed member leaving", second(carol.GroupLeave(ctx, g.ID)), engine.CodeNotMember, http.StatusForbidden)
	if h, _, err := carol.History(ctx, g.Peer, 0, 50, ""); err != nil || len(h) == 0 || h[len(h)-1].Text != "bob removed you" || !h[len(h)-1].Notice {
		t.Errorf("carol's history ends %+v, %v", h, err)
	}

	// dave leaves.
	dg, err := dave.GroupLeave(ctx, g.ID)
	if err != nil || dg.Role != "" || dg.CanSend {
		t.Fatalf("dave after leaving: %+v, %v", dg, err)
	}
	waitGroup(t, alice, g.ID, "dave gone", func(g engine.Group) bool {
		return slices.Equal(memberList(g), []string{"alice:owner", "bob:admin"})
	})

	// The owner hands the group over, and becomes an admin.
	g, err = alice.GroupSetRole(ctx, g.ID, "bob", "owner")
	if err != nil || !slices.Equal(memberList(g), []string{"bob:owner", "alice:admin"}) || g.Role != "admin" {
		t.Fatalf("after handing over: %v (%s), %v", memberList(g), g.Role, err)
	}
	h, _, err := alice.History(ctx, g.Peer, 0, 50, "")
	if err != nil {
		t.Fatal(err)
	}
	var notices []string
	for _, m := range h {
		if m.Notice {
			notices = append(notices, m.Sender+": "+m.Text)
		}
	}
	for _, want := range []string{"alice: you made bob an admin", `alice: you renamed the group "Board of trustees"`,
		"bob: bob changed the group's description", "bob: bob added dave", "bob: bob removed carol", "dave: dave left",
		"alice: you made bob the owner"} {
		if !slices.Contains(notices, want) {
			t.Errorf("alice's notices lack %q: %q", want, notices)
		}
	}
}

func TestAPIGroupLinks(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice, bob, carol, dave := user(t, s, "alice"), user(t, s, "bob"), user(t, s, "carol"), user(t, s, "dave")
	for _, u := range []*engine.Session{alice, bob, carol, dave} {
		online(t, events(t, u))
	}
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Open house", nil)
	if err != nil || !slices.Equal(memberList(g), []string{"alice:owner"}) || g.LinkOn {
		t.Fatalf("created: %+v, %v", g, err)
	}

	// A link without approval: whoever has it is in.
	l, err := alice.GroupLink(ctx, g.ID, true, false)
	if err != nil || !strings.HasPrefix(l.Link, "magpie-group:") || !l.Group.LinkOn || l.Group.LinkApproval || l.Group.Link != l.Link {
		t.Fatalf("link: %+v, %v", l, err)
	}
	bg, err := bob.JoinGroup(ctx, l.Link)
	if err != nil || bg.ID != g.ID || bg.Role != "member" || bg.Name != "Open house" || bg.Link != "" {
		t.Fatalf("bob joined: %+v, %v", bg, err)
	}
	wantCode(t, "a link mistyped", second(carol.JoinGroup(ctx, "magpie-group:not-a-link")), engine.CodeBadRequest, http.StatusBadRequest)
	wantCode(t, "not a link at all", second(carol.JoinGroup(ctx, "https://example.com")), engine.CodeBadRequest, http.StatusBadRequest)

	// With approval; the first link stops working.
	l2, err := alice.GroupLink(ctx, g.ID, true, true)
	if err != nil || l2.Link == l.Link || !l2.Group.LinkApproval {
		t.Fatalf("approval link: %+v, %v", l2, err)
	}
	if _, err := carol.JoinGroup(ctx, l.Link); err == nil {
		t.Fatal("joined with a link that was replaced")
	} else if c := code(err); c == "" || c == engine.CodeInternal {
		t.Errorf("joining with an old link: %v (code %q)", err, c)
	}
	cg, err := carol.JoinGroup(ctx, l2.Link)
	if err != nil || cg.Role != "" || !slices.Equal(cg.Requests, []string{"carol"}) {
		t.Fatalf("carol's request: %+v, %v", cg, err)
	}
	waitGroup(t, bob, g.ID, "bob sees carol's request", func(g engine.Group) bool { return slices.Contains(g.Requests, "carol") })
	wantCode(t, "a member approving", second(bob.GroupApprove(ctx, g.ID, "carol", true)), engine.CodeForbidden, http.StatusForbidden)
	waitGroup(t, alice, g.ID, "alice sees carol's request", func(g engine.Group) bool { return slices.Contains(g.Requests, "carol") })
	ag, err := alice.GroupApprove(ctx, g.ID, "carol", true)
	if err != nil || len(ag.Requests) != 0 || !slices.Contains(memberList(ag), "carol:member") {
		t.Fatalf("after approving carol: %+v, %v", ag, err)
	}
	waitGroup(t, carol, g.ID, "carol let in", func(g engine.Group) bool { return g.Role == "member" && g.CanSend })

	// Turned down.
	if dg, err := dave.JoinGroup(ctx, l2.Link); err != nil || dg.Role != "" {
		t.Fatalf("dave's request: %+v, %v", dg, err)
	}
	waitGroup(t, alice, g.ID, "dave's request", func(g engine.Group) bool { return slices.Contains(g.Requests, "dave") })
	ag, err = alice.GroupApprove(ctx, g.ID, "dave", false)
	if err != nil || len(ag.Requests) != 0 || slices.ContainsFunc(ag.Members, func(m engine.GroupMember) bool { return m.User == "dave" }) {
		t.Fatalf("after turning dave down: %+v, %v", ag, err)
	}
	waitGroup(t, dave, g.ID, "dave turned down", func(g engine.Group) bool { return len(g.Requests) == 0 && g.Role == "" })
	wantCode(t, "approving someone who did not ask", second(alice.GroupApprove(ctx, g.ID, "dave", true)), engine.CodeBadRequest, http.StatusBadRequest)

	// Links off: the last one stops working.
	off, err := alice.GroupLink(ctx, g.ID, false, false)
	if err != nil || off.Link != "" || off.Group.LinkOn || off.Group.Link != "" {
		t.Fatalf("links off: %+v, %v", off, err)
	}
	if _, err := dave.JoinGroup(ctx, l2.Link); err == nil {
		t.Error("joined with a link after links were turned off")
	}
	// Everyone in it, whichever way they came, hears the others.
	if _, err := carol.Send(ctx, engine.SendRequest{To: g.Peer, Text: "thanks for having me"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*engine.Session{alice, bob} {
		deadline := time.Now().Add(eventTimeout)
		for {
			h, _, err := u.History(ctx, g.Peer, 0, 50, "thanks for having me")
			if err == nil && len(h) == 1 && h[0].Sender == "carol" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("carol's message did not arrive: %+v, %v", h, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func third[T, U any](_ T, _ U, err error) error { return err }

// A group's picture through the API: set from a file by the magpie
// command, served to a member's app as the image with a sandbox policy,
// and removed; a group without one is a 404.
func TestAPIGroupAvatar(t *testing.T) {
	s := servertest.Start(t, server.Config{Blobs: servertest.Blobs(t, blobstore.Options{})})
	alice, bob := user(t, s, "alice"), user(t, s, "bob")
	bev := events(t, bob)
	online(t, bev)
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Pictured", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	var img bytes.Buffer
	if err := png.Encode(&img, image.NewRGBA(image.Rect(0, 0, 16, 16))); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "p.png")
	if err := os.WriteFile(path, img.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if g, err = alice.GroupSetAvatar(ctx, g.ID, path); err != nil || !g.HasAvatar {
		t.Fatalf("setting the picture: %+v, %v", g, err)
	}
	waitGroup(t, bob, g.ID, "the picture", func(g engine.Group) bool { return g.HasAvatar })
	url, err := bob.App(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Jar: jar}
	resp, err := hc.Get(url) // the login link sets the session cookie
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	avatar := strings.TrimSuffix(strings.SplitN(url, "?", 2)[0], "/") + "/api/v1/groups/" + g.ID + "/avatar"
	get := func() (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, avatar, nil)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := get()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, img.Bytes()) || resp.Header.Get("Content-Type") != "image/png" ||
		!strings.HasPrefix(resp.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("GET avatar: %d, %d bytes, %v", resp.StatusCode, len(b), resp.Header)
	}
	if g, err = alice.GroupSetAvatar(ctx, g.ID, ""); err != nil || g.HasAvatar {
		t.Fatalf("removing the picture: %+v, %v", g, err)
	}
	waitGroup(t, bob, g.ID, "no picture", func(g engine.Group) bool { return !g.HasAvatar })
	if resp, b := get(); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET avatar of a group without one: %d %s", resp.StatusCode, b)
	}
}
