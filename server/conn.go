package server

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/internal/netpoll"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/username"
	"github.com/magpie-im/magpie/wire"
)

var errTooManyFiles = syscall.EMFILE

// conn is one client connection.
type conn struct {
	s        *Server
	nc       net.Conn
	lc       *link.Conn
	accepted time.Time
	hs       router.Handshake // when its handshake began (accepted) and was done (handshakeDone); the client's dial (hello); written under the server's mu
	network  string           // source network (budgets, connection caps)
	// unauthCounted: counted toward its network's cap (Server.admit);
	// guarded by the server's mu.
	unauthCounted bool
	handshaking   *list.Element // its place in Server.handshaking; guarded by the server's mu
	unreg         *time.Timer   // closes an unregistered connection at RegisterTimeout
	challenges    int           // sign-up puzzles fetched (reader goroutine only)

	// Set by the reader goroutine only (at handshake or registration); read
	// by it too, so it needs no lock.
	dev     store.DeviceAddr
	authed  bool
	sub     *router.Subscription
	limiter *rate.Limiter
	sends   chan struct{} // semaphore: sends awaiting commit
	pending sync.WaitGroup

	// raw is the descriptor of a connection that can be parked when idle
	// (a plain TCP connection: the link reads it without buffering); nil
	// if it cannot.
	raw    syscall.RawConn
	poller *netpoll.Poller

	mu      sync.Mutex
	idle    sync.Cond // signalled when writing becomes false
	outbox  []*[]byte // marshalled frames, in frameBufs' buffers
	spare   []*[]byte // the other half of outbox's double buffer
	wbatch  [][]byte  // the batch being written, as WriteMessages takes it (writer only)
	queued  int       // bytes in outbox
	held    int       // bytes in outbox and in the batch being written (the server's budget)
	writing bool
	closed  bool

	// Parking (park.go), guarded by mu.
	parked   *netpoll.Waiter // non-nil while parked: no goroutine reads
	stopping bool            // Shutdown asked the reader to stop
	idledOut bool            // the idle timeout passed while parked
}

func (c *conn) serve() {
	var hello *wire.ServerHello
	lc, err := link.Server(c.nc, c.s.cfg.Key, c.s.cfg.Link, func(peer [32]byte, payload []byte) ([]byte, error) {
		// The first message is genuine (not a probe, not a replay): the
		// connection no longer holds a place for handshakes.
		c.s.handshakeDone(c)
		var err error
		hello, err = c.hello(peer, payload)
		if err != nil {
			return nil, err
		}
		return proto.Marshal(hello)
	})
	// A handshake that failed before its first message verified still
	// holds its place: untrack gives it up.
	c.s.cfg.Metrics.handshake(err == nil, time.Since(c.accepted))
	if err != nil {
		// Probes and broken clients look alike; neither is worth more than
		// a debug line.
		c.s.log.Debug("handshake failed", "remote", c.nc.RemoteAddr().String(), "err", err)
		c.nc.Close()
		c.s.untrack(c)
		return
	}
	c.s.cfg.Metrics.connected(1)
	c.mu.Lock()
	c.lc = lc
	closed := c.closed
	c.mu.Unlock()
	if closed || hello.GetVersion() == 0 {
		// Shutting down, or no common version: the hello said so.
		c.finish(nil)
		return
	}
	c.limiter = rate.NewLimiter(c.s.cfg.RequestRate, c.s.cfg.RequestBurst)
	c.sends = make(chan struct{}, c.s.cfg.MaxInflightSends)
	if c.authed {
		c.s.authenticated(c)
		c.sub = c.s.router.AttachAt(c.dev, c, c.hs)
	} else {
		// Connections that never register would otherwise be kept for
		// as long as they ping.
		c.unreg = time.AfterFunc(c.s.cfg.RegisterTimeout, c.close)
	}
	c.raw = c.parkable()
	c.run(false)
}

// run reads and handles requests until the connection ends (and then
// cleans up) or parks (and then returns: wake runs it again). readable
// says bytes are known to be waiting.
func (c *conn) run(readable bool) {
	err, parked := c.readLoop(readable)
	if !parked {
		c.finish(err)
	}
}

// finish ends a connection whose reader has stopped.
func (c *conn) finish(err error) {
	if c.unreg != nil {
		c.unreg.Stop()
	}
	if c.sub != nil {
		c.sub.Detach()
	}
	// Sends already read get their commit and their answer.
	c.pending.Wait()
	c.flushAndClose()
	c.s.cfg.Metrics.connected(-1)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("connection ended", "remote", c.nc.RemoteAddr().String(), "device", c.dev.Device, "err", err)
	}
	c.nc.Close()
	c.s.untrack(c)
}

// hello runs inside the handshake, after the client's static key and hello
// have been authenticated. An error here makes the connection a probe: the
// server answers nothing.
func (c *conn) hello(peer [32]byte, payload []byte) (*wire.ServerHello, error) {
	var ch wire.ClientHello
	if err := proto.Unmarshal(payload, &ch); err != nil {
		return nil, fmt.Errorf("client hello: %w", err)
	}
	reply := &wire.ServerHello{ServerTimeMs: c.s.cfg.Now().UnixMilli()}
	if ch.GetMinVersion() > wire.Version || ch.GetMaxVersion() < wire.Version {
		reply.Error = &wire.Error{
			Code:    wire.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION,
			Message: fmt.Sprintf("this server speaks protocol version %d; update your client", wire.Version),
		}
		return reply, nil
	}
	reply.Version = wire.Version
	c.s.mu.Lock()
	c.hs.Attempt = ch.GetDialAttempt() // handshakeDone has set the rest
	c.s.mu.Unlock()
	dev, err := c.s.cfg.Store.DeviceByKey(context.Background(), peer)
	switch {
	case err == nil:
		c.dev, c.authed = dev.DeviceAddr, true
		reply.Device = &wire.DeviceAddress{User: dev.User, Device: dev.Device}
		counts, err := c.s.cfg.Store.KeyCounts(context.Background(), dev.DeviceAddr)
		if err != nil {
			return nil, fmt.Errorf("key counts: %w", err)
		}
		reply.KeyCounts = wireCounts(counts)
	case errors.Is(err, store.ErrNotFound):
		// Unregistered: it may Register.
	default:
		return nil, fmt.Errorf("device lookup: %w", err)
	}
	return reply, nil
}

// readLoop reads and handles frames until the connection ends, returning
// why, or until it has been quiet for ParkIdleAfter and is parked (see
// park.go), returning parked. readable skips the first wait.
func (c *conn) readLoop(readable bool) (err error, parked bool) {
	linger := c.s.cfg.ParkIdleAfter
	for {
		if err, stop := c.stopped(); stop {
			return err, false
		}
		if c.raw != nil && !readable {
			ok, err := netpoll.WaitReadable(c.nc, c.raw, linger)
			if err != nil {
				return fmt.Errorf("waiting for the client: %w", err), false
			}
			if !ok {
				c.lc.ReleaseReadBuffer() // the last request is handled
				if c.park() {
					return nil, true
				}
				// Not parked: stopping (Shutdown's deadline may be what
				// ended the wait), or the poller refused (c.raw is nil
				// now). Look again before blocking in a read.
				continue
			}
		}
		readable = false
		msg, err := c.lc.ReadFrame()
		if err != nil {
			return err, false
		}
		if msg == nil {
			// A keepalive (or a fragment): an idle client says it is
			// still there. Park at once rather than after ParkIdleAfter,
			// so that keeping tens of thousands of idle clients alive
			// costs little more than their pings. Readiness is
			// level-triggered, so a request right behind the ping wakes
			// the connection again at once; that is rarer than a ping
			// alone, so parking without looking first saves a system call
			// per ping. Between fragments the rest usually waits already:
			// look first.
			if c.raw != nil && !c.lc.MidMessage() {
				c.lc.ReleaseReadBuffer()
				if c.park() {
					return nil, true
				}
			}
			linger = 0
			continue
		}
		linger = c.s.cfg.ParkIdleAfter
		frame, err := wire.DecodeClientFrame(msg)
		if err != nil {
			var re *wire.RequestError
			if errors.As(err, &re) {
				c.respondErr(re.ID, re.Code, re.Message, 0)
				continue
			}
			// Not a frame at all: say so once, then hang up.
			c.respondErr(0, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, "undecodable frame; closing the connection", 0)
			return err, false
		}
		switch body := frame.Body.(type) {
		case *wire.ClientFrame_Ack:
			if c.sub != nil {
				if err := c.sub.Ack(body.Ack.GetSeqs()); err != nil {
					return err, false
				}
			}
		case *wire.ClientFrame_Request:
			if why := c.overBudget(); why != "" {
				retry := uint32(time.Second / time.Millisecond)
				c.respondErr(body.Request.GetId(), wire.ErrorCode_ERROR_CODE_RATE_LIMITED, "too many requests "+why+"; slow down", retry)
				continue
			}
			c.handle(body.Request)
		}
	}
}

// overBudget spends a request from the connection's, the account's and
// the network's budgets, or says which one is spent. Only the reader
// goroutine calls it.
func (c *conn) overBudget() string {
	now := c.s.cfg.Now()
	switch {
	case !c.limiter.AllowN(now, 1):
		return "on this connection"
	case c.authed && !c.s.accountRequests.allow(c.dev.User, now, 1):
		return "from your account"
	case !c.authed && !c.s.networkRequests.allow(c.network, now, 1):
		// Devices with an account have the account's budget; many of
		// them may share one address (a proxy, a relay).
		return "from your network"
	}
	return ""
}

func (c *conn) handle(req *wire.Request) {
	id := req.GetId()
	if !c.authed {
		switch req.Body.(type) {
		case *wire.Request_Register, *wire.Request_Ping, *wire.Request_GetEndpoints, *wire.Request_SignupChallenge:
		default:
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "this device is not registered; register a username first", 0)
			return
		}
	}
	switch body := req.Body.(type) {
	case *wire.Request_Ping:
		c.respond(&wire.Response{Id: id, Body: &wire.Response_Ping{Ping: &wire.PingResponse{
			ServerTimeMs: c.s.cfg.Now().UnixMilli(), Echo: body.Ping.GetEcho(),
		}}})
		if tok := body.Ping.GetDrain(); tok != 0 && c.sub != nil {
			c.sub.Drain(tok)
		}
	case *wire.Request_GetEndpoints:
		resp := &wire.GetEndpointsResponse{}
		if c.s.cfg.Endpoints != nil {
			if l := c.s.cfg.Endpoints(); l != nil && listVersion(l) > body.GetEndpoints.GetHaveVersion() {
				resp.List = l
			}
		}
		c.respond(&wire.Response{Id: id, Body: &wire.Response_GetEndpoints{GetEndpoints: resp}})
	case *wire.Request_Register:
		c.register(id, body.Register)
	case *wire.Request_SignupChallenge:
		c.signupChallenge(id)
	case *wire.Request_Lookup:
		c.lookup(id, body.Lookup)
	case *wire.Request_Send:
		c.send(id, body.Send)
	case *wire.Request_SetKeys:
		c.setKeys(id, body.SetKeys)
	case *wire.Request_GetBundles:
		c.getBundles(id, body.GetBundles)
	case *wire.Request_Upload:
		c.upload(id, body.Upload)
	case *wire.Request_Download:
		c.download(id, body.Download)
	case *wire.Request_GroupChange:
		c.groupChange(id, body.GroupChange)
	case *wire.Request_GroupLog:
		c.groupLog(id, body.GroupLog)
	case *wire.Request_GroupSend:
		c.groupSend(id, body.GroupSend)
	}
}

func (c *conn) register(id uint64, req *wire.RegisterRequest) {
	if c.authed {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_ALREADY_REGISTERED, fmt.Sprintf("this device is already registered as %q", c.dev.User), 0)
		return
	}
	name, err := username.Normalize(req.GetUsername())
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_USERNAME_INVALID, err.Error(), 0)
		return
	}
	// By invitation, the codes are the limit (an office may sign up a
	// whole group at once); by proof of work, the puzzle, which gets
	// harder with the rate; otherwise, each network's rate is.
	if c.s.pow != nil {
		if !c.checkPoW(id, req, name) {
			return
		}
	} else if c.s.cfg.SignupCodes == nil && !c.s.signups.allow(network(c.nc.RemoteAddr()), c.s.cfg.Now(), 1) {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_RATE_LIMITED, "too many sign-ups from your network; try again in a minute", 60_000)
		return
	}
	refund := func() {}
	if codes := c.s.cfg.SignupCodes; codes != nil {
		r, ok, err := codes.Take(req.GetSignupCode())
		switch {
		case err != nil:
			c.s.log.Error("sign-up codes", "err", err)
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
			return
		case !ok:
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_FORBIDDEN, "this server opens accounts by invitation only, and this invite has no sign-up code, or its code is used up: ask the server's operator for an invite to sign up with (magpie invite --signup)", 0)
			return
		}
		refund = r
	}
	dev, err := c.s.cfg.Store.CreateUser(context.Background(), name, c.lc.PeerKey(), c.s.cfg.Now())
	if err != nil {
		refund()
	}
	switch {
	case errors.Is(err, store.ErrUserExists):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_USERNAME_TAKEN, fmt.Sprintf("username %q is taken; choose another", name), 0)
		return
	case errors.Is(err, store.ErrKeyInUse):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_ALREADY_REGISTERED, "this device key is already registered", 0)
		return
	case err != nil:
		c.s.log.Error("registering user", "err", err)
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	c.dev, c.authed = dev.DeviceAddr, true
	c.s.authenticated(c)
	if c.unreg != nil {
		c.unreg.Stop()
	}
	c.sub = c.s.router.AttachAt(c.dev, c, c.hs)
	c.s.devices.forget(dev.User)
	c.s.log.Info("registered", "user", dev.User)
	c.respond(&wire.Response{Id: id, Body: &wire.Response_Register{Register: &wire.RegisterResponse{
		Device: &wire.DeviceAddress{User: dev.User, Device: dev.Device},
	}}})
}

func (c *conn) lookup(id uint64, req *wire.LookupRequest) {
	name, err := username.Normalize(req.GetUsername())
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_USERNAME_INVALID, err.Error(), 0)
		return
	}
	u, err := c.s.cfg.Store.User(context.Background(), name)
	if err != nil {
		c.storeErr(id, name, err)
		return
	}
	resp := &wire.LookupResponse{Username: u.Name, IdentityKey: u.Identity}
	for _, d := range u.Devices {
		resp.Devices = append(resp.Devices, &wire.DeviceInfo{Device: d.Device, Key: d.Key[:], CreatedMs: d.Created.UnixMilli(), RegistrationId: d.RegistrationID})
	}
	c.respond(&wire.Response{Id: id, Body: &wire.Response_Lookup{Lookup: resp}})
}

func (c *conn) send(id uint64, req *wire.SendRequest) {
	to, err := username.Normalize(req.GetRecipient())
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNKNOWN_USER, fmt.Sprintf("no user %q: %v", req.GetRecipient(), err), 0)
		return
	}
	var cid [store.ClientIDSize]byte
	copy(cid[:], req.GetClientMessageId())
	if req.GetEphemeral() {
		c.sendEphemeral(id, to, cid, req)
		return
	}
	// Bound the sends waiting for commit; when full, stop reading (TCP
	// back-pressure reaches the client).
	c.sends <- struct{}{}
	c.pending.Add(1)
	e := &store.Enqueue{From: c.dev, ClientID: cid, To: to, Payload: req.GetPayload()}
	if req.GetPerDevice() {
		e.Payload, e.Devices = nil, perDeviceSend(req)
	}
	c.s.router.Send(e, func(e *store.Enqueue, err error) {
		defer c.pending.Done()
		<-c.sends
		switch {
		case errors.Is(err, router.ErrClosed):
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNAVAILABLE, "server shutting down; retry", 1000)
		case errors.Is(err, store.ErrStorageFull):
			c.storageFull(id)
		case err != nil:
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; the message was not stored; retry", 1000)
		case e.Err != nil:
			c.storeErr(id, to, e.Err)
		default:
			if !e.Duplicate {
				c.s.cfg.Metrics.in()
			}
			c.respondSend(id, e.Sent, e.Duplicate, len(e.Queued))
		}
	})
}

func (c *conn) sendEphemeral(id uint64, to string, cid [store.ClientIDSize]byte, req *wire.SendRequest) {
	now := c.s.cfg.Now()
	e := &router.Ephemeral{From: c.dev, ClientID: cid, Payload: req.GetPayload(), Sent: now}
	if req.GetPerDevice() {
		e.Payloads = make(map[uint32][]byte, len(req.GetDevicePayloads()))
		for _, d := range req.GetDevicePayloads() {
			e.Payloads[d.GetDevice()] = d.GetPayload()
		}
	}
	n := c.s.router.SendEphemeral(to, e)
	if n == 0 {
		// Nobody online: say whether the user exists at all, so that a typo
		// gets an answer.
		if _, err := c.s.cfg.Store.User(context.Background(), to); err != nil {
			c.storeErr(id, to, err)
			return
		}
	}
	c.respondSend(id, now, false, n)
}

func (c *conn) storeErr(id uint64, user string, err error) {
	var mm *store.MismatchError
	switch {
	case errors.As(err, &mm):
		c.respond(&wire.Response{Id: id, Error: mismatchErr(mm)})
	case errors.Is(err, store.ErrNoKeys):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_NO_KEYS, fmt.Sprintf("%q has not set up end-to-end encryption yet (an old client?)", user), 0)
	case errors.Is(err, store.ErrNotFound):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_UNKNOWN_USER, fmt.Sprintf("no user %q on this server; check the spelling", user), 0)
	case errors.Is(err, store.ErrQueueFull):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_QUEUE_FULL, fmt.Sprintf("%q has too many undelivered messages; try again after they come online", user), 60_000)
	case errors.Is(err, store.ErrSenderShare):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_QUEUE_FULL, fmt.Sprintf("%q has as many undelivered messages from you as one sender may have waiting; yours go once they read some", user), 60_000)
	case errors.Is(err, store.ErrStorageFull):
		c.storageFull(id)
	default:
		c.s.log.Error("store", "err", err)
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
	}
}

// storageFullRetry is when a client should try again after STORAGE_FULL.
const storageFullRetry = 10 * time.Second

// storageFull answers a write refused because the server's disk is full:
// nothing was stored, and the client keeps it and tries again.
func (c *conn) storageFull(id uint64) {
	c.s.log.Warn("the disk is full; refusing writes until space returns")
	c.respondErr(id, wire.ErrorCode_ERROR_CODE_STORAGE_FULL, "the server's disk is full, so nothing new is stored; your message waits on your device and goes when there is space", uint32(storageFullRetry/time.Millisecond))
}

func (c *conn) respondErr(id uint64, code wire.ErrorCode, msg string, retryMs uint32) {
	c.s.cfg.Metrics.error(strings.TrimPrefix(code.String(), "ERROR_CODE_"))
	c.respond(&wire.Response{Id: id, Error: &wire.Error{Code: code, Message: msg, RetryAfterMs: retryMs}})
}

// sendAnswer is a send's answer with its frame, in one allocation instead
// of five: enqueue marshals it at once and keeps no reference to it.
type sendAnswer struct {
	frame wire.ServerFrame
	body  wire.ServerFrame_Response
	resp  wire.Response
	send  wire.Response_Send
	ok    wire.SendResponse
}

// respondSend answers a send that was taken: stored (or a duplicate),
// or, for an ephemeral one, handed to devices online.
func (c *conn) respondSend(id uint64, at time.Time, duplicate bool, devices int) {
	a := new(sendAnswer)
	a.ok.ServerTimeMs, a.ok.Duplicate, a.ok.Devices = at.UnixMilli(), duplicate, uint32(devices)
	a.send.Send = &a.ok
	a.resp.Id, a.resp.Body = id, &a.send
	a.body.Response = &a.resp
	a.frame.Body = &a.body
	c.enqueue(&a.frame)
}

func (c *conn) respond(r *wire.Response) {
	c.enqueue(&wire.ServerFrame{Body: &wire.ServerFrame_Response{Response: r}})
}

// pushFrame is a push's frame with the parts a queued item needs in one
// allocation instead of seven: enqueue marshals it at once and keeps no
// reference to it.
type pushFrame struct {
	frame    wire.ServerFrame
	body     wire.ServerFrame_Push
	push     wire.Push
	env      wire.Push_Envelope
	envelope wire.Envelope
	rcpt     wire.Push_Receipt
	receipt  wire.Receipt
	addr     wire.DeviceAddress
}

// Push implements router.Mailbox.
func (c *conn) Push(p router.Push) bool {
	pf := new(pushFrame)
	pf.frame.Body = &pf.body
	pf.body.Push = &pf.push
	push := &pf.push
	switch {
	case p.KeysLow != nil:
		push.Body = &wire.Push_KeysLow{KeysLow: wireCounts(*p.KeysLow)}
	case p.Drained:
		push.Body = &wire.Push_QueueDrained{QueueDrained: &wire.QueueDrained{Drain: p.DrainTok}}
	case p.Ephemeral != nil:
		e := p.Ephemeral
		env := &wire.Envelope{
			Sender:          &wire.DeviceAddress{User: e.From.User, Device: e.From.Device},
			ClientMessageId: e.ClientID[:],
			Payload:         e.Payload,
			ServerTimeMs:    e.Sent.UnixMilli(),
			Ephemeral:       true,
		}
		if e.Group != ([16]byte{}) {
			env.GroupId = e.Group[:]
		}
		push.Body = &wire.Push_Envelope{Envelope: env}
	case p.Message.Kind == store.KindReceipt:
		m := p.Message
		pf.addr.User, pf.addr.Device = m.From.User, m.From.Device
		r := &pf.receipt
		r.Seq = m.Seq
		r.ClientMessageId = m.ClientID[:]
		r.Recipient = &pf.addr
		r.DeliveredMs = m.Sent.UnixMilli()
		pf.rcpt.Receipt = r
		push.Body = &pf.rcpt
	default:
		m := p.Message
		pf.addr.User, pf.addr.Device = m.From.User, m.From.Device
		env := &pf.envelope
		env.Seq = m.Seq
		env.Sender = &pf.addr
		env.ClientMessageId = m.ClientID[:]
		env.Payload = m.Payload
		env.ServerTimeMs = m.Sent.UnixMilli()
		switch m.Kind {
		case store.KindGroupMessage:
			env.GroupId = m.Group[:]
		case store.KindGroupChange:
			env.GroupId = m.Group[:]
			env.Kind = wire.EnvelopeKind_ENVELOPE_KIND_GROUP_CHANGE
		}
		pf.env.Envelope = env
		push.Body = &pf.env
	}
	ok := c.enqueue(&pf.frame)
	if ok && (p.Message != nil || p.Ephemeral != nil) {
		c.s.cfg.Metrics.out(p.Ephemeral != nil)
	}
	return ok
}

// Superseded implements router.Mailbox: the same device connected again.
func (c *conn) Superseded() {
	c.s.log.Debug("connection superseded", "remote", c.nc.RemoteAddr().String(), "user", c.dev.User, "device", c.dev.Device)
	c.close()
}

// enqueue adds a frame to the outbox and starts a writer if none runs. It
// never blocks: a client that does not read is dropped once its outbox
// exceeds MaxOutbox (its queued messages stay in the store).
func (c *conn) enqueue(f *wire.ServerFrame) bool {
	bp := frameBufs.Get().(*[]byte)
	b, err := wire.Marshal((*bp)[:0], f)
	if err != nil {
		putFrameBuf(bp)
		c.s.log.Error("encoding frame", "err", err)
		return false
	}
	*bp = b
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		putFrameBuf(bp)
		return false
	}
	if c.queued+len(b) > c.s.cfg.MaxOutbox {
		c.mu.Unlock()
		putFrameBuf(bp)
		c.s.log.Info("client not reading; dropping connection", "remote", c.nc.RemoteAddr().String(), "user", c.dev.User, "queued", c.queued, "frame", len(b))
		c.close()
		return false
	}
	c.outbox = append(c.outbox, bp)
	c.queued += len(b)
	c.held += len(b)
	if c.s.unsent.Add(int64(len(b))) > c.s.cfg.MaxUnsent {
		// Over the server's budget for output not yet written: the
		// connection holding the most (a client not reading) goes.
		c.mu.Unlock()
		c.s.shedUnsent()
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return false
		}
	}
	if !c.writing {
		c.writing = true
		go c.flush()
	}
	c.mu.Unlock()
	return true
}

func (c *conn) flush() {
	for {
		c.mu.Lock()
		batch, n := c.outbox, c.queued
		if len(batch) == 0 || c.lc == nil {
			c.writing = false
			c.idle.Broadcast()
			c.mu.Unlock()
			return
		}
		c.outbox, c.spare, c.queued = c.spare[:0], nil, 0
		c.mu.Unlock()
		for _, bp := range batch {
			c.wbatch = append(c.wbatch, *bp)
		}
		err := c.lc.WriteMessages(c.wbatch)
		// The link has sealed (copied) every frame: the buffers are free.
		clear(c.wbatch)
		c.wbatch = c.wbatch[:0]
		for i, bp := range batch {
			putFrameBuf(bp)
			batch[i] = nil
		}
		c.mu.Lock()
		c.held -= n
		if !c.closed {
			c.spare = batch[:0]
		}
		c.mu.Unlock()
		c.s.unsent.Add(-int64(n))
		if err != nil {
			c.close()
		}
	}
}

// frameBufs holds the buffers frames are marshalled into, from enqueue
// until the link has sealed them: one allocation fewer per frame.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1536); return &b }}

// maxPooledFrame bounds the buffers kept in frameBufs, so that one large
// frame (a 256 KiB payload) does not stay pinned in the pool.
const maxPooledFrame = 16 << 10

func putFrameBuf(bp *[]byte) {
	if cap(*bp) > maxPooledFrame {
		return
	}
	*bp = (*bp)[:0]
	frameBufs.Put(bp)
}

// stopReading makes the reader return (graceful shutdown) while leaving the
// connection open for the answers still owed.
// A connection still in its handshake is closed outright.
func (c *conn) stopReading() {
	c.mu.Lock()
	handshaking := c.lc == nil
	c.stopping = true
	resume := c.unparkLocked()
	c.mu.Unlock()
	switch {
	case handshaking:
		c.close()
	case resume:
		go c.run(false) // it sees stopping and finishes
	default:
		c.nc.SetReadDeadline(time.Now())
	}
}

// flushAndClose waits for the outbox to empty (bounded by the link's write
// timeout), then closes.
func (c *conn) flushAndClose() {
	c.mu.Lock()
	for c.writing && !c.closed {
		c.idle.Wait()
	}
	c.mu.Unlock()
	c.close() // a writer still blocked fails fast now
	c.mu.Lock()
	for c.writing {
		c.idle.Wait()
	}
	c.mu.Unlock()
}

func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.s.unsent.Add(-int64(c.queued)) // a batch being written is let go by its writer
	c.held -= c.queued
	for _, bp := range c.outbox {
		putFrameBuf(bp)
	}
	c.outbox, c.spare, c.queued = nil, nil, 0
	c.idle.Broadcast()
	// A parked descriptor leaves the poller before it is closed (see
	// netpoll.Waiter.Cancel); its reader then runs to clean up.
	resume := c.unparkLocked()
	c.mu.Unlock()
	c.nc.Close()
	if resume {
		go c.run(false)
	}
}

// listVersion reads the version of a signed list the server itself signed.
func listVersion(s *wire.SignedEndpointList) uint64 {
	var l wire.EndpointList
	if proto.Unmarshal(s.GetList(), &l) != nil {
		return 0
	}
	return l.GetVersion()
}
