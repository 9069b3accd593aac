package pgblobs

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/magpie-im/magpie/blobstore"
)

// PostgreSQL's disk_full is the store's ErrNoSpace, which the server
// answers as storage full; blobstore's own errors pass unchanged.
func TestWrap(t *testing.T) {
	full := &pgconn.PgError{Code: "53100", Message: "could not extend file"}
	if err := wrap("append", full); !errors.Is(err, blobstore.ErrNoSpace) || !errors.As(err, new(*pgconn.PgError)) {
		t.Errorf("wrap(disk_full) = %v, want ErrNoSpace wrapping the PgError", err)
	}
	if err := wrap("append", &pgconn.PgError{Code: "23505"}); errors.Is(err, blobstore.ErrNoSpace) {
		t.Errorf("wrap(unique_violation) = %v, is ErrNoSpace", err)
	}
	if err := wrap("status", blobstore.ErrNotFound); err != blobstore.ErrNotFound {
		t.Errorf("wrap(ErrNotFound) = %v, want it bare", err)
	}
}
