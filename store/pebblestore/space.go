package pebblestore

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// A full disk must not stop acknowledgements (they free space), and a
// write that fails in Pebble's log leaves the database unable to write
// until it is opened again. So the store does not wait for the disk to
// fail: before each commit it asks how much room is left, and below the
// size of its reserve file it deletes the reserve, commits only the
// batch's acknowledgements in the room that gave, and refuses the other
// writes (store.ErrStorageFull) until there is room to make the reserve
// again.

const defaultReserve = 16 << 20

// reserveCheckEvery bounds how often a released reserve is tried again.
const reserveCheckEvery = 2 * time.Second

type space struct {
	path string
	size int64

	mu       sync.Mutex
	released bool
	checked  time.Time
}

func newSpace(path string, size int64) space {
	if size == 0 {
		size = defaultReserve
	}
	return space{path: path, size: size}
}

// free returns the bytes available to the server in the reserve's folder.
func (sp *space) free() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(sp.path), &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// beforeOpen releases the reserve if the disk is too full for the
// databases to open (they write a little as they do).
func (sp *space) beforeOpen() {
	if sp.size <= 0 {
		return
	}
	if n, err := sp.free(); err == nil && n < sp.size {
		sp.mu.Lock()
		sp.release()
		sp.mu.Unlock()
	}
}

// open makes the reserve if there is room.
func (sp *space) open() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.size > 0 && !sp.make() {
		sp.released, sp.checked = true, time.Now()
	}
}

// short reports whether writes other than acknowledgements must be
// refused: the disk has less room than the reserve's size, or the
// reserve was released and cannot be made yet. It releases the reserve
// when the room runs short.
func (sp *space) short() bool {
	if sp.size <= 0 {
		return false
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.released {
		if time.Since(sp.checked) < reserveCheckEvery {
			return true
		}
		sp.checked = time.Now()
		sp.released = !sp.make()
		return sp.released
	}
	if n, err := sp.free(); err == nil && n < sp.size {
		sp.release()
		return true
	}
	return false
}

// release deletes the reserve; mu is held.
func (sp *space) release() {
	if err := os.Remove(sp.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return
	}
	sp.released, sp.checked = true, time.Now()
}

// make writes the reserve if it is missing or short and the disk has room
// for it and as much again beside; mu is held. It reports whether the
// reserve is held.
func (sp *space) make() bool {
	if fi, err := os.Stat(sp.path); err == nil && fi.Size() == sp.size {
		if n, err := sp.free(); err == nil && n >= sp.size {
			return true
		}
		return false
	}
	if n, err := sp.free(); err != nil || n < 3*sp.size {
		return false
	}
	f, err := os.OpenFile(sp.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return false
	}
	// Written, not truncated to size: a sparse file would hold no blocks.
	_, err = io.CopyN(f, zeros{}, sp.size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(sp.path)
		return false
	}
	return true
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
