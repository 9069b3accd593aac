package engine

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/magpie-im/magpie/client"
)

// heartbeat keeps an idle event stream open through proxies and lets a
// dead reader be noticed.
const heartbeat = 25 * time.Second

// events streams the client's events as Server-Sent Events.
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, fmt.Errorf("streaming is not supported here"))
		return
	}
	sub := a.e.c.Subscribe()
	defer sub.Close()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.e.stopping:
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case ev, ok := <-sub.Events():
			if !ok {
				return
			}
			name, data := a.e.eventData(r, ev)
			if name == "" {
				continue
			}
			b, err := json.Marshal(data)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// eventData is an event's SSE name and data.
func (e *Engine) eventData(r *http.Request, ev client.Event) (string, any) {
	switch ev.Kind {
	case client.EventState:
		st, err := e.status(r.Context())
		if err != nil {
			return "", nil
		}
		return "state", st
	case client.EventMessage:
		return "message", apiMessage(ev.Message)
	case client.EventUpdate:
		return "update", apiMessage(ev.Message)
	case client.EventProgress:
		phase := "download"
		if ev.Progress.Upload {
			phase = "upload"
		}
		return "progress", Progress{Seq: ev.Progress.Seq, Phase: phase, Done: ev.Progress.Done, Total: ev.Progress.Total}
	case client.EventTyping:
		typing, sender := ev.Typing, ev.Sender
		if sender == "" {
			sender = ev.Peer // a user's conversation: the user types
		}
		return "typing", PeerEvent{Peer: ev.Peer, Typing: &typing, Sender: sender}
	case client.EventIdentityChanged:
		return "identity", PeerEvent{Peer: ev.Peer}
	case client.EventRead:
		return "read", PeerEvent{Peer: ev.Peer}
	case client.EventGroup:
		return "group", PeerEvent{Peer: ev.Peer}
	case client.EventSignupPuzzle:
		return "signup_puzzle", SignupPuzzle{Bits: ev.PuzzleBits}
	case client.EventResync:
		return "resync", struct{}{}
	}
	return "", nil
}
