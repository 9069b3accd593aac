package cli

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/username"
)

// The group commands: thin wrappers over the engine's group endpoints
// (docs/LOCAL_API.md). A group is named on the command line by its name
// (when only one group has it), its id, or "group:" and its id.

// groupRef is how a group is named on a command line.
const groupRef = "G is the group's name (when no other group has it), its id, or group:ID."

// aboutGroup marks an error as being about a group, for the hint.
type aboutGroup struct {
	error
	group string // as the command line named it
}

func (e aboutGroup) Unwrap() error { return e.error }

func withGroup(err error, group string) error {
	if err == nil {
		return nil
	}
	return aboutGroup{err, group}
}

// isGroupPeer reports whether a conversation's peer is a group's.
func isGroupPeer(peer string) bool { return strings.HasPrefix(peer, "group:") }

// findGroup finds the group a person named.
func findGroup(ctx context.Context, s *engine.Session, name string) (engine.Group, error) {
	grp, err := s.FindGroup(ctx, name)
	if err != nil {
		return engine.Group{}, withGroup(err, name)
	}
	return grp, nil
}

// resolvePeer finds the conversation a person named: a group (by name or
// id) or a user. label is what to call it in output: the group's name, or
// the user.
func resolvePeer(ctx context.Context, s *engine.Session, name string) (peer, label string, err error) {
	peer, err = s.FindPeer(ctx, name)
	if err != nil {
		return "", "", withPeer(err, name)
	}
	if !isGroupPeer(peer) {
		if _, err := username.Normalize(peer); err != nil {
			// Neither a group here nor a possible user.
			return "", "", withPeer(&engine.APIError{Status: http.StatusNotFound, Code: engine.CodeUnknownGroup,
				Message: fmt.Sprintf("no group here is named %q, and it is not a username (%v)", name, err)}, name)
		}
		return peer, peer, nil
	}
	grp, err := s.Group(ctx, peer)
	if err != nil {
		return "", "", withPeer(err, name)
	}
	return peer, grp.Name, nil
}

// minArgs is cobra.MinimumNArgs with an error that shows the usage line.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("%s takes at least %d argument(s), got %d\nusage: %s\nsee: %s --help",
				cmd.Name(), n, len(args), cmd.UseLine(), cmd.CommandPath())}
		}
		return nil
	}
}

func groupCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "group",
		Short: "Create, change and join groups",
		Long: `Groups: conversations with several people, end to end encrypted. Who is
in a group, and who may do what, is a log of changes that each member
signs and every member's device checks: the server cannot add anyone.

A group is a conversation like any other: send to it, read its history and
listen to it by its name (or id):
  magpie send Harbour "hello"
  magpie history Harbour

` + groupRef + `

Roles: the owner (one), admins (add and remove members, change the
settings, make links, approve joins) and members.`,
		Example: `  magpie group create Harbour bob carol
  magpie group list
  magpie group show Harbour
  magpie group add Harbour dave
  magpie group link Harbour --approval
  magpie group join 'magpie-group:…'`,
		Args: cobra.NoArgs, // an unknown subcommand is a usage error (exit 2)
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(
		groupCreateCmd(g), groupListCmd(g), groupShowCmd(g), groupAddCmd(g), groupRemoveCmd(g),
		groupRoleCmd(g), groupRoleShortcut(g, "promote", "admin", "Make a member an admin (the owner)"),
		groupRoleShortcut(g, "demote", "member", "Make an admin a member again (the owner)"), groupLeaveCmd(g), groupInfoCmd(g), groupSettingsCmd(g), groupLinkCmd(g),
		groupJoinCmd(g), groupApproveCmd(g),
	)
	return c
}

// printGroup prints a group after a change: the Group as JSON, or line
// for people.
func (g *globals) printGroup(grp engine.Group, line string, args ...any) error {
	if g.json {
		return g.printJSON(grp)
	}
	fmt.Fprintf(g.stdout, line+"\n", args...)
	return nil
}

func groupCreateCmd(g *globals) *cobra.Command {
	var members []string
	c := &cobra.Command{
		Use:   "create NAME [USER...] [--members a,b,c]",
		Short: "Create a group, with you as its owner",
		Long: `Create a group named NAME (up to 64 bytes) with you as its owner and
USERs as its members. Each member is added with the identity key this
client holds for them (or the server's answer, for someone you have not
talked to yet): compare safety numbers with 'magpie verify USER'.`,
		Example: `  magpie group create Harbour bob carol
  magpie group create Harbour --members bob,carol
  magpie group create "Book club"`,
		Args: minArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			grp, err := s.CreateGroup(cmd.Context(), args[0], append(args[1:], members...))
			if err != nil {
				return withGroup(err, args[0])
			}
			if g.json {
				return g.printJSON(grp)
			}
			fmt.Fprintf(g.stdout, "Created the group %q (%s) with %s.\nNext: %s, or add people: %s\n",
				grp.Name, grp.Peer, memberNames(grp, true), g.magpie("send "+shellQuote(grp.Name)+` "hello"`),
				g.magpie("group add "+shellQuote(grp.Name)+" USER"))
			return nil
		}),
	}
	c.Flags().StringSliceVar(&members, "members", nil, "the members, comma-separated (as well as, or instead of, USERs)")
	g.addJSON(c)
	return c
}

// memberNames lists a group's members for a sentence.
func memberNames(grp engine.Group, withRoles bool) string {
	var names []string
	for _, m := range grp.Members {
		n := m.User
		if withRoles && m.Role != "member" {
			n += " (" + m.Role + ")"
		}
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

func groupListCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "list",
		Short:   "List your groups",
		Long:    "List the groups this client knows, by name: those you are in, those you asked to join, and those you left (their history stays).",
		Example: "  magpie group list\n  magpie group list --json | jq -r .name",
		Args:    exactArgs(0),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, _ []string) error {
			ctx := cmd.Context()
			gs, err := s.Groups(ctx)
			if err != nil {
				return err
			}
			st, err := s.Status(ctx)
			if err != nil {
				return err
			}
			for _, grp := range gs {
				if g.json {
					if err := g.printJSON(grp); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(g.stdout, "%-20s %2d members  %-22s %s\n", grp.Name, len(grp.Members), roleLine(grp, st.User), grp.Peer)
			}
			if !g.json && len(gs) == 0 {
				fmt.Fprintf(g.stdout, "No groups yet. Create one: %s, or join with a link: %s\n",
					g.magpie("group create NAME USER..."), g.magpie("group join LINK"))
			}
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

// roleLine says where this account (me) stands in a group.
func roleLine(grp engine.Group, me string) string {
	switch {
	case grp.Refused != "":
		return "(refused a change)"
	case grp.Role != "":
		return "you: " + grp.Role
	case slices.Contains(grp.Requests, me):
		return "(asked to join)"
	}
	return "(not a member)"
}

func groupShowCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "show G",
		Short:   "Show a group: members, roles, requests, settings, link",
		Long:    "Show a group as this client knows it. " + groupRef,
		Example: "  magpie group show Harbour\n  magpie group show group:3f0c…",
		Args:    exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(grp)
			}
			st, err := s.Status(ctx)
			if err != nil {
				return err
			}
			g.showGroup(grp, st.User)
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

// showGroup prints a group for people.
func (g *globals) showGroup(grp engine.Group, me string) {
	w := g.stdout
	ref := shellQuote(grp.Name)
	fmt.Fprintf(w, "%s\n  id:          %s\n", grp.Name, grp.Peer)
	if grp.Description != "" {
		fmt.Fprintf(w, "  description: %s\n", grp.Description)
	}
	fmt.Fprintf(w, "  you:         %s\n", strings.TrimPrefix(roleLine(grp, me), "you: "))
	if grp.Refused != "" {
		fmt.Fprintf(w, "  refused:     %s\n               (this client stopped following the group's log: the server sent a change that did not verify)\n", grp.Refused)
	}
	fmt.Fprintf(w, "  members:     %d\n", len(grp.Members))
	for _, m := range grp.Members {
		note := ""
		if m.User == me {
			note = "  (you)"
		}
		if m.KeyChanged {
			note += "  ! key differs from the one you hold: " + g.magpie("verify "+m.User)
		}
		fmt.Fprintf(w, "    %-20s %s%s\n", m.User, m.Role, note)
	}
	if len(grp.Requests) > 0 {
		fmt.Fprintf(w, "  asking to join: %s", strings.Join(grp.Requests, ", "))
		if grp.Role == "owner" || grp.Role == "admin" {
			fmt.Fprintf(w, "  (%s, or --deny)", g.magpie("group approve "+ref+" "+grp.Requests[0]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  settings:    %s\n", settingsLine(grp.Settings))
	switch {
	case !grp.LinkOn:
		fmt.Fprintln(w, "  join link:   off")
	case grp.Link != "":
		fmt.Fprintf(w, "  join link:   %s%s\n", grp.Link, approvalNote(grp.LinkApproval))
	default:
		fmt.Fprintf(w, "  join link:   on%s (made on another device)\n", approvalNote(grp.LinkApproval))
	}
}

func approvalNote(approval bool) string {
	if approval {
		return " (an admin approves each join)"
	}
	return ""
}

// settingsLine says a group's settings in words.
func settingsLine(s engine.GroupSettings) string {
	parts := []string{"everyone sends", "everyone edits the name and description", "messages stay"}
	if s.AdminsOnlySend {
		parts[0] = "only admins send"
	}
	if s.AdminsOnlyEditInfo {
		parts[1] = "only admins edit the name and description"
	}
	if s.DisappearAfterS > 0 {
		parts[2] = "messages disappear after " + formatDisappear(s.DisappearAfterS)
	}
	return strings.Join(parts, "; ")
}

// formatDisappear writes seconds as the --disappear flag takes them.
func formatDisappear(sec int64) string {
	switch {
	case sec <= 0:
		return "off"
	case sec%86400 == 0:
		return strconv.FormatInt(sec/86400, 10) + "d"
	case sec%3600 == 0:
		return strconv.FormatInt(sec/3600, 10) + "h"
	case sec%60 == 0:
		return strconv.FormatInt(sec/60, 10) + "m"
	}
	return strconv.FormatInt(sec, 10) + "s"
}

func groupAddCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "add G USER...",
		Short:   "Add people to a group (admins)",
		Long:    "Add USERs to group G, each with the identity key this client holds for them. Admins and the owner add. " + groupRef,
		Example: "  magpie group add Harbour dave erin",
		Args:    minArgs(2),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			grp, err = s.GroupAdd(ctx, grp.ID, args[1:]...)
			if err != nil {
				return withGroup(err, args[0])
			}
			return g.printGroup(grp, "Added %s to %s (%d members).", strings.Join(args[1:], ", "), grp.Name, len(grp.Members))
		}),
	}
	g.addJSON(c)
	return c
}

func groupRemoveCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "remove G USER",
		Short: "Remove someone from a group (admins)",
		Long: `Remove USER from group G. Admins remove members; only the owner removes
an admin. What the group says after this, USER cannot read. ` + groupRef,
		Example: "  magpie group remove Harbour carol",
		Args:    exactArgs(2),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			grp, err = s.GroupRemove(ctx, grp.ID, args[1])
			if err != nil {
				return withGroup(err, args[0])
			}
			return g.printGroup(grp, "Removed %s from %s (%d members).", args[1], grp.Name, len(grp.Members))
		}),
	}
	g.addJSON(c)
	return c
}

var roles = []string{"owner", "admin", "member"}

func groupRoleCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "role G USER owner|admin|member",
		Short: "Make someone an admin, a member again, or the owner",
		Long: `Give USER a role in group G. admin: the owner promotes; member: the owner
demotes an admin; owner: the owner hands the group over (and becomes an
admin). ` + groupRef,
		Example: "  magpie group role Harbour bob admin\n  magpie group role Harbour bob owner",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(3)(cmd, args); err != nil {
				return err
			}
			if !slices.Contains(roles, args[2]) {
				return usageError{fmt.Errorf("a role is owner, admin or member, not %q\nusage: %s", args[2], cmd.UseLine())}
			}
			return nil
		},
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			return g.setRole(cmd.Context(), s, args[0], args[1], args[2])
		}),
	}
	g.addJSON(c)
	return c
}

// setRole gives user role in the group named name, and says so.
func (g *globals) setRole(ctx context.Context, s *engine.Session, name, user, role string) error {
	grp, err := findGroup(ctx, s, name)
	if err != nil {
		return err
	}
	grp, err = s.GroupSetRole(ctx, grp.ID, user, role)
	if err != nil {
		return withGroup(err, name)
	}
	if role == "owner" {
		return g.printGroup(grp, "%s now owns %s; you are an admin.", user, grp.Name)
	}
	return g.printGroup(grp, "%s is now %s of %s.", user, map[string]string{"admin": "an admin", "member": "a member"}[role], grp.Name)
}

// groupRoleShortcut is promote (to admin) or demote (to member): 'group
// role' with the role in its name.
func groupRoleShortcut(g *globals, verb, role, short string) *cobra.Command {
	c := &cobra.Command{
		Use:     verb + " G USER",
		Short:   short,
		Long:    short + ": the same as 'magpie group role G USER " + role + "'. " + groupRef,
		Example: "  magpie group " + verb + " Harbour bob",
		Args:    exactArgs(2),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			return g.setRole(cmd.Context(), s, args[0], args[1], role)
		}),
	}
	g.addJSON(c)
	return c
}

func groupLeaveCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "leave G",
		Short:   "Leave a group",
		Long:    "Leave group G. Its owner hands it over first (magpie group role G USER owner), unless nobody else is in it. Its history stays on this client. " + groupRef,
		Example: "  magpie group leave Harbour",
		Args:    exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			grp, err = s.GroupLeave(ctx, grp.ID)
			if err != nil {
				return withGroup(err, args[0])
			}
			return g.printGroup(grp, "You left %s. Its history stays here: %s", grp.Name, g.magpie("history "+grp.Peer))
		}),
	}
	g.addJSON(c)
	return c
}

func groupInfoCmd(g *globals) *cobra.Command {
	var name, description, avatar string
	var noAvatar bool
	c := &cobra.Command{
		Use:   "info G [--name N] [--description D] [--avatar FILE | --no-avatar]",
		Short: "Show or change a group's name, description and picture",
		Long: `Without flags, show group G's name and description. With --name or
--description (or both), change them (--description "" clears it); with
--avatar, set its picture (PNG, JPEG, GIF or WebP, up to 512 KiB; the
server keeps it for 30 days), or remove it with --no-avatar. When the
group's settings say so, only admins may. ` + groupRef,
		Example: `  magpie group info Harbour --name "Harbour crew"
  magpie group info Harbour --description "Boats, tides, and the pub after"`,
		Args: exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			var info engine.GroupInfo
			if cmd.Flags().Changed("name") {
				info.Name = &name
			}
			if cmd.Flags().Changed("description") {
				info.Description = &description
			}
			if info.Name != nil || info.Description != nil {
				if grp, err = s.GroupSetInfo(ctx, grp.ID, info); err != nil {
					return withGroup(err, args[0])
				}
			}
			if avatar != "" || noAvatar {
				path := ""
				if avatar != "" {
					if path, err = filepath.Abs(avatar); err != nil {
						return err
					}
				}
				if grp, err = s.GroupSetAvatar(ctx, grp.ID, path); err != nil {
					return withGroup(err, args[0])
				}
			}
			if g.json {
				return g.printJSON(grp)
			}
			pic := "none"
			if grp.HasAvatar {
				pic = "set (the app shows it)"
			}
			fmt.Fprintf(g.stdout, "name:        %s\ndescription: %s\npicture:     %s\n", grp.Name, grp.Description, pic)
			return nil
		}),
	}
	c.Flags().StringVar(&name, "name", "", "the group's new name (up to 64 bytes)")
	c.Flags().StringVar(&description, "description", "", "the group's new description (up to 1024 bytes)")
	c.Flags().StringVar(&avatar, "avatar", "", "set the group's picture to this image")
	c.Flags().BoolVar(&noAvatar, "no-avatar", false, "remove the group's picture")
	c.MarkFlagsMutuallyExclusive("avatar", "no-avatar")
	g.addJSON(c)
	return c
}

func groupSettingsCmd(g *globals) *cobra.Command {
	var send, edit, disappear string
	c := &cobra.Command{
		Use:   "settings G [--admins-only-send on|off] [--admins-only-edit-info on|off] [--disappear DURATION]",
		Short: "Show or change a group's settings (admins)",
		Long: `Without flags, show group G's settings. With flags, change them (admins
and the owner):
  --admins-only-send on       only admins send to the group
  --admins-only-edit-info on  only admins change its name and description
  --disappear 7d              messages disappear after this long (a number
                              with s, m, h or d, up to 365d; off: never)
` + groupRef,
		Example: "  magpie group settings Harbour\n  magpie group settings Harbour --admins-only-send on --disappear 7d",
		Args:    exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			var change engine.GroupSettingsChange
			var err error
			if cmd.Flags().Changed("admins-only-send") {
				if change.AdminsOnlySend, err = parseOnOff("--admins-only-send", send); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("admins-only-edit-info") {
				if change.AdminsOnlyEditInfo, err = parseOnOff("--admins-only-edit-info", edit); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("disappear") {
				sec, err := parseDisappear(disappear)
				if err != nil {
					return err
				}
				change.DisappearAfterS = &sec
			}
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			if change != (engine.GroupSettingsChange{}) {
				if grp, err = s.GroupSetSettings(ctx, grp.ID, change); err != nil {
					return withGroup(err, args[0])
				}
			}
			if g.json {
				return g.printJSON(grp)
			}
			fmt.Fprintf(g.stdout, "admins-only-send:      %s\nadmins-only-edit-info: %s\ndisappear:             %s\n",
				onOff(grp.Settings.AdminsOnlySend), onOff(grp.Settings.AdminsOnlyEditInfo), formatDisappear(grp.Settings.DisappearAfterS))
			return nil
		}),
	}
	c.Flags().StringVar(&send, "admins-only-send", "", "on: only admins send; off: everyone does")
	c.Flags().StringVar(&edit, "admins-only-edit-info", "", "on: only admins change the name and description; off: everyone can")
	c.Flags().StringVar(&disappear, "disappear", "", "messages disappear after this long (30m, 12h, 7d; off: never)")
	g.addJSON(c)
	return c
}

func parseOnOff(flag, v string) (*bool, error) {
	switch v {
	case "on", "off":
		on := v == "on"
		return &on, nil
	}
	return nil, usageError{fmt.Errorf("%s is on or off, not %q", flag, v)}
}

// parseDisappear reads --disappear: off (or 0), or a whole number of
// seconds written as a Go duration (90s, 30m, 12h) or in days (7d).
func parseDisappear(v string) (int64, error) {
	bad := usageError{fmt.Errorf("--disappear is off or a time such as 30m, 12h or 7d (up to 365d), not %q", v)}
	if v == "off" || v == "0" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > 365 {
			return 0, bad
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < 0 || d%time.Second != 0 || d > 365*24*time.Hour {
			return 0, bad
		}
	}
	return int64(d / time.Second), nil
}

func groupLinkCmd(g *globals) *cobra.Command {
	var approval, off bool
	c := &cobra.Command{
		Use:   "link G [--approval] [--off]",
		Short: "Make a link to join a group, or turn links off (admins)",
		Long: `Make a new link that lets whoever has it join group G (an earlier link
stops working). With --approval, a join is a request until an admin
approves it (magpie group approve). --off turns joining by link off.
Share the link only with people you would let in. ` + groupRef,
		Example: "  magpie group link Harbour\n  magpie group link Harbour --approval\n  magpie group link Harbour --off",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(1)(cmd, args); err != nil {
				return err
			}
			if off && approval {
				return usageError{fmt.Errorf("--off and --approval do not go together\nusage: %s", cmd.UseLine())}
			}
			return nil
		},
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			l, err := s.GroupLink(ctx, grp.ID, !off, approval)
			if err != nil {
				return withGroup(err, args[0])
			}
			if g.json {
				return g.printJSON(l)
			}
			if off {
				fmt.Fprintf(g.stdout, "Joining %s by link is off; earlier links no longer work.\n", l.Group.Name)
				return nil
			}
			how := "can join " + l.Group.Name
			if approval {
				how = "can ask to join " + l.Group.Name + "; an admin approves each request"
			}
			fmt.Fprintf(g.stdout, "Whoever has this link %s (earlier links no longer work):\n\n    %s\n\nThey run: magpie group join '%s'\n",
				how, l.Link, l.Link)
			return nil
		}),
	}
	c.Flags().BoolVar(&approval, "approval", false, "an admin approves each join")
	c.Flags().BoolVar(&off, "off", false, "turn joining by link off")
	g.addJSON(c)
	return c
}

func groupJoinCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "join LINK",
		Short:   "Join a group with its link",
		Long:    "Join the group of LINK (magpie-group:…, from an admin's 'magpie group link'): at once, or as a request that an admin approves when the group asks for that.",
		Example: "  magpie group join 'magpie-group:…'",
		Args:    exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			grp, err := s.JoinGroup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(grp)
			}
			if grp.Role == "" {
				fmt.Fprintf(g.stdout, "Asked to join %s: an admin approves it. %s shows when you are in.\n", grp.Name, g.magpie("group list"))
				return nil
			}
			fmt.Fprintf(g.stdout, "Joined %s (%d members). Say hello: %s\n", grp.Name, len(grp.Members), g.magpie("send "+shellQuote(grp.Name)+` "hello"`))
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

func groupApproveCmd(g *globals) *cobra.Command {
	var deny bool
	c := &cobra.Command{
		Use:     "approve G USER [--deny]",
		Short:   "Let in someone who asked to join (admins), or turn them down",
		Long:    "Let USER, who asked to join group G with its link, in; --deny turns them down. 'magpie group show G' lists who is asking. " + groupRef,
		Example: "  magpie group approve Harbour dave\n  magpie group approve Harbour erin --deny",
		Args:    exactArgs(2),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			grp, err := findGroup(ctx, s, args[0])
			if err != nil {
				return err
			}
			grp, err = s.GroupApprove(ctx, grp.ID, args[1], !deny)
			if err != nil {
				return withGroup(err, args[0])
			}
			if deny {
				return g.printGroup(grp, "Turned down %s's request to join %s.", args[1], grp.Name)
			}
			return g.printGroup(grp, "Let %s into %s (%d members).", args[1], grp.Name, len(grp.Members))
		}),
	}
	c.Flags().BoolVar(&deny, "deny", false, "turn the request down")
	g.addJSON(c)
	return c
}
