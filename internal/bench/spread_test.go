package bench

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// The load tool's clients spread over a cluster's nodes (listed at one
// priority) as devices do, and keep the invite's order for the rest.
func TestSpread(t *testing.T) {
	eps := []endpoints.Endpoint{
		{Transport: "tcp", Address: "n1:7443", Priority: 100},
		{Transport: "tcp", Address: "n2:7443", Priority: 100},
		{Transport: "tcp", Address: "n3:7443", Priority: 100},
		{Transport: "obfs", Address: "n1:8443", Priority: 50},
	}
	first := map[string]int{}
	for i := range 300 {
		got := spread(eps, []byte("key "+strconv.Itoa(i)))
		if len(got) != 4 || got[3].Address != "n1:8443" {
			t.Fatalf("key %d: %v, want the obfs endpoint last, where the invite has it", i, got)
		}
		first[got[0].Address]++
	}
	for _, a := range []string{"n1:7443", "n2:7443", "n3:7443"} {
		if n := first[a]; n < 70 || n > 130 {
			t.Errorf("%s first for %d of 300 keys, want about 100: %v", a, n, first)
		}
	}
}

// Against several nodes, deliveries are split by whether sender and
// recipient were on the same node; each delivery lands in exactly one
// part, the right one.
func TestChatSplitsDeliveriesByNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		node func(i int, peer []int) string
		same bool // every message stays on one node
	}{
		{"each client its own node", func(i int, _ []int) string { return strconv.Itoa(i) }, false},
		{"each pair on one node", func(i int, peer []int) string { return strconv.Itoa(min(i, peer[i])) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			relay, err := StartRawRelay("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Close()
			o := chatOpts()
			if err := o.setDefaults(); err != nil {
				t.Fatal(err)
			}
			var conns []chatConn
			for i := range o.Clients {
				c, err := dialRaw(ctx, relay.Addr(), uint32(i), o.Inflight)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			peer := pairs(o.Clients, newRand()) // an even number: pairs only
			nodes := make([]string, o.Clients)
			for i := range nodes {
				nodes[i] = tc.node(i, peer)
			}
			r, err := runChat(ctx, conns, peer, nodes, o, 0)
			if err != nil {
				t.Fatal(err)
			}
			checkChat(t, r)
			if r.DeliverSameNode == nil || r.DeliverCrossNode == nil {
				t.Fatal("no split by node")
			}
			want, other := r.DeliverCrossNode, r.DeliverSameNode
			if tc.same {
				want, other = other, want
			}
			if want.Count != r.Received || other.Count != 0 {
				t.Errorf("same node %d, across nodes %d of %d deliveries", r.DeliverSameNode.Count, r.DeliverCrossNode.Count, r.Received)
			}
		})
	}
}

// Against one node there is nothing to split.
func TestChatOneNodeHasNoSplit(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := chatOpts()
	o.Duration = 200 * time.Millisecond
	r, err := RunChat(ctx, s.Invite, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.DeliverSameNode != nil || r.DeliverCrossNode != nil {
		t.Errorf("split by node against one node: %+v, %+v", r.DeliverSameNode, r.DeliverCrossNode)
	}
}
