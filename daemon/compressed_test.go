package daemon

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testconvert"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
	"github.com/erofsd/erofsd/oci"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// compressibleText is n bytes of text-like data: lines of words drawn
// from a small vocabulary, as source code and configuration compress.
func compressibleText(seed uint64, n int) []byte {
	words := strings.Fields("the kernel reads a chunk of the blob and erofsd verifies every byte before it answers with data from the store func return err nil if for range")
	rnd := rand.New(rand.NewPCG(seed, seed))
	var b bytes.Buffer
	for b.Len() < n {
		for i := rnd.IntN(12) + 1; i > 0; i-- {
			b.WriteString(words[rnd.IntN(len(words))])
			b.WriteByte(' ')
		}
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

// compressedTree generates the round-trip tree plus data that compresses
// (text, a binary of this machine's) and data that does not (random),
// small and large, so images mix compressed and plain pclusters, inline
// tails and files that stay uncompressed.
func compressedTree(t *testing.T, dir string) {
	t.Helper()
	if _, err := testtree.Generate(dir, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"z/text-6M":    compressibleText(1, 6<<20+123),
		"z/text-small": compressibleText(2, 5000),
		"z/text-tiny":  compressibleText(3, 100),
		"z/random-3M":  testoci.Random(4, 3<<20+7),
		"z/zeros-2M":   make([]byte, 2<<20),
		"z/mixed":      append(compressibleText(5, 300<<10), append(testoci.Random(6, 200<<10), compressibleText(7, 70<<10+1)...)...),
	}
	if bin, err := os.ReadFile("/usr/bin/ls"); err == nil {
		files["z/bin-ls"] = bin
	}
	for p, data := range files {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDaemonCompressedMount serves compressed images lazily through the
// fanotify front end from a local store, one per algorithm (and a big
// pcluster size): every file reads back like its source, the blob holds
// fewer bytes than the uncompressed image's, and no chunk failed its
// digest. A blob store whose compressed data was tampered with gives EIO,
// never other bytes.
func TestDaemonCompressedMount(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	compressedTree(t, src)
	_, _, plain := testimage.Build(t, src, build.Options{BlobDir: filepath.Join(dir, "plain")})

	cfg := cliConfig(t, dir)
	cfg.Frontend = "fanotify"
	cfg.BlobDir = filepath.Join(dir, "blobs")
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	for i, c := range []struct {
		spec     string
		pcluster int
	}{{"lz4", 0}, {"lz4hc", 64 << 10}, {"lzma", 0}, {"deflate", 16 << 10}, {"zstd", 0}} {
		t.Run(fmt.Sprintf("%s,pcluster=%d", c.spec, c.pcluster), func(t *testing.T) {
			img, _, res := testimage.Build(t, src, build.Options{BlobDir: cfg.BlobDir, Compression: c.spec, PclusterSize: c.pcluster})
			if res.CompressedFiles == 0 || res.Blobs[0].Size >= plain.Blobs[0].Size {
				t.Fatalf("%d files compressed, blob %d bytes against %d uncompressed", res.CompressedFiles, res.Blobs[0].Size, plain.Blobs[0].Size)
			}
			fsid := fmt.Sprint("z", i)
			if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: fsid, Bootstrap: img}, Mountpoint: mnt}); err != nil {
				t.Fatalf("mount: %v", err)
			}
			treecmp.Expect(t, src, mnt, treecmp.Options{})
			if err := td.api.Unmount(ctx, mnt); err != nil {
				t.Fatalf("umount: %v", err)
			}
		})
	}
	if m := scrape.Metrics(t, cfg.MetricsAddr); m["erofsd_chunk_digest_failures_total"] != 0 || m["erofsd_backend_fetched_bytes_total"] == 0 {
		t.Errorf("digest failures %v, fetched %v bytes", m["erofsd_chunk_digest_failures_total"], m["erofsd_backend_fetched_bytes_total"])
	}

	// Tampered compressed data in the store: one byte flipped in each
	// MiB of the blob. Reads of the damaged pclusters fail with EIO; the
	// kernel never decompresses unverified bytes.
	bad := filepath.Join(dir, "bad")
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: bad, Compression: "lz4hc"})
	data, err := os.ReadFile(blobs[0])
	if err != nil {
		t.Fatal(err)
	}
	for off := 1 << 19; off < len(data); off += 1 << 20 {
		data[off] ^= 0x5a
	}
	if err := os.WriteFile(blobs[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "bad", Bootstrap: img, BlobDir: bad}, Mountpoint: mnt}); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	failed := readTreeEIO(t, mnt, src)
	if failed == 0 || scrape.Metrics(t, cfg.MetricsAddr)["erofsd_chunk_digest_failures_total"] == 0 {
		t.Errorf("%d files failed to read and no digest failure counted from a tampered blob", failed)
	}
}

// TestDaemonCompressedRegistry converts an image into the real registry
// on loopback with compressed blobs, once per algorithm, and mounts each
// by reference: the tree reads back like the image's rootfs, with fewer
// registry bytes than the uncompressed conversion holds.
func TestDaemonCompressedRegistry(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	reg := testregistry.Start(t, testregistry.Options{})
	layers := append(testoci.Layers(t, 2<<20),
		testoci.Layer(t, []testoci.Entry{{Name: "text", Body: compressibleText(9, 8<<20)}, {Name: "small", Body: compressibleText(10, 3000)}}),
		testoci.Layer(t, testoci.ManyFiles("many", 300, 16<<10, 7)))
	src := testoci.Image(t, layers, "linux", "amd64")
	ref, err := name.ParseReference(reg.Host + "/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, src); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	testoci.Flatten(t, src, rootfs)
	sizes := map[string]int64{}
	algorithms := []string{"lz4", "lz4hc", "lzma", "deflate", "zstd"}
	for _, z := range append([]string{""}, algorithms...) {
		target := "oci://" + reg.Host + "/app:erofs" + z
		testconvert.InRegistryWith(t, "oci://"+reg.Host+"/app:v1", target, oci.ConvertOptions{Compression: z})
		tref, err := name.ParseReference(reg.Host + "/app:erofs" + z)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(tref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
		if err != nil {
			t.Fatal(err)
		}
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			n, err := l.Size()
			if err != nil {
				t.Fatal(err)
			}
			sizes[z] += n
		}
	}
	if sizes["lz4hc"] >= sizes[""]*3/4 {
		t.Errorf("compressed image holds %d registry bytes, uncompressed %d: want at most 3/4", sizes["lz4hc"], sizes[""])
	}

	cfg := cliConfig(t, dir)
	cfg.Frontend = "fanotify"
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	var fetchedBefore float64
	for _, z := range algorithms {
		t.Run(z, func(t *testing.T) {
			mountRef(t, td, "app-"+z, "oci://"+reg.Host+"/app:erofs"+z, mnt, rootfs)
			m := scrape.Metrics(t, cfg.MetricsAddr)
			if m[`erofsd_backend_requests_total{backend="oci"}`] == 0 || m["erofsd_chunk_digest_failures_total"] != 0 {
				t.Errorf("oci backend requests %v, digest failures %v", m[`erofsd_backend_requests_total{backend="oci"}`], m["erofsd_chunk_digest_failures_total"])
			}
			fetched := m["erofsd_backend_fetched_bytes_total"] - fetchedBefore
			fetchedBefore += fetched
			if fetched > float64(sizes[z]) {
				t.Errorf("reading the whole tree fetched %v bytes, more than the compressed image's %d", fetched, sizes[z])
			}
			if err := td.api.Unmount(ctx, mnt); err != nil {
				t.Fatalf("umount: %v", err)
			}
		})
	}
}

// TestDaemonCompressedConcurrentReads has 16 readers at random offsets of
// two files of each compressed image, cold, while their pclusters (64 KiB,
// several to a table chunk) are fetched and verified under them: every
// piece right.
func TestDaemonCompressedConcurrentReads(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	files := map[string][]byte{"text": compressibleText(1, 24<<20), "rand": testoci.Random(2, 8<<20)}
	for n, d := range files {
		os.WriteFile(filepath.Join(src, n), d, 0o644)
	}
	cfg := cliConfig(t, dir)
	cfg.Frontend = "fanotify"
	cfg.BlobDir = filepath.Join(dir, "blobs")
	td := startDaemon(t, holderOf(t), cfg)
	for _, spec := range []string{"lz4hc", "zstd", "lzma"} {
		img, _, _ := testimage.Build(t, src, build.Options{BlobDir: cfg.BlobDir, Compression: spec, PclusterSize: 64 << 10})
		mnt := mountpoint(t)
		if _, err := td.api.Mount(context.Background(), control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: spec, Bootstrap: img}, Mountpoint: mnt}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for r := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := "text"
				if r%3 == 0 {
					name = "rand"
				}
				want := files[name]
				f, err := os.Open(filepath.Join(mnt, name))
				if err != nil {
					errs <- err
					return
				}
				defer f.Close()
				rnd := rand.New(rand.NewPCG(uint64(r), 9))
				for i := 0; i < 60; i++ {
					n := 1 + rnd.IntN(300<<10)
					off := rnd.IntN(len(want) - n)
					buf := make([]byte, n)
					if _, err := f.ReadAt(buf, int64(off)); err != nil {
						errs <- fmt.Errorf("%s %s %d+%d: %w", spec, name, off, n, err)
						return
					}
					if !bytes.Equal(buf, want[off:off+n]) {
						errs <- fmt.Errorf("%s %s %d+%d: wrong bytes", spec, name, off, n)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if err := td.api.Unmount(context.Background(), mnt); err != nil {
			t.Fatalf("umount: %v", err)
		}
	}
}
