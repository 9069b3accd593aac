package pgcodes_test

import (
	"context"
	"os"
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
