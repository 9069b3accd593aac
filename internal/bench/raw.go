package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The raw baseline: a bare relay over loopback TCP, with no Noise, no
// store and no protocol beyond length-prefixed frames. It bounds what any
// server could do on the same box, so that Magpie's figures can be given
// as ratios to it.
//
// Frames are a 4-byte big-endian length, a type byte and a body:
//
//	hello   (client → relay)  client id (4 bytes), answered by an empty ack
//	send    (client → relay)  recipient id (4 bytes), payload
//	deliver (relay → client)  payload
//	ack     (relay → client)  the payload's first 12 bytes
const (
	rawHello   = 1
	rawSend    = 2
	rawDeliver = 3
	rawAck     = 4
	rawMaxBody = 1 << 20
)

// RawRelay is a running raw relay.
type RawRelay struct {
	ln    net.Listener
	mu    sync.Mutex
	peers map[uint32]*rawPeer
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

type rawPeer struct {
	mu sync.Mutex
	w  *bufio.Writer
	nc net.Conn
}

func (p *rawPeer) write(typ byte, parts ...[]byte) error {
	n := 1
	for _, b := range parts {
		n += len(b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(n))
	hdr[4] = typ
	p.w.Write(hdr[:])
	for _, b := range parts {
		p.w.Write(b)
	}
	return p.w.Flush()
}

func readRawFrame(r *bufio.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n > rawMaxBody {
		return 0, nil, fmt.Errorf("raw frame of %d bytes", n)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[4], body, nil
}

// StartRawRelay starts a raw relay on addr (127.0.0.1:0 for any port).
func StartRawRelay(addr string) (*RawRelay, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &RawRelay{ln: ln, peers: map[uint32]*rawPeer{}, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the relay's address.
func (r *RawRelay) Addr() string { return r.ln.Addr().String() }

// Close stops the relay and closes its connections.
func (r *RawRelay) Close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *RawRelay) accept() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns[nc] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(nc)
	}
}

func (r *RawRelay) serve(nc net.Conn) {
	defer r.wg.Done()
	defer func() {
		nc.Close()
		r.mu.Lock()
		delete(r.conns, nc)
		r.mu.Unlock()
	}()
	br := bufio.NewReader(nc)
	me := &rawPeer{w: bufio.NewWriter(nc), nc: nc}
	for {
		typ, body, err := readRawFrame(br)
		if err != nil {
			return
		}
		switch {
		case typ == rawHello && len(body) == 4:
			r.mu.Lock()
			r.peers[binary.BigEndian.Uint32(body)] = me
			r.mu.Unlock()
			if me.write(rawAck) != nil { // the client waits for this
				return
			}
		case typ == rawSend && len(body) >= 4+12:
			r.mu.Lock()
			to := r.peers[binary.BigEndian.Uint32(body[:4])]
			r.mu.Unlock()
			if to == nil {
				return
			}
			if to.write(rawDeliver, body[4:]) != nil {
				to.nc.Close()
			}
			if me.write(rawAck, body[4:16]) != nil {
				return
			}
		default:
			return
		}
	}
}

// rawConn is a chat client of the raw relay.
type rawConn struct {
	nc      net.Conn
	p       *rawPeer
	br      *bufio.Reader
	pending chan chan error // FIFO of sends awaiting their ack
	once    sync.Once
	closed  chan struct{}
}

func dialRaw(ctx context.Context, addr string, id uint32, inflight int) (*rawConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &rawConn{nc: nc, p: &rawPeer{w: bufio.NewWriter(nc), nc: nc}, br: bufio.NewReader(nc),
		pending: make(chan chan error, inflight), closed: make(chan struct{})}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	if err := c.p.write(rawHello, b[:]); err != nil {
		nc.Close()
		return nil, err
	}
	if typ, _, err := readRawFrame(c.br); err != nil || typ != rawAck {
		nc.Close()
		return nil, fmt.Errorf("raw relay hello: %v", err)
	}
	return c, nil
}

var errRawClosed = errors.New("raw relay connection closed")

func (c *rawConn) send(ctx context.Context, to int, _ uint64, payload []byte) error {
	done := make(chan error, 1)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(to))
	c.p.mu.Lock() // order the pending queue as the frames are written
	select {
	case c.pending <- done:
	case <-c.closed:
		c.p.mu.Unlock()
		return errRawClosed
	}
	c.p.mu.Unlock()
	if err := c.p.write(rawSend, b[:], payload); err != nil {
		c.close()
		return err
	}
	select {
	case err := <-done:
		return err
	case <-c.closed:
		return errRawClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *rawConn) receive(onMsg func([]byte), _ func()) {
	defer c.close()
	for {
		typ, body, err := readRawFrame(c.br)
		if err != nil {
			return
		}
		switch typ {
		case rawDeliver:
			onMsg(body)
		case rawAck:
			select {
			case done := <-c.pending:
				done <- nil
			default:
				return // an ack for nothing sent
			}
		default:
			return
		}
	}
}

func (c *rawConn) close() {
	c.once.Do(func() {
		close(c.closed)
		c.nc.Close()
	})
}

// MaxRawClients is the most clients the raw baseline can run: the relay
// is in the tool's own process, so each client costs it two descriptors.
const MaxRawClients = PerProcess / 2

// RunRawChat runs the chat scenario against a raw relay that it starts on
// loopback and stops when done.
func RunRawChat(ctx context.Context, o ChatOptions) (*ChatReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if o.Clients > MaxRawClients {
		return nil, fmt.Errorf("bench chat: the raw relay runs in this process, which holds both ends of each connection: at most %d clients (asked for %d)", MaxRawClients, o.Clients)
	}
	relay, err := StartRawRelay("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer relay.Close()
	start := time.Now()
	conns := make([]chatConn, 0, o.Clients)
	for i := range o.Clients {
		c, err := dialRaw(ctx, relay.Addr(), uint32(i), o.Inflight)
		if err != nil {
			for _, c := range conns {
				c.close()
			}
			return nil, fmt.Errorf("bench chat: raw relay: %w", err)
		}
		conns = append(conns, c)
	}
	r, err := runChat(ctx, conns, pairs(o.Clients, newRand()), nil, o, time.Since(start))
	if r != nil {
		r.Target = "raw"
	}
	return r, err
}
