package erofs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// FuzzCompressed mutates compressed images (seeds testdata/z_*.erofs,
// mkfs.erofs -zlz4 / -zlz4hc) and reads every file three ways: whole
// (ReadFile), sequentially in odd pieces through one open file (its
// extent cache), and by ReadAt at the extents' edges. Errors must be
// classified; whatever Check accepts, all three must read without error
// and agree; nothing may panic, hang or allocate beyond the bounds.
func FuzzCompressed(f *testing.F) {
	paths, _ := filepath.Glob("testdata/z_*.erofs")
	if len(paths) == 0 {
		f.Fatal("no compressed seed images in testdata")
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	synth, _, _ := buildSynth(f)
	f.Add(synth)
	f.Fuzz(zfuzzOne)
}

// TestCompressedMutations runs FuzzCompressed's body over random
// mutations of the seeds, so that every test run (not just fuzzing)
// feeds damaged compressed images to the reader.
func TestCompressedMutations(t *testing.T) {
	paths, _ := filepath.Glob("testdata/z_*.erofs")
	n := 300
	if testing.Short() {
		n = 30
	}
	synth, _, _ := buildSynth(t)
	for _, p := range append(paths, "synth") {
		seed := synth
		if p != "synth" {
			var err error
			if seed, err = os.ReadFile(p); err != nil {
				t.Fatal(err)
			}
		}
		r := rand.New(rand.NewPCG(uint64(len(seed)), 11))
		limit := len(seed)
		if p == "synth" {
			limit = (synthDirBlk + 1) * synthBlk // its metadata: superblock, inodes, indexes, directory
		}
		for i := 0; i < n; i++ {
			data := bytes.Clone(seed)
			data[0] = 0 // fuzzInput recomputes the checksum
			for k := 1 + r.IntN(4); k > 0; k-- {
				at := disk.SuperOffset + r.IntN(limit-disk.SuperOffset)
				if r.IntN(2) == 0 {
					data[at] ^= byte(1 << r.IntN(8))
				} else {
					data[at] = byte(r.Uint32())
				}
			}
			t.Run(fmt.Sprintf("%s/%d", filepath.Base(p), i), func(t *testing.T) { zfuzzOne(t, data) })
		}
	}
}

func zfuzzOne(t *testing.T, data []byte) {
	defer watchdog(10 * time.Second)()
	data = fuzzInput(data)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, checkErr := Check(ctx, bytes.NewReader(data), CheckOptions{VerifyData: true})
	if errors.Is(checkErr, context.DeadlineExceeded) {
		t.Fatal("Check ran out of time")
	}
	if checkErr != nil && !isReported(checkErr) && !errors.Is(checkErr, ErrNoBlob) {
		t.Fatalf("Check: unclassified error: %v", checkErr)
	}
	err := readThreeWays(data)
	switch {
	case err != nil && !isReported(err) && !errors.Is(err, ErrNoBlob):
		t.Fatalf("reading: unclassified error: %v", err)
	case checkErr == nil && err != nil && !errors.Is(err, ErrNoBlob):
		// (Check without blobs does not read blob pclusters.)
		t.Fatalf("Check accepted the image, but reading failed: %v", err)
	}
}

// readThreeWays reads every regular file of the image (within a budget)
// whole, in pieces and at extent edges, and compares the results.
func readThreeWays(data []byte) error {
	img, err := Open(bytes.NewReader(data))
	if err != nil {
		return err
	}
	defer img.Close()
	budget := int64(32 << 20)
	entries := 2000
	return fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if entries--; entries < 0 {
			return fs.SkipAll
		}
		if d.Type()&fs.ModeSymlink != 0 {
			_, err := img.ReadLink(p)
			if errors.Is(err, fs.ErrInvalid) {
				// The entry says symlink, the inode does not: ReadLink
				// answers as the kernel's readlink does (EINVAL), and
				// Check reports the mismatch as corruption.
				if fi, lerr := img.Lstat(p); lerr == nil && fi.Mode()&fs.ModeSymlink == 0 {
					return nil
				}
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			// The entry says regular file, the inode does not: reading
			// it fails as the kernel's read does (EISDIR for a
			// directory), and Check reports the mismatch as corruption.
			return nil
		}
		if fi.Size() > budget {
			return nil
		}
		budget -= 2 * fi.Size()
		whole, err := img.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := img.Compression(p); err != nil && !errors.Is(err, ErrNotCompressed) {
			return err
		}
		return readZPieces(img, p, whole)
	})
}
