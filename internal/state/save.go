package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Save writes f to path, creating its directory (0700) if needed, so that
// at every instant, a crash included, path is a complete file, the old
// or the new one, and path+".prev" is either missing or complete:
//
//  1. the new state goes to a temporary file (0600) beside path, synced;
//  2. the current file, if it parses, gets a second name, path+".prev",
//     by a hard link renamed over the old .prev (a rename of path itself
//     would leave no path until step 3, and a restart in that gap would
//     forget every mount); a damaged file never replaces a good .prev;
//  3. the temporary file is renamed over path, and the directory synced.
//
// A path holding a newer version is left alone (ErrNewerVersion): an
// older daemon must not destroy what a newer one wrote.
//
// Save does not order concurrent calls: the caller serializes them, or
// an older snapshot may land after a newer one.
func Save(path string, f *File) error {
	err := save(path, f, nil)
	if err != nil && !errors.Is(err, ErrNewerVersion) { // that one names the file already
		err = fmt.Errorf("state: saving %s: %w", path, err)
	}
	return err
}

// save is Save with step called before each filesystem operation: tests
// fail steps to show that every prefix of the sequence leaves good files.
func save(path string, f *File, step func(name string) error) (err error) {
	do := func(name string, op func() error) error {
		if step != nil {
			if err := step(name); err != nil {
				return err
			}
		}
		return op()
	}
	out := File{Version: Version, Images: f.Images, Mounts: f.Mounts}
	if out.Images == nil {
		out.Images = []Image{}
	}
	if out.Mounts == nil {
		out.Mounts = []Mount{}
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')

	dir := filepath.Dir(path)
	if err := do("mkdir", func() error { return os.MkdirAll(dir, 0o700) }); err != nil {
		return err
	}
	var keepPrev bool
	if err := do("check", func() error {
		cur, exists, err := loadOne(path, readFile)
		if errors.Is(err, ErrNewerVersion) {
			return fmt.Errorf("%w; not overwritten", err)
		}
		keepPrev = exists && err == nil && cur.damage == nil
		return nil
	}); err != nil {
		return err
	}

	var tmp *os.File
	if err := do("create", func() (err error) {
		tmp, err = os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
		return err
	}); err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close() // a second close after step "close" only errors
			_ = do("cleanup", func() error { return os.Remove(tmp.Name()) })
		}
	}()
	for _, s := range []struct {
		name string
		op   func() error
	}{
		{"write", func() error { _, err := tmp.Write(data); return err }},
		{"sync", tmp.Sync},
		{"close", tmp.Close},
	} {
		if err := do(s.name, s.op); err != nil {
			return err
		}
	}

	if keepPrev {
		// Named after the temporary file, so unique among concurrent
		// saves; a crash may leave it behind, harmless.
		link := tmp.Name() + ".prev"
		err := do("link", func() error { return os.Link(path, link) })
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// path went away since the check: nothing to keep.
		case err != nil:
			return err
		default:
			if err := do("rename-prev", func() error { return os.Rename(link, path+".prev") }); err != nil {
				_ = do("cleanup", func() error { return os.Remove(link) })
				return err
			}
		}
	}
	if err := do("rename", func() error { return os.Rename(tmp.Name(), path) }); err != nil {
		return err
	}
	renamed = true
	return do("sync-dir", func() error {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	})
}
