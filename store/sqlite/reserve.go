package sqlite

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// A full disk must not stop acknowledgements: they are what frees space
// (each removes queued items), and a server that cannot take them keeps
// every queue full for good. The store keeps a reserve file beside the
// database; when a commit fails for lack of space, it deletes the
// reserve and commits the batch's acknowledgements alone, refusing its
// sends item by item (ErrStorageFull). Once there is room again, the
// reserve is made anew.

// defaultReserve is the reserve's size: a thousand pages of write-ahead
// log, many times what an acknowledgement batch writes (the log is reused
// from its start after each checkpoint, and deleted rows' pages are reused
// by the database).
const defaultReserve = 4 << 20

// reserveCheckEvery bounds how often a released reserve is looked at.
const reserveCheckEvery = 10 * time.Second

type reserve struct {
	path string
	size int64

	mu       sync.Mutex
	released bool      // deleted for lack of space, not yet made anew
	checked  time.Time // when making it anew was last tried
}

// make writes the reserve file if it is missing or short and the disk has
// room for it and as much again; it reports whether the reserve is held.
func (r *reserve) make() bool {
	if r.size <= 0 {
		return false
	}
	if fi, err := os.Stat(r.path); err == nil && fi.Size() == r.size {
		return true
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(r.path), &st); err != nil || int64(st.Bavail)*st.Bsize < 2*r.size {
		return false
	}
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return false
	}
	// Written, not truncated to size: a sparse file would hold no blocks.
	_, err = io.CopyN(f, zeros{}, r.size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(r.path)
		return false
	}
	return true
}

// open makes the reserve if it can (a store opened on a full disk runs
// without one until its first commit that fails for lack of space).
func (r *reserve) open() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.make()
}

// release deletes the reserve, giving its space to acknowledgements: until
// it is made anew (spent), writes are refused.
func (r *reserve) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.size <= 0 {
		return // no reserve: nothing to keep space for
	}
	if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return
	}
	r.released, r.checked = true, time.Now()
}

// spent reports whether the reserve was released and there is still no
// room to make it anew (looked at most every reserveCheckEvery).
func (r *reserve) spent() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.released {
		return false
	}
	if time.Since(r.checked) >= reserveCheckEvery {
		r.checked = time.Now()
		r.released = !r.make()
	}
	return r.released
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
