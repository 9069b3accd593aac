package server

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// budgets are token buckets by key (an account, a source network, a pair of
// accounts), shared by every connection: reconnecting, or spreading over
// connections, does not refill them. Memory is bounded: when the table is
// full, buckets that have refilled are forgotten (a full bucket is the same
// as a new one), and if that frees too little, an eighth of the others at
// random. So the table never fails closed for everyone; under a flood from
// more keys than it holds, the cost is that some keys get a fresh budget.
type budgets struct {
	r      rate.Limit
	burst  int
	max    int
	mu     sync.Mutex
	m      map[string]*rate.Limiter
	shedAt time.Time // when the table was last full
}

// defaultBudgetKeys bounds a budget table: about 200 bytes a key.
const defaultBudgetKeys = 100_000

func newBudgets(r rate.Limit, burst, max int) *budgets {
	return &budgets{r: r, burst: burst, max: max, m: make(map[string]*rate.Limiter)}
}

// allow spends n tokens of key's budget, reporting whether it had them.
func (b *budgets) allow(key string, now time.Time, n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limiter(key, now).AllowN(now, n)
}

// limiter is key's bucket, made if it has none (making room if the table
// is full); b.mu is held.
func (b *budgets) limiter(key string, now time.Time) *rate.Limiter {
	l := b.m[key]
	if l == nil {
		if len(b.m) >= b.max {
			b.shed(now)
		}
		l = rate.NewLimiter(b.r, b.burst)
		b.m[key] = l
	}
	return l
}

// debt is how far key's budget is spent beyond empty (charge), in
// requests: 0 for a key with tokens left, or none spent.
func (b *budgets) debt(key string, now time.Time) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.m[key]; l != nil {
		return max(0, -l.TokensAt(now))
	}
	return 0
}

// charge spends a token of key's budget whether or not it has one, going
// into debt down to most (debt then stays at most: it must be paid off at
// the budget's rate, and a key deep in debt is not made to wait forever).
func (b *budgets) charge(key string, now time.Time, most float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.limiter(key, now); l.TokensAt(now) > -most {
		l.ReserveN(now, 1)
	}
}

// shedSince reports whether the table was full at or after t.
func (b *budgets) shedSince(t time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.shedAt.IsZero() && !b.shedAt.Before(t)
}

// shed makes room in a full table.
func (b *budgets) shed(now time.Time) {
	b.shedAt = now
	for k, l := range b.m {
		if l.TokensAt(now) >= float64(b.burst) {
			delete(b.m, k)
		}
	}
	n := len(b.m) - b.max*7/8
	for k := range b.m { // map order is random
		if n <= 0 {
			break
		}
		delete(b.m, k)
		n--
	}
}

// network is the source network an address belongs to, for budgets that
// must not multiply with addresses: its /24 for IPv4, its /56 for IPv6
// (what one subscriber or one small hosting customer usually holds).
func network(addr net.Addr) string {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return addr.String()
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.Mask(net.CIDRMask(24, 32)).String() + "/24"
	}
	return ip.Mask(net.CIDRMask(56, 128)).String() + "/56"
}
