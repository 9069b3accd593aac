package client_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/magpie-im/magpie/client"
)

// History pages back through a conversation, newest page first, with
// `more` telling whether older messages (that match) exist; Search ignores
// case.
func TestHistoryPagingAndSearch(t *testing.T) {
	t.Parallel()
	var all, harbour []string
	s := startServer(t)
	// In memory: the paging is the Store's, and 120 sends to disk are slow.
	alice := newUser(t, s.Invite, "alice", client.Options{Store: client.NewMemoryStore()})
	newUser(t, s.Invite, "bob", client.Options{})
	for i := range 120 {
		text := fmt.Sprintf("message %03d", i)
		switch i % 10 {
		case 3:
			text += " at the Harbour"
			harbour = append(harbour, text)
		case 7:
			text += " at the HARBOUR gate"
			harbour = append(harbour, text)
		}
		all = append(all, text)
		send(t, alice, "bob", text)
	}
	if _, err := alice.Send(testCtx(t), "bob", "   "); err == nil {
		t.Fatal("an empty message was queued")
	}
	// page returns the texts of each page of q, going back with Before,
	// and checks the last page says it is the last.
	page := func(q client.HistoryQuery) [][]string {
		t.Helper()
		var pages [][]string
		for {
			msgs, more, err := alice.History(testCtx(t), "bob", q)
			if err != nil {
				t.Fatal(err)
			}
			pages = append(pages, texts(msgs))
			if !more {
				return pages
			}
			if len(msgs) == 0 || len(pages) > 10 {
				t.Fatalf("page %d of %+v: %d messages and more", len(pages), q, len(msgs))
			}
			q.Before = msgs[0].Seq
		}
	}
	for _, c := range []struct {
		q    client.HistoryQuery
		want [][]string
	}{
		{client.HistoryQuery{}, [][]string{all[70:], all[20:70], all[:20]}}, // 50 by default
		{client.HistoryQuery{Limit: 60}, [][]string{all[60:], all[:60]}},    // the last page exactly full
		{client.HistoryQuery{Limit: 200}, [][]string{all}},
		{client.HistoryQuery{Search: "harbour", Limit: 10}, [][]string{harbour[14:], harbour[4:14], harbour[:4]}},
		{client.HistoryQuery{Search: "hArBoUr GaTe", Limit: 12}, [][]string{everyOther(harbour[1:])}},
		{client.HistoryQuery{Search: "no such words"}, [][]string{{}}},
	} {
		got := page(c.q)
		if !slices.EqualFunc(got, c.want, slices.Equal) {
			t.Errorf("History %+v: pages of %v, want %v", c.q, lens(got), lens(c.want))
			for i := range min(len(got), len(c.want)) {
				if !slices.Equal(got[i], c.want[i]) {
					t.Errorf("page %d: %q…, want %q…", i, got[i][:min(2, len(got[i]))], c.want[i][:min(2, len(c.want[i]))])
				}
			}
		}
	}
	// Before a message that is not the newest starts right below it.
	msgs, more, err := alice.History(testCtx(t), "bob", client.HistoryQuery{Before: 2, Limit: 5})
	if err != nil || more || !slices.Equal(texts(msgs), all[:1]) {
		t.Fatalf("History before Seq 2: %q, more %v, %v", texts(msgs), more, err)
	}
}

func everyOther(s []string) []string {
	var out []string
	for i := 0; i < len(s); i += 2 {
		out = append(out, s[i])
	}
	return out
}

func lens(pages [][]string) []int {
	var out []int
	for _, p := range pages {
		out = append(out, len(p))
	}
	return out
}
