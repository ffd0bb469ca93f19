package daemon

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/erofsd/erofsd/erofs"
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
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestDaemonPackedSmallFiles serves an image built with PackSmallFiles
// through the fanotify front end from a local store: every file reads
// back like its source, in fewer fetches than the image has files, and
// with a byte of a pack damaged in the store the files of that pack fail
// with EIO while the others read right.
func TestDaemonPackedSmallFiles(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	cfg := cliConfig(t, dir)
	cfg.Frontend = "fanotify"
	cfg.BlobDir = filepath.Join(dir, "blobs")
	img, _, res := testimage.Build(t, src, build.Options{BlobDir: cfg.BlobDir, PackSmallFiles: true})
	var files int
	filepath.WalkDir(src, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files++
		}
		return nil
	})
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "packed", Bootstrap: img}, Mountpoint: mnt}); err != nil {
		t.Fatalf("mount: %v", err)
	}
	treecmp.Expect(t, src, mnt, treecmp.Options{})
	m := scrape.Metrics(t, cfg.MetricsAddr)
	if fetches := m["erofsd_backend_fetches_total"]; fetches == 0 || fetches >= float64(files)/2 || m["erofsd_chunk_digest_failures_total"] != 0 {
		t.Errorf("%v fetches for %d files (%d table chunks), %v digest failures", fetches, files, res.Chunks, m["erofsd_chunk_digest_failures_total"])
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount: %v", err)
	}

	// A store whose packs are damaged: one byte flipped in the middle of
	// each pack. A file of a damaged pack fails with EIO, never other
	// bytes. (A small file added makes the blob another one than the
	// one cached above.)
	if err := os.WriteFile(filepath.Join(src, "another"), []byte("another blob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: bad, PackSmallFiles: true})
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	table, err := im.ChunkTable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(blobs[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range table {
		data[int64(e.BlkAddr)*4096+int64(e.Length)/2] ^= 0x5a
	}
	if err := os.WriteFile(blobs[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "bad", Bootstrap: img, BlobDir: bad}, Mountpoint: mnt}); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	failed := readTreeEIO(t, mnt, src)
	if failed < 2 {
		t.Errorf("%d files failed to read from a store with every pack damaged", failed)
	}
}

// TestDaemonPackedRegistry converts an image with many small files into
// the real registry on loopback with PackSmallFiles and mounts it by
// reference: the tree reads back like the image's rootfs, in fewer
// registry requests than it has small files.
func TestDaemonPackedRegistry(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	reg := testregistry.Start(t, testregistry.Options{})
	const smallFiles = 300
	layers := append(testoci.Layers(t, 1<<20), testoci.Layer(t, testoci.ManyFiles("many", smallFiles, 16<<10, 7)))
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
	testconvert.InRegistryWith(t, "oci://"+reg.Host+"/app:v1", "oci://"+reg.Host+"/app:packed", oci.ConvertOptions{PackSmallFiles: true})

	cfg := cliConfig(t, dir)
	cfg.Frontend = "fanotify"
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	mountRef(t, td, "app", "oci://"+reg.Host+"/app:packed", mnt, rootfs)
	m := scrape.Metrics(t, cfg.MetricsAddr)
	if req := m[`erofsd_backend_requests_total{backend="oci"}`]; req == 0 || req >= smallFiles/4 || m["erofsd_chunk_digest_failures_total"] != 0 {
		t.Errorf("%v oci backend requests for %d small files, %v digest failures", req, smallFiles, m["erofsd_chunk_digest_failures_total"])
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount: %v", err)
	}
}
