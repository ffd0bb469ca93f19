package erofs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Seed images live in testdata/*.erofs (made by TestUpdateSeeds from
// small trees with mkfs.erofs 1.5) so that fuzzing works without
// erofs-utils; when mkfs.erofs is installed, fresh images are added too.

func addSeeds(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.erofs")
	if len(paths) == 0 {
		f.Fatal("no seed images in testdata")
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if !testing.Short() {
		for _, s := range seedSpecs {
			if data := makeSeed(f, s); data != nil {
				f.Add(data)
			}
		}
	}
}

// fuzzInput prepares a fuzz input: unless byte 0 (ignored by EROFS) is
// set, the superblock checksum is recomputed so that mutations reach
// past Open.
func fuzzInput(data []byte) []byte {
	if len(data) == 0 || data[0] != 0 {
		return data
	}
	data = bytes.Clone(data)
	if len(data) >= 1024+128 {
		fixChecksum(data)
	}
	return data
}

// watchdog crashes the process (so the fuzzer saves the input) if one
// input runs longer than d; reading an image must be bounded.
func watchdog(d time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(d):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic(fmt.Sprintf("one input ran longer than %v:\n%s", d, buf[:n]))
		}
	}()
	return func() { close(done) }
}

func FuzzOpen(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(10 * time.Second)()
		data = fuzzInput(data)
		if _, err := Open(bytes.NewReader(data)); err != nil && !isReported(err) {
			t.Fatalf("Open: unclassified error: %v", err)
		}
		walkImage(data, nil)
	})
}

func FuzzCheck(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(10 * time.Second)()
		data = fuzzInput(data)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := Check(ctx, bytes.NewReader(data), CheckOptions{VerifyData: true})
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Check ran for %v", time.Since(start))
		}
		// Without blobs, metadata that unified addressing maps onto an
		// extra device cannot be read: ErrNoBlob, not corruption.
		if err != nil && !isReported(err) && !errors.Is(err, ErrNoBlob) {
			t.Fatalf("Check: unclassified error: %v", err)
		}
		if err == nil {
			// What Check accepts, the reader must read without error.
			if err := readAll(data); err != nil {
				t.Fatalf("Check accepted the image, but reading failed: %v", err)
			}
		}
	})
}

// readAll reads everything reachable in an image (within budgets) and
// returns the first error an image that passed Check must not produce.
func readAll(data []byte) error {
	img, err := Open(bytes.NewReader(data))
	if err != nil {
		return err
	}
	defer img.Close()
	if _, err := img.ChunkTable(); err != nil && !errors.Is(err, ErrNoChunkTable) {
		return err
	}
	if _, err := img.StartSet(); err != nil && !errors.Is(err, ErrNoStartSet) {
		return err
	}
	if _, err := img.ChunkStates(); err != nil && !errors.Is(err, ErrNoChunkStates) {
		return err
	}
	budget := int64(64 << 20)
	seen := map[uint64]bool{}
	return fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := img.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Type() != d.Type() {
			return fmt.Errorf("%s: dirent type %v, inode type %v", p, d.Type(), fi.Mode().Type())
		}
		if _, err := img.Xattrs(p); err != nil {
			return err
		}
		st := fi.Sys().(*Stat)
		if seen[st.Nid] {
			return nil
		}
		seen[st.Nid] = true
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if _, err := img.ReadLink(p); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if _, err := img.Chunks(p); err != nil && !errors.Is(err, ErrNotChunked) {
				return err
			}
			if fi.Size() > budget {
				return nil
			}
			budget -= fi.Size()
			b, err := img.ReadFile(p)
			if errors.Is(err, ErrNoBlob) {
				return nil
			}
			if err != nil {
				return err
			}
			if int64(len(b)) != fi.Size() {
				return fmt.Errorf("%s: read %d bytes of %d", p, len(b), fi.Size())
			}
		}
		return nil
	})
}

// TestSeedImages checks that the committed seeds are valid images.
func TestSeedImages(t *testing.T) {
	paths, _ := filepath.Glob("testdata/*.erofs")
	if len(paths) < 3 {
		t.Fatalf("want at least 3 seed images, have %v", paths)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Check(context.Background(), bytes.NewReader(b), CheckOptions{VerifyData: true}); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		walkImage(b, nil)
		if err := readAll(b); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
