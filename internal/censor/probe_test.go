package censor

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

const probeWait = 500 * time.Millisecond

// The servers below all close a silent connection after probeWait; they
// differ in how they treat data.

// steady reads and discards everything and closes probeWait after accept,
// whatever it got: what a probe-resistant server does.
func steady(_ *testServer, c net.Conn) {
	c.SetReadDeadline(time.Now().Add(probeWait))
	io.Copy(io.Discard, c)
}

// chatty answers any data with an error message.
func chatty(_ *testServer, c net.Conn) {
	c.SetReadDeadline(time.Now().Add(probeWait))
	buf := make([]byte, 4096)
	answered := false
	for {
		n, err := c.Read(buf)
		if n > 0 && !answered {
			c.Write([]byte("ERR unknown command\n"))
			answered = true
		}
		if err != nil {
			return
		}
	}
}

// hasty closes as soon as it gets data it does not understand.
func hasty(_ *testServer, c net.Conn) {
	c.SetReadDeadline(time.Now().Add(probeWait))
	c.Read(make([]byte, 4096))
}

// sleepy never reads: it waits probeWait and closes. Its close time never
// changes, but closing with unread data makes the kernel send RST instead
// of FIN.
func sleepy(_ *testServer, c net.Conn) {
	time.Sleep(probeWait)
}

var testProber = Prober{Timeout: 1500 * time.Millisecond, Tolerance: 250 * time.Millisecond}

func TestProbeSteadyServerNotFlagged(t *testing.T) {
	srv := startServer(t, steady)
	// Record a first packet by sending it through a forward.
	c := newCensor(t, Config{})
	addr := startForward(t, c, srv.addr)
	conn := dial(t, addr)
	conn.Write([]byte("a first packet from a client, replayed by the prober"))
	nthEvent(t, c, 1)
	conn.Close()
	firsts := c.FirstPacketsTo(addr)
	if len(firsts) != 1 {
		t.Fatalf("%d first packets recorded", len(firsts))
	}

	rep := testProber.Probe(context.Background(), srv.addr, firsts)
	if rep.Distinguishable {
		t.Fatalf("steady server flagged: %v", rep.Reasons)
	}
	if len(rep.Baseline) < 3 || len(rep.Results) != 2+5 {
		t.Fatalf("%d baseline and %d probes", len(rep.Baseline), len(rep.Results))
	}
	kinds := map[string]int{}
	for _, r := range append(rep.Baseline, rep.Results...) {
		kinds[r.Kind]++
		if r.End != EndEOF || r.Received != 0 {
			t.Fatalf("%s: %+v", r.Name, r)
		}
	}
	if kinds[ProbeNothing] != 3 || kinds[ProbeReplay] != 1 || kinds[ProbeReplayModified] != 1 || kinds[ProbeRandom] != 5 {
		t.Fatalf("probe kinds %v", kinds)
	}
	if rep.BaselineMin < probeWait-100*time.Millisecond || rep.BaselineMax > probeWait+300*time.Millisecond {
		t.Fatalf("baseline %v–%v, server waits %v", rep.BaselineMin, rep.BaselineMax, probeWait)
	}
}

func TestProbeLeakyServersFlagged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(*testServer, net.Conn)
		want   string // in the reason of every data-carrying probe
	}{
		{"answers garbage", chatty, "received"},
		{"closes on garbage", hasty, "closed after"},
		{"RST on unread data", sleepy, "ended with reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, tc.handle)
			rep := testProber.Probe(context.Background(), srv.addr, [][]byte{[]byte("recorded first packet")})
			if !rep.Distinguishable {
				t.Fatalf("not flagged: %+v", rep.Results)
			}
			for _, r := range rep.Results {
				sentData := r.Name != "random-0" // random-0 sends nothing, like the baseline
				if sentData != r.Differs {
					t.Errorf("%s: differs %v (%s), want %v", r.Name, r.Differs, r.Why, sentData)
				}
				if sentData && (!strings.Contains(r.Why, tc.want) || r.Attempts != 3) {
					t.Errorf("%s: %q after %d attempts, want %q after 3", r.Name, r.Why, r.Attempts, tc.want)
				}
			}
		})
	}
}

// Magpie's own link server, with a fixed handshake deadline, looks like
// silence to random data and to a modified replay of a client's first
// message. An exact replay is another matter: Noise IK message 1 carries
// no replay protection, so today the server answers it, and the prober must
// flag exactly that (if the link gains a replay filter, the replay simply
// stops differing).
func TestProbeLinkServer(t *testing.T) {
	srv, key := linkServer(t, probeWait)
	c := newCensor(t, Config{})
	addr := startForward(t, c, srv.addr)
	if err := linkDial(t, addr, key); err != nil {
		t.Fatal(err)
	}
	firsts := c.FirstPacketsTo(addr)
	rep := testProber.Probe(context.Background(), srv.addr, firsts)
	for _, r := range rep.Results {
		if r.Kind == ProbeReplay {
			if r.Received > 0 != r.Differs {
				t.Errorf("%s: received %d, differs %v", r.Name, r.Received, r.Differs)
			}
			if r.Received > 0 {
				t.Logf("the link server answers a replayed first message: %s", r.Why)
			}
			continue
		}
		if r.Differs {
			t.Errorf("%s differs from silence: %s", r.Name, r.Why)
		}
	}
}

func TestProbeUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rep := testProber.Probe(context.Background(), addr, nil)
	if rep.Distinguishable {
		t.Fatalf("refused everywhere is still uniform: %v", rep.Reasons)
	}
	for _, r := range append(rep.Baseline, rep.Results...) {
		if r.End != EndRefused {
			t.Fatalf("%s: %+v", r.Name, r)
		}
	}
}
