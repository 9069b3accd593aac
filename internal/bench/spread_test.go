package bench

import (
	"strconv"
	"testing"

	"github.com/magpie-im/magpie/endpoints"
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
