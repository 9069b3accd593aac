// Package signuppow is the proof of work a server run with --signup pow asks
// of a new account: hashcash over a challenge the server issued.
//
// A challenge is stateless for the server: a version byte, the difficulty
// (leading zero bits), an expiry and a random nonce, authenticated with
// HMAC-SHA256 under a key the Issuer keeps in memory. A solution is a
// 64-bit counter such that
//
//	SHA-256(Domain ‖ challenge ‖ len(name) ‖ name ‖ device key ‖ counter)
//
// begins with at least the challenge's number of zero bits (name is the
// normalized username, its length one byte; the device key is the
// registering connection's 32-byte Noise static key; the counter is 8
// bytes, big-endian). Binding the username and the device key means a
// solved puzzle opens only the account it was solved for: it cannot be
// sold, or replayed for another name or from another device. Each
// challenge is good for one account: the Issuer remembers the nonces of
// spent challenges until they expire.
//
// Expected work is 2^bits hashes; Solve spreads it over every core.
package signuppow

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Domain separates this hash from any other use of SHA-256.
const Domain = "magpie signup pow v1\x00"

// Sizes of a challenge's parts.
const (
	version   = 1
	NonceSize = 16
	macSize   = sha256.Size
	// ChallengeSize is a challenge's encoded size: version, bits, expiry
	// (Unix milliseconds, 8 bytes), nonce, HMAC.
	ChallengeSize = 1 + 1 + 8 + NonceSize + macSize
)

// MaxBits bounds any difficulty: a challenge asking more is malformed
// (2^40 hashes is hours of a whole machine).
const MaxBits = 40

// Errors Verify returns; all of them mean "fetch a new challenge and solve
// it", and say why.
var (
	ErrMalformed = errors.New("the sign-up puzzle is malformed")
	ErrForged    = errors.New("the sign-up puzzle was not issued by this server (or the server restarted)")
	ErrExpired   = errors.New("the sign-up puzzle expired")
	ErrUsed      = errors.New("the sign-up puzzle was used already")
	ErrTooEasy   = errors.New("the sign-up puzzle is easier than the server now asks")
	ErrWrong     = errors.New("the sign-up puzzle's solution is wrong (for this username and device key)")
)

// Challenge is a challenge's public content.
type Challenge struct {
	Bits    int
	Expires time.Time
	Nonce   [NonceSize]byte
}

// Parse reads a challenge's public content (its MAC is the server's to
// check).
func Parse(b []byte) (Challenge, error) {
	if len(b) != ChallengeSize || b[0] != version || int(b[1]) > MaxBits {
		return Challenge{}, ErrMalformed
	}
	c := Challenge{Bits: int(b[1]), Expires: time.UnixMilli(int64(binary.BigEndian.Uint64(b[2:10])))}
	copy(c.Nonce[:], b[10:10+NonceSize])
	return c, nil
}

// prefix is the hash input before the counter.
func prefix(challenge []byte, name string, device [32]byte) []byte {
	p := make([]byte, 0, len(Domain)+len(challenge)+1+len(name)+len(device)+8)
	p = append(p, Domain...)
	p = append(p, challenge...)
	p = append(p, byte(len(name)))
	p = append(p, name...)
	return append(p, device[:]...)
}

// zeroBits is the number of leading zero bits of SHA-256(p ‖ counter),
// where p has 8 bytes of room at its end for the counter.
func zeroBits(p []byte, counter uint64) int {
	binary.BigEndian.PutUint64(p[len(p)-8:], counter)
	sum := sha256.Sum256(p)
	n := 0
	for i := 0; i < len(sum); i += 8 {
		w := binary.BigEndian.Uint64(sum[i:])
		n += bits.LeadingZeros64(w)
		if w != 0 {
			break
		}
	}
	return n
}

// Check reports whether counter solves challenge for name (normalized) and
// device: whether the hash has the challenge's number of leading zero bits.
func Check(challenge []byte, name string, device [32]byte, counter uint64) bool {
	c, err := Parse(challenge)
	if err != nil || len(name) > 255 {
		return false
	}
	p := append(prefix(challenge, name, device), make([]byte, 8)...)
	return zeroBits(p, counter) >= c.Bits
}

// Solve finds a counter that solves challenge for name (normalized) and
// device, on every core, until ctx ends.
func Solve(ctx context.Context, challenge []byte, name string, device [32]byte) (uint64, error) {
	c, err := Parse(challenge)
	if err != nil {
		return 0, err
	}
	if len(name) > 255 {
		return 0, fmt.Errorf("signuppow: username of %d bytes", len(name))
	}
	base := prefix(challenge, name, device)
	workers := runtime.GOMAXPROCS(0)
	var (
		found  atomic.Bool
		result atomic.Uint64
		wg     sync.WaitGroup
	)
	// Start at a random point so that two solvers of one challenge (the
	// same name and key: a retry) do not repeat each other's work.
	var seed [8]byte
	rand.Read(seed[:])
	start := binary.BigEndian.Uint64(seed[:])
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := append(slices.Clip(base), make([]byte, 8)...)
			for i := start + uint64(w); ; i += uint64(workers) {
				if zeroBits(p, i) >= c.Bits {
					if found.CompareAndSwap(false, true) {
						result.Store(i)
					}
					return
				}
				// Look at the stop signals every 4,096 hashes (about a
				// millisecond).
				if i/uint64(workers)%4096 == 0 && (found.Load() || ctx.Err() != nil) {
					return
				}
			}
		}()
	}
	wg.Wait()
	if !found.Load() {
		return 0, fmt.Errorf("solving the sign-up puzzle: %w", context.Cause(ctx))
	}
	return result.Load(), nil
}

// Issuer issues challenges and verifies their solutions.
type Issuer struct {
	key     [32]byte
	ttl     time.Duration
	maxUsed int
	now     func() time.Time

	mu   sync.Mutex
	used map[[NonceSize]byte]int64 // spent nonces → their expiry (Unix ms)
	// floor: challenges expiring at or before it are refused as expired.
	// It rises when the spent set is full, instead of forgetting spent
	// nonces (which would allow replays) or refusing everyone.
	floor int64
}

// Options configure an Issuer; zero fields take the defaults shown.
type Options struct {
	// TTL is how long a challenge may be solved and used (10 minutes:
	// the hardest default puzzle takes seconds on a laptop, a minute or
	// so on an old phone).
	TTL time.Duration
	// MaxUsed bounds the spent challenges remembered (100,000; about 50
	// bytes each). When full, the oldest go, and challenges as old as
	// them are refused as expired (their holders fetch new ones).
	MaxUsed int
	Now     func() time.Time
}

// NewIssuer makes an Issuer with a new random key: challenges issued
// before a restart are refused (as not issued by this server), and their
// holders fetch new ones.
func NewIssuer(o Options) *Issuer {
	if o.TTL <= 0 {
		o.TTL = 10 * time.Minute
	}
	if o.MaxUsed <= 0 {
		o.MaxUsed = 100_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	i := &Issuer{ttl: o.TTL, maxUsed: o.MaxUsed, now: o.Now, used: make(map[[NonceSize]byte]int64)}
	rand.Read(i.key[:])
	return i
}

// TTL is how long a challenge lasts.
func (i *Issuer) TTL() time.Duration { return i.ttl }

func (i *Issuer) mac(body []byte) []byte {
	m := hmac.New(sha256.New, i.key[:])
	m.Write(body)
	return m.Sum(nil)
}

// Issue returns a new challenge asking for bits leading zero bits
// (clamped to 0..MaxBits).
func (i *Issuer) Issue(bits int) []byte {
	bits = max(0, min(bits, MaxBits))
	b := make([]byte, 0, ChallengeSize)
	b = append(b, version, byte(bits))
	b = binary.BigEndian.AppendUint64(b, uint64(i.now().Add(i.ttl).UnixMilli()))
	var nonce [NonceSize]byte
	rand.Read(nonce[:])
	b = append(b, nonce[:]...)
	return append(b, i.mac(b)...)
}

// Verify checks that counter solves challenge for name (normalized) and
// device, that this Issuer issued challenge, that it has not expired and
// asks at least minBits, and that it was not used before; then it marks
// the challenge used. The error (one of this package's) says what failed.
func (i *Issuer) Verify(challenge []byte, name string, device [32]byte, counter uint64, minBits int) error {
	c, err := Parse(challenge)
	if err != nil {
		return err
	}
	body := challenge[:ChallengeSize-macSize]
	if !hmac.Equal(i.mac(body), challenge[len(body):]) {
		return ErrForged
	}
	now := i.now().UnixMilli()
	exp := c.Expires.UnixMilli()
	if exp <= now {
		return ErrExpired
	}
	if c.Bits < minBits {
		return ErrTooEasy
	}
	if !Check(challenge, name, device, counter) {
		return ErrWrong
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if exp <= i.floor {
		return ErrExpired
	}
	if _, ok := i.used[c.Nonce]; ok {
		return ErrUsed
	}
	if len(i.used) >= i.maxUsed {
		i.prune(now)
		if exp <= i.floor {
			return ErrExpired
		}
	}
	i.used[c.Nonce] = exp
	return nil
}

// prune makes room in a full spent set: expired nonces go; if that frees
// too little, the oldest eighth goes too, and the floor rises to the
// newest of them, so that none of them can be used again.
func (i *Issuer) prune(now int64) {
	for n, exp := range i.used {
		if exp <= now {
			delete(i.used, n)
		}
	}
	if len(i.used) < i.maxUsed*7/8 {
		return
	}
	exps := make([]int64, 0, len(i.used))
	for _, exp := range i.used {
		exps = append(exps, exp)
	}
	slices.Sort(exps)
	floor := exps[len(exps)/8]
	for n, exp := range i.used {
		if exp <= floor {
			delete(i.used, n)
		}
	}
	i.floor = max(i.floor, floor)
}

// Bits is the difficulty for a sign-up: minBits, plus one bit per doubling
// of each debt (a count of sign-ups beyond a free allowance, one per
// source: the whole server, the sign-up's network), at most maxBits. So
// the expected work per account grows about as fast as the excess sign-ups
// themselves, and the work for a flood of n accounts about as n².
func Bits(minBits, maxBits int, debts ...float64) int {
	b := minBits
	for _, d := range debts {
		if d > 0 {
			b += bits.Len64(uint64(d + 0.999)) // ⌈log2(1+d)⌉ for whole d
		}
	}
	return max(minBits, min(b, maxBits))
}
