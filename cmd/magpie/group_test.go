package main

// Groups through the real binary and a real server: the group commands,
// a group's conversation by name (send, history, inbox, listen, typing),
// joining by link with approval, JSON that scripts parse, and the errors
// and exit codes people and scripts see.

import (
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// groupJSON is a group as the group commands print it with --json.
type groupJSON struct {
	ID      string `json:"id"`
	Peer    string `json:"peer"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	Members []struct {
		User string `json:"user"`
		Role string `json:"role"`
	} `json:"members"`
	Requests []string `json:"requests"`
	Settings struct {
		AdminsOnlySend  bool  `json:"admins_only_send"`
		DisappearAfterS int64 `json:"disappear_after_s"`
	} `json:"settings"`
	LinkOn       bool   `json:"link_on"`
	LinkApproval bool   `json:"link_approval"`
	Link         string `json:"link"`
	HasAvatar    bool   `json:"has_avatar"`
}

func (g groupJSON) members() []string {
	var out []string
	for _, m := range g.Members {
		out = append(out, m.User+":"+m.Role)
	}
	return out
}

// groupMessage is a line of history --json in a group.
type groupMessage struct {
	Peer        string   `json:"peer"`
	Text        string   `json:"text"`
	Sender      string   `json:"sender"`
	Notice      bool     `json:"notice"`
	Outgoing    bool     `json:"outgoing"`
	State       string   `json:"state"`
	Recipients  int      `json:"recipients"`
	DeliveredTo []string `json:"delivered_to"`
}

type cliError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Hint    string `json:"hint"`
	} `json:"error"`
}

// groupOut runs a group command with --json and decodes the group it
// prints.
func groupOut(t *testing.T, args ...string) groupJSON {
	t.Helper()
	r := mustRun(t, append(args, "--json")...)
	var g groupJSON
	if err := json.Unmarshal([]byte(r.stdout), &g); err != nil || g.ID == "" {
		t.Fatalf("not a group: %v\n%s", err, r)
	}
	return g
}

// jsonError runs a command that must fail with --json, and checks its
// exit code and error code.
func jsonError(t *testing.T, exit int, code string, args ...string) cliError {
	t.Helper()
	r := run(t, append(args, "--json")...)
	var e cliError
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || r.code != exit || e.Error.Code != code {
		t.Errorf("want exit %d and code %q:\n%s", exit, code, r)
	}
	return e
}

// engineLog is the end of a home's engine log, to see why something did
// not arrive.
func engineLog(home string) string {
	b, _ := os.ReadFile(filepath.Join(home, "engine.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

func mustContain(t *testing.T, r result, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, r)
		}
	}
}

func TestCLIGroups(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice, bob, carol := newUser(t, srv, "alice"), newUser(t, srv, "bob"), newUser(t, srv, "carol")

	g := groupOut(t, "--home", alice, "group", "create", "Harbour", "bob")
	if g.Name != "Harbour" || g.Role != "owner" || g.Peer != "group:"+g.ID || !slices.Equal(g.members(), []string{"alice:owner", "bob:member"}) {
		t.Fatalf("created: %+v", g)
	}

	// Sent by name; each member's history names the sender of each line.
	mustContain(t, mustRun(t, "--home", alice, "send", "Harbour", "hello harbour"), "Sent to Harbour")
	mustContain(t, mustRun(t, "--home", bob, "inbox"), "[Harbour] alice: hello harbour")
	mustRun(t, "--home", bob, "send", "harbour", "hi from bob") // any case
	mustRun(t, "--home", alice, "inbox")
	for _, home := range []string{alice, bob} {
		h := mustRun(t, "--home", home, "history", "Harbour")
		mustContain(t, h, "alice: hello harbour", "bob: hi from bob", `* `)
		if home == alice {
			mustContain(t, h, `* you created the group "Harbour"`)
		}
	}
	// By id too, and as JSON: every line a message of the group.
	hist := decodeLines[groupMessage](t, mustRun(t, "--home", bob, "history", g.ID, "--json").stdout)
	if len(hist) != 3 || !hist[0].Notice || hist[0].Sender != "alice" || hist[1].Sender != "alice" || hist[1].Text != "hello harbour" ||
		hist[2].Sender != "bob" || !hist[2].Outgoing || hist[2].Recipients != 1 {
		t.Fatalf("bob's history --json: %+v", hist)
	}
	for _, m := range hist {
		if m.Peer != g.Peer {
			t.Errorf("a line of another conversation: %+v", m)
		}
	}
	// The conversation list names the group.
	mustContain(t, mustRun(t, "--home", bob, "history"), "Harbour (group)")

	// A member cannot remove anyone: refused, with what to do next.
	mustContain(t, mustRun(t, "--home", alice, "group", "add", "Harbour", "carol"), "Added carol to Harbour (3 members).")
	mustRun(t, "--home", bob, "inbox")
	mustRun(t, "--home", carol, "inbox")
	mustContain(t, mustRun(t, "--home", carol, "group", "list"), "Harbour", "you: member")
	mustContain(t, mustRun(t, "--home", carol, "history", "Harbour"), "* alice added you")
	mustFail(t, []string{"admin", "group show Harbour"}, "--home", bob, "group", "remove", "Harbour", "carol")
	if e := jsonError(t, 1, "forbidden", "--home", bob, "group", "remove", "Harbour", "carol"); !strings.Contains(e.Error.Hint, "group show Harbour") {
		t.Errorf("hint: %+v", e)
	}
	// Promoted, bob can.
	g = groupOut(t, "--home", alice, "group", "role", "Harbour", "bob", "admin")
	if !slices.Equal(g.members(), []string{"alice:owner", "bob:admin", "carol:member"}) {
		t.Fatalf("after promoting bob: %v", g.members())
	}
	mustRun(t, "--home", bob, "inbox")
	mustContain(t, mustRun(t, "--home", bob, "group", "remove", "Harbour", "carol"), "Removed carol from Harbour (2 members).")
	mustRun(t, "--home", carol, "inbox")
	mustContain(t, mustRun(t, "--home", carol, "history", "Harbour"), "* bob removed you")
	mustFail(t, []string{"no longer in", "group show Harbour"}, "--home", carol, "send", "Harbour", "still here?")
	mustContain(t, mustRun(t, "--home", carol, "group", "list"), "Harbour", "(not a member)")

	// Settings and info, changed and shown.
	g = groupOut(t, "--home", alice, "group", "settings", "Harbour", "--disappear", "7d")
	if g.Settings.DisappearAfterS != 7*86400 || g.Settings.AdminsOnlySend {
		t.Errorf("settings: %+v", g.Settings)
	}
	mustContain(t, mustRun(t, "--home", alice, "group", "settings", "Harbour"), "disappear:             7d", "admins-only-send:      off")
	mustContain(t, mustRun(t, "--home", alice, "group", "info", "Harbour", "--description", "Boats and tides"), "description: Boats and tides")
	mustFail(t, []string{"on or off"}, "--home", alice, "group", "settings", "Harbour", "--admins-only-send", "maybe")

	// Back in by link, once an admin approves.
	r := mustRun(t, "--home", alice, "group", "link", "Harbour", "--approval", "--json")
	var l struct {
		Link  string    `json:"link"`
		Group groupJSON `json:"group"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || !strings.HasPrefix(l.Link, "magpie-group:") || !l.Group.LinkApproval {
		t.Fatalf("link --json: %v\n%s", err, r)
	}
	mustContain(t, mustRun(t, "--home", carol, "group", "join", l.Link), "Asked to join Harbour")
	mustRun(t, "--home", alice, "inbox")
	mustContain(t, mustRun(t, "--home", alice, "group", "show", "Harbour"), "asking to join: carol")
	mustFail(t, []string{"not a member"}, "--home", carol, "group", "approve", "Harbour", "carol")
	mustContain(t, mustRun(t, "--home", alice, "group", "approve", "Harbour", "carol"), "Let carol into Harbour (3 members).")
	mustRun(t, "--home", carol, "inbox")
	carols := decodeLines[groupJSON](t, mustRun(t, "--home", carol, "group", "list", "--json").stdout)
	if len(carols) != 1 || carols[0].Role != "member" || carols[0].ID != g.ID {
		t.Fatalf("carol's groups: %+v", carols)
	}

	// listen shows the group's messages with their sender, and typing.
	listen := start(t, nil, "--home", bob, "listen")
	if !listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool { return strings.Contains(s, "● online") }) {
		t.Fatalf("listen did not get online:\n%s", listen)
	}
	mustRun(t, "--home", carol, "send", "Harbour", "back again")
	if !listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool { return strings.Contains(s, "[Harbour] carol: back again") }) {
		t.Fatalf("listen did not show carol's message:\n%s\n--- bob's engine.log:\n%s", listen, engineLog(bob))
	}
	mustRun(t, "--home", carol, "typing", "Harbour")
	if !listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool { return strings.Contains(s, "carol is typing in Harbour") }) {
		t.Fatalf("listen did not show carol typing:\n%s\n--- bob's engine.log:\n%s", listen, engineLog(bob))
	}
	listen.kill()
	mustContain(t, mustRun(t, "--home", alice, "inbox"), "[Harbour] carol: back again")

	// Groups nobody has, and a command line that is wrong.
	mustFail(t, []string{"no group", "group list"}, "--home", alice, "group", "show", "Lighthouse")
	if r := run(t, "--home", alice, "group", "show", "Lighthouse"); r.code != 3 {
		t.Errorf("an unknown group: exit %d, want 3:\n%s", r.code, r)
	}
	jsonError(t, 3, "unknown_group", "--home", alice, "group", "add", "Lighthouse", "bob")
	jsonError(t, 3, "unknown_group", "--home", alice, "send", "The Lighthouse", "anyone?")
	jsonError(t, 3, "unknown_group", "--home", alice, "history", "group:"+strings.Repeat("0", 32))
	jsonError(t, 2, "usage", "--home", alice, "group", "role", "Harbour", "bob", "captain")
	jsonError(t, 2, "usage", "--home", alice, "group", "frobnicate")
	jsonError(t, 1, "bad_request", "--home", alice, "group", "create", strings.Repeat("n", 65))
}

// The group commands as the issue spells them: create --members, promote
// and demote, send --group (text and --file), and a group's picture.
func TestCLIGroupShortcutsFilesAndPicture(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice, bob, carol := newUser(t, srv, "alice"), newUser(t, srv, "bob"), newUser(t, srv, "carol")

	g := groupOut(t, "--home", alice, "group", "create", "Crew", "--members", "bob,carol")
	if !slices.Equal(g.members(), []string{"alice:owner", "bob:member", "carol:member"}) {
		t.Fatalf("create --members: %v", g.members())
	}
	if g = groupOut(t, "--home", alice, "group", "promote", "Crew", "bob"); !slices.Equal(g.members(), []string{"alice:owner", "bob:admin", "carol:member"}) {
		t.Fatalf("after promote: %v", g.members())
	}
	if g = groupOut(t, "--home", alice, "group", "demote", "Crew", "bob"); !slices.Equal(g.members(), []string{"alice:owner", "bob:member", "carol:member"}) {
		t.Fatalf("after demote: %v", g.members())
	}

	// --group names only groups: a user called like the group is not asked.
	mustContain(t, mustRun(t, "--home", alice, "send", "--group", "Crew", "hello crew"), "Sent to Crew")
	jsonError(t, 3, "unknown_group", "--home", alice, "send", "--group", "bob", "not a group")
	file := filepath.Join(t.TempDir(), "tides.txt")
	if err := os.WriteFile(file, []byte("high water 06:12"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--home", alice, "send", "--group", "Crew", "--file", file, "--caption", "the tides")
	for _, home := range []string{bob, carol} {
		mustContain(t, mustRun(t, "--home", home, "inbox"), "[Crew] alice: hello crew")
		mustContain(t, mustRun(t, "--home", home, "history", "Crew"), "tides.txt")
	}

	// A picture, seen by a member, then removed.
	pic := filepath.Join(t.TempDir(), "crew.png")
	writePNG(t, pic)
	mustContain(t, mustRun(t, "--home", alice, "group", "info", "Crew", "--avatar", pic), "picture:     set")
	mustRun(t, "--home", bob, "inbox")
	if g = groupOut(t, "--home", bob, "group", "info", "Crew"); !g.HasAvatar {
		t.Fatalf("bob's copy after the picture: %+v", g)
	}
	mustFail(t, []string{"PNG, JPEG, GIF or WebP"}, "--home", alice, "group", "info", "Crew", "--avatar", file)
	mustContain(t, mustRun(t, "--home", alice, "group", "info", "Crew", "--no-avatar"), "picture:     none")
}

// writePNG writes a small PNG image to path.
func writePNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, image.NewRGBA(image.Rect(0, 0, 32, 32))); err != nil {
		t.Fatal(err)
	}
}
