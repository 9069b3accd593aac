//go:build !linux

package blobstore

import "os"

// datasync makes f's data and size durable (F_FULLFSYNC on Darwin).
func datasync(f *os.File) error { return f.Sync() }
