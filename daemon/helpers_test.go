package daemon

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
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
