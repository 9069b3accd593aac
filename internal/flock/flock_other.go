//go:build !unix

package flock

import "os"

// Lock creates path (mode 0600) if needed. Without flock(2) it cannot stop
// a second process: the server runs on Unix systems, and elsewhere (tests,
// tools) one process per store is up to the operator.
func Lock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
