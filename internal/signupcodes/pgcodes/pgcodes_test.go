package pgcodes_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/magpie-im/magpie/internal/pgtest"
	"github.com/magpie-im/magpie/internal/signupcodes"
	"github.com/magpie-im/magpie/internal/signupcodes/pgcodes"
	"github.com/magpie-im/magpie/internal/signupcodes/signupcodestest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.MainNoLeaks(m)) }

func migrated(url string) error {
	b, err := pgcodes.Open(context.Background(), url, pgcodes.Options{})
	if err != nil {
		return err
	}
	return b.Close()
}

func open(t *testing.T, url string) *pgcodes.Book {
	t.Helper()
	b, err := pgcodes.Open(context.Background(), url, pgcodes.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// Every test of the suite runs on two Books (two pools, as two server
// processes have) on one database.
func TestConformance(t *testing.T) {
	signupcodestest.Run(t, func(t *testing.T) (a, b signupcodes.Codes) {
		url := pgtest.NewDatabase(t, "pgcodes", migrated)
		return open(t, url), open(t, url)
	})
}

// The table holds hashes, not codes; a book closed refuses calls.
func TestTableHoldsHashes(t *testing.T) {
	url := pgtest.NewDatabase(t, "pgcodes", migrated)
	b := open(t, url)
	code, err := b.Add(3)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	db, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM signup_codes WHERE hash = $1 OR position($1 in hash) > 0`, code).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows holding the code itself: %d, %v", n, err)
	}
	if err := db.QueryRow(context.Background(), `SELECT uses FROM signup_codes`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("the code's row: %d uses, %v", n, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Take(code); err == nil {
		t.Error("Take on a closed book succeeded")
	}
	if err := b.Close(); err == nil {
		t.Error("a second Close succeeded")
	}
}

// complaints is a slog handler that keeps the records of Warn and above.
type complaints struct {
	mu      sync.Mutex
	records []string
}

func (c *complaints) Enabled(context.Context, slog.Level) bool { return true }
func (c *complaints) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		c.mu.Lock()
		c.records = append(c.records, r.Message)
		c.mu.Unlock()
	}
	return nil
}
func (c *complaints) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *complaints) WithGroup(string) slog.Handler      { return c }

// A used-up code leaves no row behind (the table does not grow with every
// code ever made), a refund brings its row back, and none of it logs a
// warning or an error.
func TestUsedUpCodeLeavesNoRow(t *testing.T) {
	url := pgtest.NewDatabase(t, "pgcodes", migrated)
	logged := &complaints{}
	b, err := pgcodes.Open(context.Background(), url, pgcodes.Options{Logger: slog.New(logged)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	db, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	rows := func() (n int) {
		t.Helper()
		if err := db.QueryRow(context.Background(), `SELECT count(*) FROM signup_codes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	code, err := b.Add(2)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Take(code); !ok || err != nil {
		t.Fatalf("first use: %v %v", ok, err)
	}
	if n := rows(); n != 1 {
		t.Fatalf("after one use of two: %d rows, want 1", n)
	}
	refund, ok, err := b.Take(code)
	if !ok || err != nil {
		t.Fatalf("second use: %v %v", ok, err)
	}
	if n := rows(); n != 0 {
		t.Fatalf("a used-up code: %d rows, want 0", n)
	}
	refund()
	if n := rows(); n != 1 {
		t.Fatalf("after a refund: %d rows, want 1", n)
	}
	if _, ok, err := b.Take(code); !ok || err != nil {
		t.Fatalf("the refunded use: %v %v", ok, err)
	}
	logged.mu.Lock()
	defer logged.mu.Unlock()
	if len(logged.records) > 0 {
		t.Fatalf("logged: %q", logged.records)
	}
}
