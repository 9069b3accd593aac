package blobstore

import (
	"syscall"
	"time"
)

// spaceCheckEvery bounds how often the free space is read: an upload's
// chunks come many a second.
const spaceCheckEvery = time.Second

// lowOnSpace reports whether the disk under the store has less free space
// than MinFree. Uploads stop there, so that the message store beside it
// keeps room to commit (a full disk costs messages their durability, a
// refused upload only a retry).
func (s *Store) lowOnSpace() bool {
	if s.opts.MinFree < 0 {
		return false
	}
	s.spaceMu.Lock()
	defer s.spaceMu.Unlock()
	if now := time.Now(); now.Sub(s.freeAt) >= spaceCheckEvery {
		var st syscall.Statfs_t
		if err := syscall.Statfs(s.dir, &st); err != nil {
			return false // cannot tell: the write itself will say
		}
		s.free, s.freeAt = int64(st.Bavail)*st.Bsize, now
	}
	return s.free < s.opts.MinFree
}
