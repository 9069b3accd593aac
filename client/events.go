package client

import "sync"

// EventKind says what an Event is.
type EventKind int

const (
	// EventState: the engine's connection state changed (Event.Status).
	EventState EventKind = iota + 1
	// EventMessage: a message entered the history (Event.Message):
	// received, written here, or sent from another device of this account.
	EventMessage
	// EventUpdate: a message changed (Event.Message): sent, delivered,
	// read, failed, its attachment saved.
	EventUpdate
	// EventProgress: an attachment transfer moved on (Event.Progress).
	EventProgress
	// EventTyping: Event.Peer started or stopped typing (Event.Typing).
	EventTyping
	// EventIdentityChanged: Event.Peer's safety number changed.
	EventIdentityChanged
	// EventRead: the conversation with Event.Peer was marked read here.
	EventRead
	// EventResync: this subscriber fell behind and missed events; reload
	// what it shows from the history.
	EventResync
	// EventGroup: the group whose conversation is Event.Peer changed
	// (Client.Group shows it).
	EventGroup
	// EventSignupPuzzle: Register is solving the server's sign-up puzzle
	// (a server run with --signup pow), of Event.PuzzleBits bits: expect
	// 2^bits hashes, from a fraction of a second to a minute.
	EventSignupPuzzle
)

// Event is something the application should show. The history is the
// truth: events say what changed in it.
type Event struct {
	Kind     EventKind
	Message  *Message
	Peer     string
	Sender   string // EventTyping in a group: who is typing
	Typing   bool
	Status   Status
	Progress Progress
	// PuzzleBits is the difficulty of the sign-up puzzle being solved
	// (EventSignupPuzzle).
	PuzzleBits int
}

// Progress reports an attachment transfer.
type Progress struct {
	Seq         uint64
	Upload      bool // false: a download
	Done, Total int64
}

// subscriptionBuffer is how many events wait for a slow subscriber before
// it misses some (and gets EventResync).
const subscriptionBuffer = 512

// Subscription receives the Client's events from when it was made.
type Subscription struct {
	c    *Client
	ch   chan Event
	mu   sync.Mutex
	lost bool // events were dropped: send EventResync first
	done bool
}

// Subscribe returns a new subscription to the client's events, starting
// with the current state. Close it when done.
func (c *Client) Subscribe() *Subscription {
	s := &Subscription{c: c, ch: make(chan Event, subscriptionBuffer)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		s.done = true
		close(s.ch)
		return s
	}
	c.subs[s] = struct{}{}
	s.send(Event{Kind: EventState, Status: c.eng.status})
	return s
}

// Events delivers the events in order. It is closed by Close, and when the
// Client closes.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	delete(s.c.subs, s)
	s.c.mu.Unlock()
	s.close()
}

func (s *Subscription) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		s.done = true
		close(s.ch)
	}
}

// send never blocks: a subscriber that does not keep up loses events and is
// told so.
func (s *Subscription) send(ev Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	if s.lost {
		select {
		case s.ch <- Event{Kind: EventResync}:
			s.lost = false
		default:
			return
		}
	}
	select {
	case s.ch <- ev:
	default:
		s.lost = true
	}
}

// publish sends events to every subscriber.
func (c *Client) publish(evs ...Event) {
	for _, ev := range evs {
		if ev.Kind == EventMessage && ev.Message != nil && !ev.Message.Expires.IsZero() {
			// Stored (events follow commits): the expiry loop plans
			// for it.
			select {
			case c.expireNow <- struct{}{}:
			default:
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		for _, ev := range evs {
			s.send(ev)
		}
	}
}
