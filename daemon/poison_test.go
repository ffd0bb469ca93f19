package daemon

import (
	"context"
	"fmt"
	mrand "math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
)

// TestForgedImageCannotPoison reproduces the attack from a review on this
// kernel's fanotify front end: image B names image A's blob digest as
// its device tag while its chunk table (and its store, serving B's data
// under A's digest) describe other data. B is mounted first and read
// whole, then unmounted. A, mounted next, must read its own tree: B's
// cache file is named after B's chunk table, and, not being A's blob, is
// never taken for complete.
func TestForgedImageCannotPoison(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	build := func(name string, seed int64) (src, img, blobDir string) {
		src = filepath.Join(dir, "src-"+name)
		// The same file sizes, other bytes: B's blob is as large as A's,
		// so a cache file sized for one fits the other.
		sizes, r := mrand.New(mrand.NewSource(1)), mrand.New(mrand.NewSource(seed))
		for i := range 40 {
			sub := filepath.Join(src, fmt.Sprintf("d%d", i%4))
			os.MkdirAll(sub, 0o755)
			data := make([]byte, sizes.Intn(300<<10)+1)
			r.Read(data)
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		blobDir = filepath.Join(dir, "blobs-"+name)
		return src, buildImage(t, src, blobDir, 0), blobDir
	}
	srcA, imgA, blobsA := build("a", 1)
	_, imgB, blobsB := build("b", 2)
	digestOf := func(blobDir string) string {
		ents, err := os.ReadDir(blobDir)
		if err != nil || len(ents) != 1 {
			t.Fatalf("blob dir %s: %v %v", blobDir, ents, err)
		}
		return ents[0].Name()
	}
	digestA, digestB := digestOf(blobsA), digestOf(blobsB)
	testimage.Retag(t, imgB, 1, digestA)
	// Without chunk states: with them, B's last chunk would not be its
	// step to the digest it names (TestChainedChunks/forged_digest).
	testimage.DropChunkStates(t, imgB)
	forged := filepath.Join(dir, "forged")
	os.Mkdir(forged, 0o755)
	if err := os.Rename(filepath.Join(blobsB, digestB), filepath.Join(forged, digestA)); err != nil {
		t.Fatal(err)
	}

	cfg := cliConfig(t, dir)
	cfg.Frontend = "fanotify"
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "b", Bootstrap: imgB, BlobDir: forged}, Mountpoint: mnt}); err != nil {
		t.Fatalf("mount b: %v", err)
	}
	// Read all of B, so that its cache file is complete.
	filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			os.ReadFile(p)
		}
		return nil
	})
	const notBlob = "cache_files_not_blob_total{frontend=fanotify}"
	deadline := time.Now().Add(10 * time.Second)
	for td.counter(notBlob) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := td.counter(notBlob); n != 1 {
		t.Errorf("%d complete cache files found not to be their blob; want B's", n)
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount b: %v", err)
	}

	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "a", Bootstrap: imgA, BlobDir: blobsA}, Mountpoint: mnt}); err != nil {
		t.Fatalf("mount a: %v", err)
	}
	diffs, err := treecmp.Compare(srcA, mnt, treecmp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range diffs {
		if i == 10 {
			t.Errorf("... %d differences in all", len(diffs))
			break
		}
		t.Error("image A after the forged image B:", d)
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount a: %v", err)
	}
	// A's own cache file is complete now and was found to be its blob:
	// a file named after A's digest and table, with the check recorded.
	ents, _ := os.ReadDir(filepath.Join(cfg.CacheDir, "fanotify"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 4 {
		t.Errorf("cache files %v: want a data file and a map for each of the two tables", names)
	}
	if n := td.counter("cache_verified_bytes_total{frontend=fanotify}"); n == 0 {
		t.Error("A's complete cache file was not checked against its digest")
	}
}
