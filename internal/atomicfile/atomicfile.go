// Package atomicfile writes files so that a crash leaves either the old
// content or the new, never a torn mix: write a temporary file in the same
// directory, sync it, rename it into place, sync the directory.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes data to a temporary file in path's directory, syncs
// it, and renames it into place, so that a crash leaves either no file or the
// whole file.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Create writes data to path only if path does not exist yet, atomically:
// the file appears whole or not at all, and when several callers race, the
// first one's content wins and the others get it back (created is false).
// It is for keys and secrets generated on first use, which every process
// sharing a directory must agree on.
func Create(path string, data []byte, perm os.FileMode) (content []byte, created bool, err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return nil, false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return nil, false, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, false, err
	}
	if err := f.Close(); err != nil {
		return nil, false, err
	}
	// Link, unlike rename, fails if path exists: the first caller wins.
	if err := os.Link(tmp, path); err != nil {
		if os.IsExist(err) {
			existing, rerr := os.ReadFile(path)
			return existing, false, rerr
		}
		return nil, false, err
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, false, err
	}
	defer d.Close()
	return data, true, d.Sync()
}
