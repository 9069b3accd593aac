package blobstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync makes f's data and size durable. fdatasync skips the inode
// timestamps, which nothing here relies on.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
