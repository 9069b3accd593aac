package webapp_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// historySize is the length of the conversation BenchmarkFirstRender10k
// opens.
const historySize = 10_000

// BenchmarkFirstRender10k measures what bob waits for when he opens a
// conversation with 10,000 messages: from his click on it in
// #conversations to its newest message in #messages, laid out. Each
// iteration reloads the page first (not timed), so every open is the
// first render of that chat in a fresh page. The history is made once,
// in the parent benchmark (a benchmark with sub-benchmarks runs once),
// and the sub-benchmark "open" does the timed clicks.
//
// The time is taken inside the page, with performance.now() before the
// click and in a MutationObserver that sees the newest message arrive
// (then reading scrollHeight forces style and layout): it leaves out the
// DevTools round trips that a clock in Go would add. ms/render is that
// time; ms/frame goes on to the next animation frame (the one that paints
// it); ms/fetch is the part spent on the engine's answer with the page of
// history, as the browser timed the request; ns/op is the whole step
// measured in Go, round trips included. The chat stays unread throughout
// (the page is reloaded before it marks it read), so every open is alike.
func BenchmarkFirstRender10k(b *testing.B) {
	browser := startBrowser(b)
	s := servertest.Start(b, server.Config{})
	alice, bob := newUser(b, s, "", "alice"), newUser(b, s, "", "bob")
	start := time.Now()
	newest := fillHistory(b, alice, bob, historySize)
	b.Logf("%d messages from alice to bob in %v", historySize, time.Since(start).Round(time.Millisecond))
	bp := newPage(b, browser, "bob")
	origin := signIn(bp, bob, "bob")

	b.Run("open", func(b *testing.B) {
		firstRender(b, bp, origin, newest)
	})
}

func firstRender(b *testing.B, bp *page, origin string, newest uint64) {
	bp = bp.in(b)
	var render, frame, fetch time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		// A fresh page showing the list, no chat open.
		bp.do("reload", chromedp.Navigate(origin+"/#/"), chromedp.Reload())
		bp.wait("alice's chat in the list", `document.querySelector('#state').dataset.state === 'online' && location.hash !== '#/chat/alice' && document.querySelector('#conversations li[data-peer="alice"] button')`)
		b.StartTimer()
		got := eval[struct{ Render, Frame, Fetch float64 }](bp, fmt.Sprintf(firstRenderJS, newest))
		b.StopTimer()
		render += time.Duration(got.Render * float64(time.Millisecond))
		frame += time.Duration(got.Frame * float64(time.Millisecond))
		fetch += time.Duration(got.Fetch * float64(time.Millisecond))
		bp.shot("bench-10k")
	}
	b.ReportMetric(float64(render.Microseconds())/1000/float64(b.N), "ms/render")
	b.ReportMetric(float64(frame.Microseconds())/1000/float64(b.N), "ms/frame")
	b.ReportMetric(float64(fetch.Microseconds())/1000/float64(b.N), "ms/fetch")
}

// firstRenderJS clicks alice's chat and times it until the message with
// seq %d is in #messages and laid out, and until the next frame.
const firstRenderJS = `new Promise((resolve, reject) => {
	const box = document.getElementById('messages');
	const newest = '.msg[data-seq="%d"]';
	const t0 = performance.now();
	const seen = new MutationObserver(() => {
		if (!box.querySelector(newest)) return;
		seen.disconnect();
		void box.scrollHeight; // style and layout, now
		const render = performance.now() - t0;
		const fetch = performance.getEntriesByType('resource')
			.filter((e) => e.startTime >= t0 && e.name.includes('/messages?'))
			.reduce((sum, e) => sum + e.duration, 0);
		requestAnimationFrame(() => setTimeout(() => resolve({Render: render, Frame: performance.now() - t0, Fetch: fetch})));
	});
	seen.observe(box, { childList: true, subtree: true });
	document.querySelector('#conversations li[data-peer="alice"] button').click();
	setTimeout(() => reject(new Error('the newest message was not shown within 30 s')), 30000);
})`

// fillHistory has alice send n texts to bob, waits until bob's engine has
// them all and returns the seq of the last on bob's side. The texts vary
// in length, some span lines and some hold a link. They are sent while
// alice's engine runs, a few at a time: queued all at once, offline, each
// Send would read through all those before it (see the comment below).
func fillHistory(b *testing.B, alice, bob *engine.Session, n int) uint64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := alice.Engine.Client()
	for i := 1; i <= n; i++ {
		text := fmt.Sprintf("message %d: %s", i, strings.Repeat("the quick brown fox jumps over the lazy dog ", i%7))
		switch {
		case i%50 == 0:
			text += "\nsee https://example.org/notes/" + fmt.Sprint(i)
		case i%13 == 0:
			text += "\nand a second line\nand a third"
		}
		if _, err := c.Send(ctx, "bob", text); err != nil {
			b.Fatal(err)
		}
		if i%25 == 0 {
			// Let the outbox drain: Send reads every message queued in
			// it, looking for a copy of the text.
			for {
				ob, err := c.Outbox(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(ob) < 10 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	for {
		msgs, _, err := bob.History(ctx, "alice", 0, 1, "")
		if err != nil {
			b.Fatal(err)
		}
		if len(msgs) == 1 && strings.HasPrefix(msgs[0].Text, fmt.Sprintf("message %d:", n)) {
			return msgs[0].Seq
		}
		select {
		case <-ctx.Done():
			b.Fatalf("bob has %d of alice's %d messages", len(msgs), n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
