// Package pgcodes keeps sign-up codes in PostgreSQL, for the servers of a
// cluster that share one database: a code made with magpie invite
// --signup --store postgres://… works on every server, and its uses are
// counted once across them. Like signupcodes.Book it stores only each
// code's SHA-256.
//
// Each Take is one UPDATE that decrements a count above zero, so two
// processes cannot both spend a code's last use. The table is pgcodes' own
// goose migration set, versioned in goose_pgcodes.
package pgcodes

import (
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/magpie-im/magpie/internal/closegate"
	"github.com/magpie-im/magpie/internal/pgkit"
	"github.com/magpie-im/magpie/internal/signupcodes"
	"github.com/magpie-im/magpie/invite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable is the goose version table of pgcodes' migrations.
const VersionTable = "goose_pgcodes"

// opTimeout bounds one call: a sign-up waits on it.
const opTimeout = 30 * time.Second

// Options configure Open. The zero value is usable.
type Options struct {
	// Logger receives failed refunds (never codes). Nil discards.
	Logger *slog.Logger
	// MaxConns is the pool's size; 0 keeps pgxpool's default. Sign-ups
	// are rare: 2 is plenty.
	MaxConns int32
}

// Book is the sign-up codes in one PostgreSQL database.
type Book struct {
	log  *slog.Logger
	pool *pgxpool.Pool

	gate closegate.Gate // Close waits for the calls in flight
}

var _ signupcodes.Codes = (*Book)(nil)

// errClosed is returned by calls after Close.
var errClosed = errors.New("sign-up codes: closed")

// Open connects to the database at url (postgres://…) and brings the
// table up to date.
func Open(ctx context.Context, url string, opts Options) (*Book, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("sign-up codes: open: %w", err)
	}
	pool, err := pgkit.Pool(ctx, url, opts.MaxConns, sub, VersionTable, log)
	if err != nil {
		return nil, fmt.Errorf("sign-up codes: open: %w", err)
	}
	return &Book{log: log, pool: pool}, nil
}

// Close waits for calls in flight and closes the connections.
func (b *Book) Close() error {
	if !b.gate.Close() {
		return errClosed
	}
	b.pool.Close()
	return nil
}

// exec runs fn with a context bounded by opTimeout while the book is
// open.
func (b *Book) exec(fn func(ctx context.Context) error) error {
	if !b.gate.Enter() {
		return errClosed
	}
	defer b.gate.Leave()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return fn(ctx)
}

// Add implements signupcodes.Codes.
func (b *Book) Add(uses int) ([]byte, error) {
	code, err := signupcodes.NewCode(uses)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(code)
	err = b.exec(func(ctx context.Context) error {
		_, err := b.pool.Exec(ctx, `INSERT INTO signup_codes (hash, uses) VALUES ($1, $2)`, h[:], uses)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sign-up codes: add: %w", err)
	}
	return code, nil
}

// Take implements signupcodes.Codes (and server.SignupCodes).
func (b *Book) Take(code []byte) (refund func(), ok bool, err error) {
	if len(code) != invite.SignupCodeSize {
		return func() {}, false, nil
	}
	h := sha256.Sum256(code)
	err = b.exec(func(ctx context.Context) error {
		// The row lock the UPDATE takes makes a concurrent Take wait and
		// then see the count this one left.
		var left int
		err := b.pool.QueryRow(ctx, `UPDATE signup_codes SET uses = uses - 1 WHERE hash = $1 AND uses > 0 RETURNING uses`, h[:]).Scan(&left)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		if left == 0 {
			// Tidy only: a refund in between makes the row count again,
			// and this leaves it.
			_, err = b.pool.Exec(ctx, `DELETE FROM signup_codes WHERE hash = $1 AND uses = 0`, h[:])
		}
		return err
	})
	if err != nil && !ok {
		return func() {}, false, fmt.Errorf("sign-up codes: take: %w", err)
	}
	if err != nil {
		// The use is spent; only the tidying failed.
		b.log.Warn("sign-up codes: removing a used-up code", "err", err)
	}
	if !ok {
		return func() {}, false, nil
	}
	return func() { b.refund(h) }, true, nil
}

// refund gives back one use of the code with hash h, recreating its row if
// the Take removed it.
func (b *Book) refund(h [32]byte) {
	err := b.exec(func(ctx context.Context) error {
		_, err := b.pool.Exec(ctx, `INSERT INTO signup_codes (hash, uses) VALUES ($1, 1)
			ON CONFLICT (hash) DO UPDATE SET uses = signup_codes.uses + 1`, h[:])
		return err
	})
	if err != nil {
		b.log.Error("sign-up codes: refunding a use", "err", err)
	}
}
