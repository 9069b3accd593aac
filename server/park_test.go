package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// waitGauge waits until metric name reads want.
func waitGauge(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := gather(t, reg, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Idle connections park (no goroutine reads them) and everything still
// works across parking: sends wake the sender's connection, pushes reach a
// parked recipient, acks wake it, a reconnect supersedes a parked
// connection, and shutdown ends parked connections at once.
func TestParkedConnectionsWork(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := servertest.Start(t, server.Config{Metrics: server.NewMetrics(reg), ParkIdleAfter: 30 * time.Millisecond})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	waitGauge(t, reg, "magpie_connections_parked", 2)

	for i := range 5 {
		id := clientconn.NewMessageID()
		mustSend(t, alice, "bob", id, "while parked")
		env := servertest.NextEnvelope(t, bob.Conn, wait)
		if env.ID != id {
			t.Fatalf("round %d: got %+v", i, env)
		}
		if err := bob.Ack(env.Seq); err != nil {
			t.Fatal(err)
		}
		// Both go quiet and park again.
		waitGauge(t, reg, "magpie_connections_parked", 2)
	}
	// The acks were read from parked connections: nothing is pushed again.
	bob2 := s.Reconnect(t, bob)
	select {
	case <-bob.Done():
	case <-time.After(wait):
		t.Fatal("the parked connection was not closed when the device reconnected")
	}
	for {
		p := servertest.NextPush(t, bob2.Conn, wait)
		if p.Envelope != nil {
			t.Fatalf("acknowledged envelope pushed again: %+v", p.Envelope)
		}
		if p.Drained {
			break
		}
	}
	waitGauge(t, reg, "magpie_connections_parked", 2)
	waitGauge(t, reg, "magpie_connections", 2)

	start := time.Now()
	s.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown with parked connections took %v", d)
	}
	for _, c := range []*servertest.User{alice, bob2} {
		select {
		case <-c.Done():
		case <-time.After(wait):
			t.Fatalf("%s still connected after shutdown", c.Name)
		}
	}
	if got := gather(t, reg, "magpie_connections_parked"); got != 0 {
		t.Errorf("parked = %v after shutdown", got)
	}
}

// The link's idle timeout holds while parked: a silent client is dropped,
// one that pings is not.
func TestParkedIdleTimeout(t *testing.T) {
	cfg := server.Config{ParkIdleAfter: 20 * time.Millisecond}
	cfg.Link.IdleTimeout = 400 * time.Millisecond
	s := servertest.Start(t, cfg)

	s.DialOptions.Link.KeepaliveInterval = 100 * time.Millisecond
	pinging := s.Register(t, "pinging")
	s.DialOptions.Link.KeepaliveInterval = time.Hour
	silent := s.Register(t, "silent")

	select {
	case <-silent.Done():
	case <-time.After(wait):
		t.Fatal("a silent parked connection outlived the idle timeout")
	}
	select {
	case <-pinging.Done():
		t.Fatalf("a pinging client was dropped: %v", pinging.Err())
	case <-time.After(time.Second):
	}
	// And it still works.
	if _, err := pinging.Send(ctx(t), "silent", clientconn.NewMessageID(), []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// Shutdown while a reader waits out ParkIdleAfter (not yet parked) ends
// the connection at once, not after the link's idle timeout.
func TestShutdownDuringParkWait(t *testing.T) {
	s := servertest.Start(t, server.Config{ParkIdleAfter: 5 * time.Second})
	alice := s.Register(t, "alice")
	time.Sleep(100 * time.Millisecond) // the reader is in its 5 s wait
	start := time.Now()
	s.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	select {
	case <-alice.Done():
	case <-time.After(wait):
		t.Fatal("still connected after shutdown")
	}
}

// A connection parks right after a keepalive without looking for more
// bytes; a request that follows the ping closely must still be answered
// at once (the poller's readiness is level-triggered).
func TestRequestsRightBehindPings(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	s.DialOptions.Link.KeepaliveInterval = time.Millisecond
	alice := s.Register(t, "alice")
	s.DialOptions.Link.KeepaliveInterval = time.Hour
	s.Register(t, "bob")
	for i := range 200 {
		time.Sleep(time.Duration(1+i%3) * time.Millisecond) // a ping or two first
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := alice.Send(c, "bob", clientconn.NewMessageID(), []byte("x"))
		cancel()
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
}
