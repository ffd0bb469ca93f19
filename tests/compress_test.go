package tests

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
	"github.com/erofsd/erofsd/prefetchlist"
)

// compressSource is the generated test tree (sparse, hard links, xattrs,
// devices, long names...) plus what compression meets in real trees:
// program binaries, source text, incompressible data, long runs of zeros,
// files larger than a compression segment and tiny ones. small keeps every
// kind but makes them a few hundred KiB at most, for the codecs too slow
// to compress megabytes in a test.
func compressSource(t *testing.T, small bool) source {
	t.Helper()
	src := generate(t, false)
	dir := filepath.Join(src.dir, "zdata")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	scale := 1
	if small {
		scale = 8
	}
	rng := rand.New(rand.NewPCG(7, 8))
	random := make([]byte, 700_000/scale)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	write("random", random)
	write("zeros", make([]byte, 3<<20/scale))
	write("tiny", []byte("x"))
	write("block", bytes.Repeat([]byte("b"), 4096))
	var text []byte
	for _, pat := range []string{"/usr/local/go/src/go/types/*.go", "/usr/local/go/src/net/http/*.go"} {
		names, _ := filepath.Glob(pat)
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			text = append(text, b...)
		}
	}
	if len(text) < 5<<20 {
		text = append(text, bytes.Repeat([]byte("filler line of text, compressible\n"), (5<<20-len(text))/34+1)...)
	}
	if !small {
		write("large-text", text)
	}
	write("text-then-random", append(append([]byte(nil), text[:300_000/scale]...), random[:200_000/scale]...))
	write("tail-13000", text[:13000])
	// A sparse file with data on both sides of a hole.
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(text[:10000])
	f.WriteAt(text[:5000], 9<<20/int64(scale))
	f.Close()
	bins := []string{"/usr/bin/ls"}
	if !small {
		bins = append(bins, "/usr/bin/grep", "/usr/bin/tar", "/usr/bin/bash")
	}
	for _, bin := range bins {
		b, err := os.ReadFile(bin)
		if err != nil {
			continue
		}
		write("bin-"+filepath.Base(bin), b)
	}
	return src
}

// TestKernelCompressed builds compressed images of the tree with every
// algorithm at one-block and 64 KiB pclusters, self-contained and with a
// blob, mounts them with the running kernel and compares every entry;
// fsck.erofs (which knows only lz4) and the Go reader check them too.
func TestKernelCompressed(t *testing.T) {
	needKernel(t)
	full, small := compressSource(t, false), compressSource(t, true)
	algs := []string{"lz4", "lz4hc", "lzma", "deflate", "zstd"}
	for _, alg := range algs {
		for _, pcluster := range []int{4096, 64 << 10} {
			name := alg + "/" + map[int]string{4096: "4K", 64 << 10: "64K"}[pcluster]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				opts := build.Options{Compression: alg, PclusterSize: pcluster}
				src := full
				if alg == "lzma" || alg == "lz4hc" && pcluster > 4096 {
					src = small // the slowest encoders
				}
				if pcluster == 4096 && alg == "lz4hc" {
					// Blob mode once, with an algorithm fsck knows and
					// a start set at the blob's front.
					opts.BlobDir = t.TempDir()
					opts.PrefetchList = &prefetchlist.List{Entries: prefetchlist.Files("/zdata/bin-bash", "/zdata/large-text")}
				}
				start := time.Now()
				image, blobs, res := testimage.Build(t, src.dir, opts)
				t.Logf("%s: %d bytes, %d files compressed, built in %v", name, res.ImageSize, res.CompressedFiles, time.Since(start).Round(time.Millisecond))
				if res.CompressedFiles == 0 {
					t.Fatal("no file was compressed")
				}
				mountAndCompare(t, src.dir, image, blobs, treecmp.Options{})
				// erofs-utils 1.5 knows only lz4, and reads compressed
				// data through the unified address space wrongly.
				if strings.HasPrefix(alg, "lz4") && opts.BlobDir == "" {
					checkWithFsck(t, image, blobs)
				}
				goReaderCompare(t, src.dir, image, opts.BlobDir)
			})
		}
	}
}

// TestKernelCompressedTar builds a compressed image from a tar of the tree.
func TestKernelCompressedTar(t *testing.T) {
	needKernel(t)
	require.Host(t, require.Tool("tar", "tar"))
	tarBin, _ := exec.LookPath("tar")
	src := compressSource(t, false)
	archive := filepath.Join(t.TempDir(), "layer.tar")
	cmd := exec.Command(tarBin, "--format=posix", "--xattrs", "--xattrs-include=*", "--sparse",
		"--numeric-owner", "-C", src.dir, "-cf", archive, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	image, blobs, _ := testimage.Build(t, archive, build.Options{Compression: "lz4hc", PclusterSize: 16 << 10})
	mountAndCompare(t, src.dir, image, blobs, treecmp.Options{
		IgnorePath: func(rel string) bool {
			e, ok := src.manifest.Lookup(rel)
			return ok && e.Type&os.ModeSocket != 0
		},
	})
	checkWithFsck(t, image, blobs)
}

// goReaderCompare reads every regular file of want through the Go reader
// and runs its checker over the image, verifying data.
func goReaderCompare(t *testing.T, want, image, blobDir string) {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var opts []erofs.Option
	var copts erofs.CheckOptions
	if blobDir != "" {
		opts = append(opts, erofs.WithBlobs(erofs.DirBlobs(blobDir)), erofs.WithVerifiedBlobs())
		copts.Blobs = erofs.DirBlobs(blobDir)
	}
	copts.VerifyData = true
	im, err := erofs.Open(f, opts...)
	if err != nil {
		t.Fatalf("Go reader: %v", err)
	}
	defer im.Close()
	err = filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		exp, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		g, err := im.Open(rel)
		if err != nil {
			t.Errorf("Go reader: %s: %v", rel, err)
			return nil
		}
		got, err := io.ReadAll(g)
		g.Close()
		if err != nil || !bytes.Equal(got, exp) {
			t.Errorf("Go reader: %s: %d bytes read (%v), %d expected, contents differ", rel, len(got), err, len(exp))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := erofs.Check(context.Background(), f, copts); err != nil {
		t.Errorf("Go checker: %v", err)
	}
}
