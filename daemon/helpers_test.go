package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"golang.org/x/sys/unix"
)

// cliConfig is the Config cmd/erofsd makes when given only the dirs,
// the socket and a metrics address: its flags' defaults where they
// differ from Config's zero values (the auto front end, the readahead
// window and the mounts' readahead, cachefilesd's limits), with metrics
// on a free loopback port.
func cliConfig(t *testing.T, dir string) Config {
	t.Helper()
	cfg := testConfig(dir)
	cfg.Frontend = "auto"
	cfg.ReadaheadWindow = DefaultReadaheadWindow
	cfg.MountReadahead = DefaultMountReadahead
	cfg.CachefilesLimits = cachefiles.DefaultLimits
	cfg.PrefetchStart = true
	cfg.MetricsAddr = scrape.FreeAddr(t)
	return cfg
}

// mountpoint makes an empty directory to mount on; whatever is still
// mounted there when the test ends is detached before the directory is
// removed.
func mountpoint(t *testing.T) string {
	t.Helper()
	mp := t.TempDir()
	t.Cleanup(func() { unix.Unmount(mp, unix.MNT_DETACH) })
	return mp
}

// writeRandom writes size random bytes to path and returns them.
func writeRandom(t *testing.T, path string, size int) []byte {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// buildImage builds src into an image whose blob goes into blobDir (as
// erofs-image build --blob-dir does), with chunkSize (0: the default).
func buildImage(t *testing.T, src, blobDir string, chunkSize int64) string {
	t.Helper()
	img, _, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: chunkSize})
	return img
}

// logText is what the daemon logged so far.
func (td *testDaemon) logText() string {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return td.logs.String()
}

// readTreeEIO reads every regular file of the mount mnt, whose store was
// damaged: a read may fail only with EIO, and one that succeeds must give
// the bytes of the same file under src. It returns how many failed.
func readTreeEIO(t *testing.T, mnt, src string) (failed int) {
	t.Helper()
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		got, rerr := os.ReadFile(p)
		if rerr != nil {
			if !errors.Is(rerr, syscall.EIO) {
				t.Errorf("%s: %v, want EIO", rel, rerr)
			}
			failed++
			return nil
		}
		if want, _ := os.ReadFile(filepath.Join(src, rel)); !bytes.Equal(got, want) {
			t.Errorf("%s: wrong bytes from a damaged store", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return failed
}

// mountRef mounts the image reference ref, served by a plain-HTTP
// registry, at mnt through td (detached when the test ends) and compares
// it with the tree rootfs.
func mountRef(t *testing.T, td *testDaemon, fsid, ref, mnt, rootfs string) {
	t.Helper()
	if _, err := td.api.Mount(context.Background(), control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: fsid, Bootstrap: ref, PlainHTTP: true, Platform: "linux/amd64"},
		Mountpoint: mnt}); err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	treecmp.Expect(t, rootfs, mnt, treecmp.Options{IgnoreDirMtime: true})
}
