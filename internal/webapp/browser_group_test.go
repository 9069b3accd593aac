package webapp_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// noticeJS is true when #messages shows a notice (a line about the
// group) that contains text.
func noticeJS(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .msg.notice .notice-text')].some((n) => n.textContent.includes(%q))`, text)
}

// memberJS is the li of user in the open group info panel, or null.
func memberJS(user string) string {
	return fmt.Sprintf(`document.querySelector('#group-members li[data-user=%q]')`, user)
}

// TestBrowserGroup drives three web apps through a group: alice makes
// one with bob and carol; it shows up in their lists by name, with the
// group icon; each sees the others' messages with the sender's name, and
// who is typing; alice's message says to how many it was delivered and
// by how many it was read; alice makes bob an admin and removes carol in
// the info panel, and carol's page then refuses to send, saying why,
// while notices tell everyone what happened; then alice makes a join
// link that needs approval, carol asks to join with it, alice approves,
// and carol can write again. Any exception, console error or CSP
// violation on a page fails it (newPage).
func TestBrowserGroup(t *testing.T) {
	browser := startBrowser(t)
	s := servertest.Start(t, server.Config{})
	alice, bob, carol := newUser(t, s, "", "alice"), newUser(t, s, "", "bob"), newUser(t, s, "", "carol")
	alicePage, bobPage, carolPage := newPage(t, browser, "alice"), newPage(t, browser, "bob"), newPage(t, browser, "carol")
	signIn(alicePage, alice, "alice")
	signIn(bobPage, bob, "bob")
	signIn(carolPage, carol, "carol")

	var peer string // the group's conversation, "group:HEX"
	// If a page does not show something, say whether its engine has it.
	t.Cleanup(func() {
		if t.Failed() && peer != "" {
			logGroup(t, alice, "alice", peer)
			logGroup(t, bob, "bob", peer)
			logGroup(t, carol, "carol", peer)
		}
	})
	t.Run("create", func(t *testing.T) {
		ap, bp, cp := alicePage.in(t), bobPage.in(t), carolPage.in(t)
		ap.do("open New group", chromedp.Click(chromedp.ID("new-group-button")))
		ap.wait("the New group dialog", `document.querySelector('#new-group').open`)
		ap.do("name the group and pick its members",
			chromedp.SendKeys(chromedp.ID("new-group-name"), "Weekend"),
			chromedp.SendKeys(chromedp.ID("new-group-members"), "bob, Carol"),
			chromedp.Click(chromedp.ID("new-group-create")))
		ap.wait("the group's chat open on alice's page", `!document.querySelector('#new-group').open && location.hash.startsWith('#/chat/group%3A') && `+
			`document.querySelector('#chat-peer').textContent === 'Weekend' && !document.querySelector('#group-info-button').hidden && document.querySelector('#safety-button').hidden`)
		peer = eval[string](ap, `decodeURIComponent(location.hash.slice('#/chat/'.length))`)
		if !strings.HasPrefix(peer, "group:") || len(peer) != len("group:")+32 {
			ap.fail("alice: the group's chat is %q, not group: and 32 hex digits", peer)
		}
		ap.wait("the members under the name", `document.querySelector('#chat-sub').textContent === 'You, bob and carol'`)
		ap.wait("the group in alice's list", listedJS(peer, "Weekend"))
		for _, p := range []*page{bp, cp} {
			p.wait("the group in the list, by name, with the group icon", listedJS(peer, "Weekend"))
		}
		bp.shot("g1-listed")
		for _, p := range []*page{bp, cp} {
			p.do("open the group", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#conversations li[data-peer=%q] button`, peer))))
			p.wait("the group's chat", fmt.Sprintf(`location.hash === %q && document.querySelector('#chat-peer').textContent === 'Weekend' && !document.querySelector('#composer').disabled && document.querySelector('#composer-blocked').hidden`,
				"#/chat/"+strings.Replace(peer, ":", "%3A", 1)))
			p.wait("the notice that alice made the group", noticeJS(`alice created the group "Weekend"`))
		}
	})
	if t.Failed() {
		return
	}

	t.Run("messages", func(t *testing.T) {
		ap, bp, cp := alicePage.in(t), bobPage.in(t), carolPage.in(t)
		ap.do("write to the group", chromedp.SendKeys(chromedp.ID("composer"), "hello group\r"))
		for _, p := range []*page{bp, cp} {
			p.wait("alice's message with her name on it", fmt.Sprintf(`((m) => !!m && m.dataset.sender === 'alice' && m.querySelector('.sender')?.textContent === 'alice' && getComputedStyle(m.querySelector('.sender')).display !== 'none')(%s)`, msgJS("in", "hello group")))
		}
		// Bob and carol have the chat open: they read it at once.
		rcpt := msgJS("out", "hello group") + `?.querySelector('.receipts-button')`
		ap.wait("delivered to 2 of 2 and read by 2 under alice's message", fmt.Sprintf(
			`((b) => !!b && b.textContent === 'Delivered to 2 of 2 · Read by 2' && b.dataset.delivered === '2' && b.dataset.read === '2' && b.dataset.recipients === '2')(%s)`, rcpt))
		ap.do("ask who read it", chromedp.Click(chromedp.CSS(`#messages .msg.out .receipts-button`)))
		ap.wait("the readers, by name", fmt.Sprintf(`((b) => b.getAttribute('aria-expanded') === 'true' && `+
			`[...b.closest('.msg').querySelectorAll('.receipts-details dt, .receipts-details dd')].map((e) => e.textContent).join('|').match(/^Read by\|(bob, carol|carol, bob)$/))(%s)`, rcpt))
		ap.shot("g2-receipts")

		bp.do("reply", chromedp.SendKeys(chromedp.ID("composer"), "hi all\r"))
		ap.wait("bob's reply with his name on it", fmt.Sprintf(`((m) => !!m && m.dataset.sender === 'bob' && m.querySelector('.sender')?.textContent === 'bob')(%s)`, msgJS("in", "hi all")))
		cp.wait("bob's reply on carol's page", fmt.Sprintf(`%s?.dataset.sender === 'bob'`, msgJS("in", "hi all")))
		ap.wait("the group's last message in alice's list", fmt.Sprintf(`document.querySelector('#conversations li[data-peer=%q] .conv-preview').textContent === 'bob: hi all'`, peer))
		// A member's typing goes out with their sender key, which they
		// hand out with their first message: bob has written.
		bp.do("type", chromedp.SendKeys(chromedp.ID("composer"), "let me think"))
		for _, p := range []*page{ap, cp} {
			p.wait("bob typing", `!document.querySelector('#typing').hidden && document.querySelector('#typing-text').textContent === 'bob is typing…' && document.querySelector('#chat-sub').textContent === 'bob is typing…'`)
		}
		// (chromedp's Enter that sent "hi all" left a newline before it.)
		bp.do("delete it", chromedp.Focus(chromedp.ID("composer")), chromedp.KeyEvent(kb.End), chromedp.KeyEvent(strings.Repeat(kb.Backspace, len("\nlet me think"))))
		bp.wait("the composer empty", `document.querySelector('#composer').value === ''`)
		ap.wait("bob no longer typing", `document.querySelector('#typing').hidden && document.querySelector('#chat-sub').textContent === 'You, bob and carol'`)
	})
	if t.Failed() {
		return
	}

	t.Run("info panel", func(t *testing.T) {
		ap, bp, cp := alicePage.in(t), bobPage.in(t), carolPage.in(t)
		ap.do("open the group's info", chromedp.Click(chromedp.ID("group-info-button")))
		ap.wait("the members with their roles", `document.querySelector('#group-info').open && `+
			`[...document.querySelectorAll('#group-members li')].map((li) => li.dataset.user + ':' + li.dataset.role).join(' ') === 'alice:owner bob:member carol:member' && `+
			memberJS("alice")+`.querySelector('.role-badge').textContent === 'Owner' && !`+memberJS("alice")+`.querySelector('.remove')`)
		ap.shot("g3-info")
		ap.do("make bob an admin", chromedp.Click(chromedp.CSS(`#group-members li[data-user="bob"] .make-admin`)))
		ap.wait("bob an admin", memberJS("bob")+`?.dataset.role === 'admin' && `+memberJS("bob")+`.querySelector('.role-badge')?.textContent === 'Admin' && `+memberJS("bob")+`.querySelector('.make-member')`)
		ap.do("remove carol", chromedp.Click(chromedp.CSS(`#group-members li[data-user="carol"] .remove`)))
		ap.wait("carol gone from the members", `!`+memberJS("carol")+` && document.querySelectorAll('#group-members li').length === 2 && document.querySelector('#group-info-message').hidden`)
		ap.do("close the panel", chromedp.Click(chromedp.CSS(`#group-info .sheet-close`)))
		ap.wait("the panel closed, and the notices", `!document.querySelector('#group-info').open && `+noticeJS("you made bob an admin")+` && `+noticeJS("you removed carol"))
		ap.wait("the members under the name", `document.querySelector('#chat-sub').textContent === 'You and bob'`)
		bp.wait("the notice on bob's page", noticeJS("alice removed carol"))

		cp.wait("carol's composer disabled, saying why", `document.querySelector('#composer').disabled && document.querySelector('#composer-form').hidden && `+
			`!document.querySelector('#composer-blocked').hidden && document.querySelector('#composer-blocked-text').textContent.includes('not a member') && `+
			noticeJS("alice removed you")+` && document.querySelector('#chat-sub').textContent === 'You are not a member of this group'`)
		cp.shot("g4-removed")

		ap.do("write to the two left", chromedp.SendKeys(chromedp.ID("composer"), "just us now\r"))
		bp.wait("alice's message on bob's page", msgJS("in", "just us now"))
		ap.wait("delivered to 1 of 1 and read by 1", fmt.Sprintf(`%s?.querySelector('.receipts-button')?.textContent === 'Delivered to 1 of 1 · Read by 1'`, msgJS("out", "just us now")))
		if eval[bool](cp, msgJS("in", "just us now")+` !== undefined`) {
			cp.fail("carol: a message written to the group after she was removed is on her page")
		}
	})
	if t.Failed() {
		return
	}

	t.Run("join link", func(t *testing.T) {
		ap, cp := alicePage.in(t), carolPage.in(t)
		ap.do("open the group's info", chromedp.Click(chromedp.ID("group-info-button")))
		ap.wait("the link off", `document.querySelector('#group-info').open && document.querySelector('#group-link-row').hidden && document.querySelector('#group-link-off').hidden`)
		ap.do("make a link that needs approval", chromedp.Click(chromedp.ID("group-link-approval")), chromedp.Click(chromedp.ID("group-link-on")))
		ap.wait("the link", `!document.querySelector('#group-link-row').hidden && document.querySelector('#group-link').value.length > 20 && !document.querySelector('#group-link-off').hidden && document.querySelector('#group-link-status').textContent.includes('approves')`)
		link := eval[string](ap, `document.querySelector('#group-link').value`)
		ap.do("copy it", chromedp.Click(chromedp.ID("group-link-copy")))
		ap.wait("copied", `document.querySelector('#group-info-message').textContent === 'Link copied.' || document.querySelector('#group-info-message').textContent.startsWith('This browser did not let')`)

		cp.do("open Join group", chromedp.Click(chromedp.ID("join-group-button")))
		cp.do("paste the link", chromedp.SendKeys(chromedp.ID("join-group-link"), link), chromedp.Click(chromedp.ID("join-group-submit")))
		cp.wait("the request sent", `document.querySelector('#join-group-message').textContent.startsWith('You asked to join “Weekend”')`)
		cp.do("close the dialog", chromedp.Click(chromedp.CSS(`#join-group .sheet-close`)))

		ap.wait("carol's request", `!document.querySelector('#group-requests-section').hidden && document.querySelector('#group-requests li[data-user="carol"] .approve')`)
		ap.shot("g5-request")
		ap.do("let carol in", chromedp.Click(chromedp.CSS(`#group-requests li[data-user="carol"] .approve`)))
		ap.wait("carol a member again", memberJS("carol")+`?.dataset.role === 'member' && document.querySelector('#group-requests-section').hidden`)
		ap.do("close the panel", chromedp.Click(chromedp.CSS(`#group-info .sheet-close`)))

		cp.wait("carol's composer back", `!document.querySelector('#composer').disabled && !document.querySelector('#composer-form').hidden && document.querySelector('#composer-blocked').hidden`)
		cp.do("write again", chromedp.SendKeys(chromedp.ID("composer"), "back again\r"))
		ap.wait("carol's message on alice's page", fmt.Sprintf(`%s?.dataset.sender === 'carol'`, msgJS("in", "back again")))
		ap.shot("g6-back")
	})
}

// listedJS is true when the conversation list has the group peer, by
// name, with the group icon.
func listedJS(peer, name string) string {
	return fmt.Sprintf(`((li) => !!li && li.classList.contains('is-group') && li.querySelector('.conv-name').textContent === %q && !!li.querySelector('.avatar.group svg.icon-users'))(document.querySelector('#conversations li[data-peer=%q]'))`, name, peer)
}

// logGroup logs what sess's engine knows of the group peer: its state and
// its conversation.
func logGroup(t *testing.T, sess *engine.Session, name, peer string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := sess.Group(ctx, peer)
	t.Logf("%s's engine has the group as role=%q can_send=%v seq=%d members=%+v refused=%q (%v)", name, g.Role, g.CanSend, g.Seq, g.Members, g.Refused, err)
	msgs, _, err := sess.History(ctx, peer, 0, 50, "")
	for _, m := range msgs {
		t.Logf("%s's engine has message %d: %q from %q notice=%v state=%s unread=%v recipients=%d delivered_to=%v read_by=%v", name, m.Seq, m.Text, m.Sender, m.Notice, m.State, m.Unread, m.Recipients, m.DeliveredTo, m.ReadBy)
	}
	if err != nil {
		t.Logf("%s's history: %v", name, err)
	}
}

// pictureJS is true when the .avatar.group in the element sel shows the
// group's picture: an img that loaded, at width×width.
func pictureJS(sel string, width int) string {
	return fmt.Sprintf(`((a) => !!a && a.classList.contains('has-picture') && ((img) => !!img && img.complete && img.naturalWidth === %d && img.naturalHeight === %d && img.getBoundingClientRect().width > 0)(a.querySelector('img.group-picture')))(document.querySelector(%q))`, width, width, sel)
}

// iconJS is true when the .avatar.group in the element sel shows the
// group icon and no picture.
func iconJS(sel string) string {
	return fmt.Sprintf(`((a) => !!a && !a.classList.contains('has-picture') && !a.querySelector('img') && !!a.querySelector('svg.icon-users'))(document.querySelector(%q))`, sel)
}

// TestBrowserGroupPictureAndDisappearing: alice gives a group a picture
// through its info panel (a file picked in the page); bob's page shows
// it, loaded, in his list, his chat's header and his info panel; alice
// removes it and bob's page shows the group icon again. Then alice makes
// the group's messages disappear after 3 seconds: both pages say so in
// the chat's header, her next message carries the timer mark on both,
// and it goes from both pages once the engines delete it (they send
// "resync"), while a message written before stays. Any exception,
// console error or CSP violation (the picture is an <img> of the page's
// origin) fails it (newPage).
func TestBrowserGroupPictureAndDisappearing(t *testing.T) {
	browser := startBrowser(t)
	// A group's picture is a blob on the server.
	s := servertest.Start(t, server.Config{Blobs: servertest.Blobs(t, blobstore.Options{})})
	alice, bob := newUser(t, s, "", "alice"), newUser(t, s, "", "bob")
	alicePage, bobPage := newPage(t, browser, "alice"), newPage(t, browser, "bob")
	signIn(alicePage, alice, "alice")
	signIn(bobPage, bob, "bob")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := alice.CreateGroup(ctx, "Pictures", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	peer := g.Peer
	t.Cleanup(func() {
		if t.Failed() {
			logGroup(t, alice, "alice", peer)
			logGroup(t, bob, "bob", peer)
		}
	})
	chat := "#/chat/" + strings.Replace(peer, ":", "%3A", 1)
	listed := fmt.Sprintf(`#conversations li[data-peer=%q] .avatar.group`, peer)
	for _, p := range []*page{alicePage, bobPage} {
		p.wait("the group in the list", listedJS(peer, "Pictures"))
		p.do("open the group", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#conversations li[data-peer=%q] button`, peer))))
		p.wait("the group's chat", fmt.Sprintf(`location.hash === %q && document.querySelector('#chat-peer').textContent === 'Pictures' && !document.querySelector('#composer').disabled`, chat))
		p.wait("the group icon in the header, and no timer", iconJS("#chat-avatar")+` && document.querySelector('#chat-disappear').hidden`)
	}

	t.Run("picture", func(t *testing.T) {
		ap, bp := alicePage.in(t), bobPage.in(t)
		const side = 96
		pic := filepath.Join(t.TempDir(), "harbour.png")
		if err := os.WriteFile(pic, testPNG(t, side, side), 0o600); err != nil {
			t.Fatal(err)
		}
		ap.do("open the group's info", chromedp.Click(chromedp.ID("group-info-button")))
		ap.wait("Add a picture, and no Remove", `document.querySelector('#group-info').open && !document.querySelector('#group-picture-actions').hidden && `+
			`document.querySelector('#group-picture-change').textContent === 'Add a picture' && document.querySelector('#group-picture-remove').hidden && `+iconJS("#group-about .avatar"))
		ap.do("pick the picture", chromedp.SetUploadFiles(chromedp.ID("group-picture-input"), []string{pic}))
		ap.wait("the picture in the info panel, and Remove", pictureJS("#group-about .avatar", side)+` && !document.querySelector('#group-picture-remove').hidden && `+
			`document.querySelector('#group-picture-change').textContent === 'Change picture' && document.querySelector('#group-info-message').textContent.startsWith('Picture changed.')`)
		ap.wait("the picture in alice's header and list", pictureJS("#chat-avatar", side)+` && `+pictureJS(listed, side))
		ap.shot("p1-picture")

		bp.wait("the picture in bob's list", pictureJS(listed, side))
		bp.wait("the picture in bob's header", pictureJS("#chat-avatar", side))
		bp.do("open the group's info", chromedp.Click(chromedp.ID("group-info-button")))
		bp.wait("the picture in bob's info panel", `document.querySelector('#group-info').open && `+pictureJS("#group-about .avatar", side))
		bp.shot("p2-picture")
		bp.do("close the panel", chromedp.Click(chromedp.CSS(`#group-info .sheet-close`)))

		ap.do("remove the picture", chromedp.Click(chromedp.ID("group-picture-remove")))
		ap.wait("the icon in the info panel, and no Remove", iconJS("#group-about .avatar")+` && document.querySelector('#group-picture-remove').hidden`)
		ap.do("close the panel", chromedp.Click(chromedp.CSS(`#group-info .sheet-close`)))
		bp.wait("the group icon again in bob's list and header", iconJS(listed)+` && `+iconJS("#chat-avatar"))
		ap.wait("the group icon again in alice's list and header", iconJS(listed)+` && `+iconJS("#chat-avatar"))
		bp.shot("p3-removed")
	})
	if t.Failed() {
		return
	}

	t.Run("disappearing", func(t *testing.T) {
		ap, bp := alicePage.in(t), bobPage.in(t)
		ap.do("write before messages disappear", chromedp.SendKeys(chromedp.ID("composer"), "this one stays\r"))
		bp.wait("it on bob's page, with no timer", fmt.Sprintf(`((m) => !!m && !m.querySelector('.expiry'))(%s)`, msgJS("in", "this one stays")))
		// The panel offers an hour at least: three seconds through the API.
		const after = 3
		if _, err := alice.GroupSetSettings(ctx, peer, engine.GroupSettingsChange{DisappearAfterS: new(int64(after))}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []*page{ap, bp} {
			p.wait("the header saying messages disappear", `!document.querySelector('#chat-disappear').hidden && `+
				`document.querySelector('#chat-disappear').textContent === 'Messages disappear after 3 seconds' && document.querySelector('#chat-disappear svg.icon-timer')`)
		}
		ap.do("write", chromedp.SendKeys(chromedp.ID("composer"), "this one vanishes\r"))
		sent := time.Now()
		timer := func(dir string) string {
			return fmt.Sprintf(`((m) => !!m && ((x) => !!x && x.title.startsWith('Disappears on ') && !!x.dataset.expires && x.querySelector('svg.icon-timer'))(m.querySelector('.meta .expiry')))(%s)`, msgJS(dir, "this one vanishes"))
		}
		bp.wait("the message on bob's page with the timer mark", timer("in"))
		ap.wait("the message on alice's page with the timer mark", timer("out"))
		bp.shot("p4-timer")
		for _, p := range []*page{bp, ap} {
			p.wait("the message gone", fmt.Sprintf(`!%s && !%s`, msgJS("in", "this one vanishes"), msgJS("out", "this one vanishes")))
		}
		if d := time.Since(sent); d > 10*time.Second {
			t.Errorf("a message that disappears after %d s went from the pages %v after it was sent", after, d.Round(time.Millisecond))
		}
		bp.wait("the list's preview no longer the message", fmt.Sprintf(`!document.querySelector('#conversations li[data-peer=%q] .conv-preview').textContent.includes('this one vanishes')`, peer))
		bp.wait("the earlier message still on bob's page", msgJS("in", "this one stays"))
		ap.wait("the earlier message still on alice's page", msgJS("out", "this one stays"))
		bp.shot("p5-gone")
	})
}
