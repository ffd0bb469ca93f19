package build

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// benchTree is a large real tree: the Go toolchain's source when present.
func benchTree(b *testing.B) string {
	dir := filepath.Join(runtime.GOROOT(), "src")
	if _, err := os.Stat(dir); err != nil {
		b.Skipf("no tree to build: %v", err)
	}
	return dir
}

func benchmarkBuild(b *testing.B, blobs bool, compression string) {
	src := benchTree(b)
	out := filepath.Join(b.TempDir(), "img")
	var size int64
	for b.Loop() {
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		opts := Options{Compression: compression}
		if blobs {
			opts.BlobDir = b.TempDir()
		}
		bl, err := New(f, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := bl.AddDir(context.Background(), src); err != nil {
			b.Fatal(err)
		}
		res, err := bl.Finish(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		size = res.DataBytes
		f.Close()
	}
	b.SetBytes(size)
}

// BenchmarkBuildDir measures a self-contained build of GOROOT/src.
func BenchmarkBuildDir(b *testing.B) { benchmarkBuild(b, false, "") }

// BenchmarkBuildDirBlob measures a blob-mode build (chunk hashing, dedupe).
func BenchmarkBuildDirBlob(b *testing.B) { benchmarkBuild(b, true, "") }

// BenchmarkBuildDirLZ4 measures a self-contained -zlz4 build.
func BenchmarkBuildDirLZ4(b *testing.B) { benchmarkBuild(b, false, "lz4") }
