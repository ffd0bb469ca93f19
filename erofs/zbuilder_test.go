package erofs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// TestOurBuilderCompressed checks compressed images from erofsd's own
// builder, self-contained and with pclusters packed into blob chunks:
// Check accepts them (verifying every chunk holding a pcluster), every
// file reads as its source, and the kernel reads what the reader reads.
func TestOurBuilderCompressed(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeCompressibleTree(t, src)
	for _, tc := range []struct {
		name, alg string
		pcluster  int
		blob      bool
	}{
		{"lz4hc_blob", "lz4hc", 64 << 10, true},
		{"lz4", "lz4", 4096, false},
		{"lzma_blob", "lzma", 16 << 10, true},
		{"deflate", "deflate", 64 << 10, false},
		{"zstd_blob", "zstd", 4096, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.name != "lz4" && tc.name != "zstd_blob" {
				t.Skip("-short: lz4 and zstd_blob only")
			}
			t.Parallel()
			opts := build.Options{ChunkSize: 1 << 20, Compression: tc.alg, PclusterSize: tc.pcluster}
			if tc.blob {
				opts.BlobDir = t.TempDir()
			}
			path, blobPaths, _ := testimage.Build(t, src, opts)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var blobs BlobResolver
			blobPath := ""
			if tc.blob {
				blobs, blobPath = DirBlobs(opts.BlobDir), blobPaths[0]
			}
			rep, err := Check(context.Background(), bytes.NewReader(data), CheckOptions{Blobs: blobs, VerifyData: true})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if rep.CompressedFiles == 0 || (tc.blob && rep.ChunksVerified == 0) {
				t.Fatalf("Check report %+v", rep)
			}
			opens := []Option{WithBlobs(blobs)}
			if tc.blob {
				opens = append(opens, WithVerifiedBlobs())
			}
			img, err := Open(bytes.NewReader(data), opens...)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			compareZTree(t, img, src)
			t.Run("kernel", func(t *testing.T) {
				requireKernelErofs(t)
				compareWithKernel(t, img, kernelMount(t, path, blobPath))
			})
		})
	}
}
