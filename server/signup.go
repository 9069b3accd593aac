package server

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/magpie-im/magpie/internal/signuppow"
	"github.com/magpie-im/magpie/wire"
)

// SignupPoW makes sign-up take a proof of work (internal/signuppow): a
// puzzle whose difficulty rises with the recent sign-up rate, server-wide
// and from the sign-up's source network, between MinBits and MaxBits.
// Nobody is ever refused for the rate alone: a flood makes the puzzle
// harder, for the flooding network first.
type SignupPoW struct {
	// Difficulty bounds, in leading zero bits of SHA-256: the expected
	// work is 2^bits hashes (18: about 22 ms on two idle cores of a
	// current server; 26: about 6 s; docs/SECURITY.md). Defaults 18 and
	// 26.
	MinBits, MaxBits int
	// Rate and Burst are the server-wide sign-ups that cost MinBits
	// (1 a minute, 60 at once); past them, each doubling of the excess
	// adds a bit. Per network, Config.SignupRate and SignupBurst are the
	// free allowance, and each doubling of its excess adds a bit too.
	Rate  rate.Limit
	Burst int
	// TTL is how long a challenge may be solved and used (10 minutes).
	TTL time.Duration
	// ChallengesPerConn bounds the challenges one connection may fetch
	// (8); ChallengeRate and ChallengeBurst, those one source network
	// may fetch (1 a second, 30 at once).
	ChallengesPerConn int
	ChallengeRate     rate.Limit
	ChallengeBurst    int
}

func (p *SignupPoW) setDefaults() {
	if p.MinBits == 0 {
		p.MinBits = 18
	}
	if p.MaxBits == 0 {
		p.MaxBits = 26
	}
	if p.Rate == 0 {
		p.Rate = rate.Every(time.Minute)
	}
	if p.Burst == 0 {
		p.Burst = 60
	}
	if p.TTL == 0 {
		p.TTL = 10 * time.Minute
	}
	if p.ChallengesPerConn == 0 {
		p.ChallengesPerConn = 8
	}
	if p.ChallengeRate == 0 {
		p.ChallengeRate = 1
	}
	if p.ChallengeBurst == 0 {
		p.ChallengeBurst = 30
	}
}

func (p *SignupPoW) check() error {
	if p.MinBits < 0 || p.MaxBits < p.MinBits || p.MaxBits > signuppow.MaxBits {
		return fmt.Errorf("server: sign-up puzzle difficulty %d to %d bits: want 0 ≤ min ≤ max ≤ %d", p.MinBits, p.MaxBits, signuppow.MaxBits)
	}
	return nil
}

// shedPenalty is the bits added to every puzzle while the per-network
// sign-up table is full (it then forgets networks, and with them their
// debts: the server-wide puzzle gets harder instead, and nobody is
// refused).
const shedPenalty = 2

// powState is a pow-mode server's puzzle issuer and sign-up rates.
type powState struct {
	cfg        SignupPoW
	issuer     *signuppow.Issuer
	challenges *budgets // by source network

	mu  sync.Mutex
	all *rate.Limiter // server-wide sign-ups
}

func newPoWState(cfg SignupPoW, now func() time.Time) *powState {
	return &powState{
		cfg:        cfg,
		issuer:     signuppow.NewIssuer(signuppow.Options{TTL: cfg.TTL, Now: now}),
		challenges: newBudgets(cfg.ChallengeRate, cfg.ChallengeBurst, defaultBudgetKeys),
		all:        rate.NewLimiter(cfg.Rate, cfg.Burst),
	}
}

// debtCap bounds a sign-up debt: a debt past it adds no more bits.
func (p *powState) debtCap() float64 {
	return float64(uint64(1) << min(p.cfg.MaxBits-p.cfg.MinBits+1, 40))
}

// bits is the difficulty of a sign-up from network now.
func (s *Server) powBits(network string, now time.Time) int {
	p := s.pow
	p.mu.Lock()
	all := max(0, -p.all.TokensAt(now))
	p.mu.Unlock()
	var penalty float64
	if s.signups.shedSince(now.Add(-p.cfg.TTL)) {
		penalty = 1<<shedPenalty - 1
	}
	return signuppow.Bits(p.cfg.MinBits, p.cfg.MaxBits, all, s.signups.debt(network, now), penalty)
}

// charge counts a sign-up from network toward the rates.
func (s *Server) powCharge(network string, now time.Time) {
	p := s.pow
	most := p.debtCap()
	p.mu.Lock()
	if p.all.TokensAt(now) > -most {
		p.all.ReserveN(now, 1)
	}
	p.mu.Unlock()
	s.signups.charge(network, now, most)
}

// signupChallenge answers a SignupChallengeRequest.
func (c *conn) signupChallenge(id uint64) {
	p := c.s.pow
	if p == nil {
		// No puzzle asked here: an empty answer says so.
		c.respond(&wire.Response{Id: id, Body: &wire.Response_SignupChallenge{SignupChallenge: &wire.SignupChallengeResponse{}}})
		return
	}
	now := c.s.cfg.Now()
	if c.challenges >= p.cfg.ChallengesPerConn {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_RATE_LIMITED, "too many sign-up puzzles on this connection; solve one you have, or reconnect", 1000)
		return
	}
	if !p.challenges.allow(c.network, now, 1) {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_RATE_LIMITED, "too many sign-up puzzles for your network; try again in a minute", 60_000)
		return
	}
	c.challenges++
	if c.unreg != nil && c.challenges == 1 {
		// Solving may take longer than RegisterTimeout (a hard puzzle, a
		// slow phone): the connection may wait for as long as its first
		// puzzle lasts (later ones do not extend it again).
		c.unreg.Reset(max(p.cfg.TTL, c.s.cfg.RegisterTimeout))
	}
	bits := c.s.powBits(c.network, now)
	ch := p.issuer.Issue(bits)
	parsed, _ := signuppow.Parse(ch)
	c.s.cfg.Metrics.puzzle(parsed.Bits)
	c.respond(&wire.Response{Id: id, Body: &wire.Response_SignupChallenge{SignupChallenge: &wire.SignupChallengeResponse{
		Challenge: ch, Bits: uint32(parsed.Bits), ExpiresMs: parsed.Expires.UnixMilli(),
	}}})
}

// checkPoW checks a registration's proof of work for name (normalized) and
// counts the sign-up; false means it answered the request.
func (c *conn) checkPoW(id uint64, req *wire.RegisterRequest, name string) bool {
	if len(req.GetPowChallenge()) == 0 {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_POW_REQUIRED, "this server asks new accounts to solve a puzzle first: fetch one, solve it and register again (magpie register does this by itself; update your client if it does not)", 0)
		return false
	}
	now := c.s.cfg.Now()
	// A challenge issued just before the rate rose is still good: a bit
	// of slack, so that honest sign-ups during a flood are not sent back
	// to solve again and again, while a stock of easy puzzles fetched
	// before a flood is worth at most half its work.
	least := c.s.powBits(c.network, now) - 1
	err := c.s.pow.issuer.Verify(req.GetPowChallenge(), name, c.lc.PeerKey(), req.GetPowCounter(), least)
	if err != nil {
		msg := err.Error() + "; fetch a new one and solve it"
		if errors.Is(err, signuppow.ErrWrong) {
			c.s.log.Debug("wrong sign-up puzzle solution", "remote", c.nc.RemoteAddr().String())
		}
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_POW_REQUIRED, msg, 0)
		return false
	}
	c.s.powCharge(c.network, now)
	return true
}
