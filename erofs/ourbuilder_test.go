package erofs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
)

// TestOurBuilderImages checks images from erofsd's own builder (built
// from the shared test tree, with a sparse file beyond 4 GiB): Check
// accepts them, verifying every blob chunk against the chunk table, and
// the reader agrees with the source tree and with the kernel.
func TestOurBuilderImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a tree with a 4 GiB sparse file")
	}
	require.Host(t, require.Root) // the shared test tree has a mode-0000 file only root can read
	src := filepath.Join(t.TempDir(), "src")
	if _, err := testtree.Generate(src, testtree.Options{Big: true}); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"self-contained", "blob"} {
		t.Run(mode, func(t *testing.T) {
			opts := build.Options{ChunkSize: 64 << 10}
			if mode == "blob" {
				opts.BlobDir = t.TempDir()
			}
			path, blobPaths, res := testimage.Build(t, src, opts)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var blobs BlobResolver
			blobPath := ""
			if len(blobPaths) > 0 {
				blobs = DirBlobs(opts.BlobDir)
				blobPath = blobPaths[0]
			}
			start := time.Now()
			rep, err := Check(context.Background(), f, CheckOptions{Blobs: blobs, VerifyData: true})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			t.Logf("Check took %v: %+v", time.Since(start), rep)
			if rep.Files != res.Files || rep.Dirs != res.Dirs || rep.Symlinks != res.Symlinks || rep.DataBytes != res.DataBytes {
				t.Errorf("report %+v, builder says %+v", rep, res)
			}
			if mode == "blob" && (rep.ChunksVerified != res.UniqueChunk || rep.ChunksVerified == 0) {
				t.Errorf("verified %d chunks, blob has %d", rep.ChunksVerified, res.UniqueChunk)
			}
			img, err := Open(f, WithBlobs(blobs))
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if mode == "blob" {
				if _, err := img.ChunkTable(); err != nil {
					t.Errorf("ChunkTable: %v", err)
				}
			}
			compareTree(t, img, src, variant{}, false)
			t.Run("kernel", func(t *testing.T) {
				requireKernelErofs(t)
				compareTree(t, img, kernelMount(t, path, blobPath), variant{}, true)
			})
		})
	}
}
