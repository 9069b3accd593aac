//go:build !unix

package blobstore

import "os"

// lockDir opens dir/LOCK; without flock it cannot stop a second process.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
