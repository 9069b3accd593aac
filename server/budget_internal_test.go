package server

import (
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestNetwork(t *testing.T) {
	for addr, want := range map[net.Addr]string{
		&net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}:      "203.0.113.0/24",
		&net.TCPAddr{IP: net.ParseIP("203.0.113.250"), Port: 2}:    "203.0.113.0/24",
		&net.TCPAddr{IP: net.ParseIP("::ffff:198.51.100.9")}:       "198.51.100.0/24",
		&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2ff:aa::1")}:      "2001:db8:1:200::/56",
		&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2ff:ffff::ffff")}: "2001:db8:1:200::/56",
		&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}:            "/run/x.sock",
	} {
		if got := network(addr); got != want {
			t.Errorf("network(%v) = %q, want %q", addr, got, want)
		}
	}
}

// A budget is shared by every caller with the key, and a full table makes
// room instead of refusing new keys: it never fails closed for everyone.
func TestBudgetsNeverFailClosed(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := newBudgets(rate.Every(time.Hour), 2, 100)
	for i, want := range []bool{true, true, false} {
		if got := b.allow("a", now, 1); got != want {
			t.Fatalf("request %d of a budget of 2: allowed %v", i+1, got)
		}
	}
	// 10,000 keys, each spending its budget: the table stays bounded and
	// every new key gets its budget.
	for i := range 10_000 {
		k := fmt.Sprint("k", i)
		if !b.allow(k, now, 2) {
			t.Fatalf("new key %d refused with %d keys held", i, len(b.m))
		}
		if len(b.m) > 100 {
			t.Fatalf("%d keys held, max 100", len(b.m))
		}
	}
	// Buckets that have refilled go first: spent ones are kept when that
	// makes room.
	b = newBudgets(rate.Every(time.Second), 1, 4)
	b.allow("spent", now, 1)
	for _, k := range []string{"x", "y", "z"} {
		b.allow(k, now.Add(-time.Hour), 0) // full
	}
	if !b.allow("new", now, 1) {
		t.Fatal("a new key refused")
	}
	if b.allow("spent", now, 1) {
		t.Fatal("a spent budget was forgotten while refilled ones could go")
	}
}

// A pow-mode server's per-network sign-up table, when full, makes the
// puzzle harder for everyone (the networks it forgets lose their debts)
// instead of refusing anyone; debts raise one network's puzzle only.
func TestPoWTableFullGetsHarder(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg := SignupPoW{MinBits: 10, MaxBits: 20, Rate: rate.Inf}
	cfg.setDefaults()
	s := &Server{signups: newBudgets(rate.Every(time.Hour), 1, 4), pow: newPoWState(cfg, func() time.Time { return now })}
	for i := range 4 {
		s.powCharge(fmt.Sprint("net", i), now)
	}
	s.powCharge("net0", now)
	s.powCharge("net0", now)
	if got := s.powBits("net0", now); got != cfg.MinBits+2 {
		t.Errorf("a network two sign-ups past its allowance: %d bits, want %d", got, cfg.MinBits+2)
	}
	if got := s.powBits("new", now); got != cfg.MinBits {
		t.Fatalf("a new network while the table has room: %d bits, want %d", got, cfg.MinBits)
	}
	s.powCharge("net4", now) // the table is full: it sheds
	if got := s.powBits("new", now); got != cfg.MinBits+shedPenalty {
		t.Errorf("a new network while the table sheds: %d bits, want %d", got, cfg.MinBits+shedPenalty)
	}
	later := now.Add(cfg.TTL + time.Second)
	if got := s.powBits("new", later); got != cfg.MinBits {
		t.Errorf("a new network a puzzle's lifetime after the table shed: %d bits, want %d", got, cfg.MinBits)
	}
}
