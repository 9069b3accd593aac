// Package signupcodes keeps a server's sign-up codes, for a server that
// opens accounts by invitation only (magpie serve --signup invite): each
// code allows a number of new accounts, and is spent one use per account.
//
// The codes live in one file in the server's data directory, rewritten
// atomically under a lock file, so that `magpie invite --signup` can add
// a code while the server runs and spends them. Codes are random
// (invite.SignupCodeSize bytes); the file stores only their SHA-256, so a
// copy of the data directory does not reveal working codes.
package signupcodes

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/magpie-im/magpie/internal/atomicfile"
	"github.com/magpie-im/magpie/internal/flock"
	"github.com/magpie-im/magpie/invite"
)

// File names in the data directory.
const (
	fileName = "signup-codes.json"
	lockName = "signup-codes.lock"
)

// MaxUses bounds one code's uses.
const MaxUses = 1_000_000

// Book is the sign-up codes of the server whose data directory is Dir.
type Book struct{ Dir string }

// file is the file's content: uses left, by the code's SHA-256 in hex.
type file struct {
	Uses map[string]int `json:"uses"`
}

func key(code []byte) string {
	sum := sha256.Sum256(code)
	return hex.EncodeToString(sum[:])
}

// inProcess serializes this process's updates; the lock file, the
// processes' (sign-ups are rare: one lock for every book is enough).
var inProcess sync.Mutex

// lockWait bounds the wait for another process's update, and pause is
// one wait between tries (variables for the tests).
var (
	lockWait = 5 * time.Second
	pause    = func() { time.Sleep(10 * time.Millisecond) }
)

// update runs fn on the file's content under the lock and writes what fn
// leaves when it returns true.
func (b Book) update(fn func(f *file) bool) error {
	inProcess.Lock()
	defer inProcess.Unlock()
	deadline := time.Now().Add(lockWait)
	lock, err := flock.Lock(filepath.Join(b.Dir, lockName))
	for errors.Is(err, flock.ErrLocked) && time.Now().Before(deadline) {
		pause()
		lock, err = flock.Lock(filepath.Join(b.Dir, lockName))
	}
	if err != nil {
		return fmt.Errorf("sign-up codes: %w", err)
	}
	defer lock.Close()
	f := file{Uses: map[string]int{}}
	data, err := os.ReadFile(filepath.Join(b.Dir, fileName))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("sign-up codes: %w", err)
	default:
		if err := json.Unmarshal(data, &f); err != nil {
			return fmt.Errorf("sign-up codes: %s is damaged: %w", fileName, err)
		}
		if f.Uses == nil {
			f.Uses = map[string]int{}
		}
	}
	if !fn(&f) {
		return nil
	}
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(b.Dir, fileName), append(out, '\n'), 0o600); err != nil {
		return fmt.Errorf("sign-up codes: %w", err)
	}
	return nil
}

// Codes is a book of sign-up codes: Book keeps them in a data
// directory, pgcodes in PostgreSQL for the servers of a cluster. Take is
// what server.SignupCodes asks for; Add is magpie invite --signup's.
type Codes interface {
	// Add makes a new code good for uses accounts (1 to MaxUses) and
	// returns it; only its hash is kept.
	Add(uses int) ([]byte, error)
	// Take spends one use of code: ok is false when the code is unknown
	// or used up (nothing changes then); refund gives the use back.
	Take(code []byte) (refund func(), ok bool, err error)
}

var _ Codes = Book{}

// NewCode checks uses and returns a new random code, for an Add.
func NewCode(uses int) ([]byte, error) {
	if uses < 1 || uses > MaxUses {
		return nil, fmt.Errorf("sign-up codes: a code allows 1 to %d accounts, not %d", MaxUses, uses)
	}
	code := make([]byte, invite.SignupCodeSize)
	if _, err := rand.Read(code); err != nil {
		return nil, err
	}
	return code, nil
}

// Add makes a new code good for uses accounts and returns it.
func (b Book) Add(uses int) ([]byte, error) {
	code, err := NewCode(uses)
	if err != nil {
		return nil, err
	}
	err = b.update(func(f *file) bool {
		f.Uses[key(code)] = uses
		return true
	})
	return code, err
}

// Take spends one use of code. ok is false when the code is unknown or
// used up (nothing changes then); refund gives the use back, for an
// account that was not made after all.
func (b Book) Take(code []byte) (refund func(), ok bool, err error) {
	k := key(code)
	err = b.update(func(f *file) bool {
		if len(code) != invite.SignupCodeSize || f.Uses[k] <= 0 {
			return false
		}
		ok = true
		if f.Uses[k]--; f.Uses[k] == 0 {
			delete(f.Uses, k)
		}
		return true
	})
	if err != nil || !ok {
		return func() {}, false, err
	}
	return func() {
		b.update(func(f *file) bool {
			f.Uses[k]++
			return true
		})
	}, true, nil
}
