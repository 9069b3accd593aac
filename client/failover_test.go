package client_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
)

// cuttable forwards to upstream until cut; then it black-holes: it keeps
// every connection open and forwards nothing, old or new, as a censor does.
type cuttable struct {
	ln    net.Listener
	cut   atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCuttable(t *testing.T, upstream string) *cuttable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttable{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			if p.cut.Load() {
				continue // black hole
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.track(up)
			p.wg.Add(2)
			go p.pipe(up, c)
			go p.pipe(c, up)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cuttable) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *cuttable) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if p.cut.Load() {
			continue // swallowed
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func TestFailoverWhenThePathIsBlackHoledMidConversation(t *testing.T) {
	pub := &publishing{}
	s := servertest.Start(t, server.Config{Endpoints: pub.current})
	pub.key = curve.PrivateKey(s.Key.Private)
	second := s.AddListener(t)
	proxy := newCuttable(t, s.Addr)
	front := proxy.ln.Addr().String()
	pub.set(t, endpoints.Endpoint{Transport: "tcp", Address: front, Priority: 0},
		endpoints.Endpoint{Transport: "tcp", Address: second, Priority: 5})
	inv := invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: []string{front}, Endpoints: mustMarshal(t, pub.current())}

	alice := newClient(t, inv, client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, inv, client.Options{})
	register(t, bob, "bob")
	bob.SetKeepalive(time.Second)

	got := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- bob.Listen(ctx, func(ev client.Event) {
			if ev.Kind == client.EventMessage {
				got <- ev.Text
			}
		})
	}()
	if _, err := alice.SendText(testCtx(t), "bob", "before"); err != nil {
		t.Fatal(err)
	}
	if text := waitText(t, got, 10*time.Second); text != "before" {
		t.Fatalf("got %q", text)
	}

	proxy.cut.Store(true)
	cutAt := time.Now()
	// The app retries until the send goes through, as a user would; the
	// first attempt stalls on the dead path and fails after StallTimeout.
	for attempt := 0; ; attempt++ {
		_, err := alice.SendText(testCtx(t), "bob", "during")
		if err == nil {
			break
		}
		if attempt > 5 {
			t.Fatalf("alice could not send after the cut: %v", err)
		}
	}
	for {
		text := waitText(t, got, 10*time.Second)
		if text == "during" {
			break
		}
	}
	took := time.Since(cutAt)
	t.Logf("message through another endpoint %v after the path was black-holed", took.Round(10*time.Millisecond))
	if took > 5*time.Second {
		t.Fatalf("failover took %v, want within 5 s", took)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitText(t *testing.T, ch <-chan string, d time.Duration) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(d):
		t.Fatalf("nothing arrived within %v", d)
		return ""
	}
}
