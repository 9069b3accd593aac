//go:build !unix

package sqlite

import "os"

// lockFile does nothing here: the server runs on Unix systems, and
// elsewhere (tests, tools) running one process per database is up to the
// operator.
func lockFile(string) (*os.File, error) { return nil, nil }
