package daemon

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
)

// TestDaemonFanotifyMount serves on this machine's kernel: a mount with
// the auto front end picks fanotify where cachefiles on-demand is
// missing, the tree reads back like its source, the metrics and health
// endpoints say so, and umount releases everything; the same image then
// reads back with its blobs served over HTTP; and once erofsd stops for
// good, data it never served fails with EIO.
func TestDaemonFanotifyMount(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	blobs := filepath.Join(dir, "blobs")
	img := buildImage(t, src, blobs, 0)
	cfg := cliConfig(t, dir) // the auto front end
	cfg.BlobDir = blobs
	holder := holderOf(t)
	td := startDaemon(t, holder, cfg)
	metricsAddr := cfg.MetricsAddr
	ctx := context.Background()
	mnt := mountpoint(t)
	mounted, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "img", Bootstrap: img}, Mountpoint: mnt, Frontend: "auto"})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	wantFE := "fanotify"
	if _, err := os.Stat("/dev/cachefiles"); err == nil {
		wantFE = "cachefiles"
	}
	if mounted.Frontend != wantFE {
		t.Errorf("mount used another front end than %s: %+v", wantFE, mounted)
	}
	before := scrape.Metrics(t, metricsAddr)
	treecmp.Expect(t, src, mnt, treecmp.Options{})
	after := scrape.Metrics(t, metricsAddr)
	okReads := `erofsd_kernel_requests_total{frontend="` + wantFE + `",result="ok",type="read"}`
	for _, m := range []string{"erofsd_backend_fetches_total", "erofsd_backend_fetched_bytes_total", okReads,
		`erofsd_cache_written_bytes_total{frontend="` + wantFE + `"}`, `erofsd_read_duration_seconds_count{frontend="` + wantFE + `"}`} {
		if after[m] <= before[m] {
			t.Errorf("%s did not move while the tree was read: %v -> %v", m, before[m], after[m])
		}
	}
	if after["erofsd_mounts"] != 1 || after["erofsd_chunk_digest_failures_total"] != 0 {
		t.Errorf("mounts %v, digest failures %v", after["erofsd_mounts"], after["erofsd_chunk_digest_failures_total"])
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: %v %v", path, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount: %v", err)
	}
	if ims, err := td.api.Images(ctx); err != nil || len(ims) != 0 {
		t.Errorf("images still registered after umount: %+v, %v", ims, err)
	}
	// The same image with its blobs served over HTTP (loopback): data
	// comes through range requests, verified.
	hs := httptest.NewServer(http.FileServer(http.Dir(blobs)))
	defer hs.Close()
	os.RemoveAll(filepath.Join(cfg.CacheDir, "fanotify")) // a cold cache (fanotify)
	fetched := scrape.Metrics(t, metricsAddr)["erofsd_backend_fetched_bytes_total"]
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "overhttp", Bootstrap: img, BlobDir: hs.URL},
		Mountpoint: mnt, Frontend: "auto"}); err != nil {
		t.Fatalf("mount over HTTP: %v", err)
	}
	diffs, err := treecmp.Compare(src, mnt, treecmp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error("over HTTP:", d)
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount: %v", err)
	}
	if wantFE == "fanotify" && scrape.Metrics(t, metricsAddr)["erofsd_backend_fetched_bytes_total"] <= fetched {
		t.Error("nothing was fetched over HTTP")
	}

	if wantFE != "fanotify" {
		return
	}

	// Stopping erofsd for good with data still missing: the mount must
	// fail reads of it (EIO), never show zeros.
	src2 := filepath.Join(dir, "src2")
	writeRandom(t, filepath.Join(src2, "unread"), 3<<20)
	img2 := buildImage(t, src2, blobs, 0)
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "img2", Bootstrap: img2}, Mountpoint: mnt, Frontend: "auto"}); err != nil {
		t.Fatalf("mount: %v", err)
	}
	big := filepath.Join(mnt, "unread")
	// Stopping for good, the daemon has the supervisor let its fds go,
	// so reads fail instead of waiting for a daemon to come.
	td.stop(false)
	type result struct {
		n   int
		err error
	}
	read := make(chan result, 1)
	go func() {
		data, err := os.ReadFile(big)
		read <- result{len(data), err}
	}()
	select {
	case r := <-read:
		if !errors.Is(r.err, syscall.EIO) {
			t.Fatalf("reading %s after erofsd stopped: %d bytes, %v; want EIO", big, r.n, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("reading %s after erofsd stopped: no answer in 30 s; want EIO", big)
	}
}

// TestDaemonFanotifyCacheLimit checks the cache limit's wiring: with a
// fanotify cache limit, the cache file of an image no longer mounted is
// evicted when another image needs the room, and the metrics say so.
func TestDaemonFanotifyCacheLimit(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs")
	imgs := map[string]string{}
	want := map[string][]byte{}
	for _, name := range []string{"a", "b"} {
		src := filepath.Join(dir, "src-"+name)
		want[name] = writeRandom(t, filepath.Join(src, "f"), 3<<20)
		imgs[name] = buildImage(t, src, blobs, 0)
	}
	cfg := cliConfig(t, dir)
	cfg.BlobDir, cfg.Frontend, cfg.FanotifyCacheLimit, cfg.CacheCheckInterval = blobs, "fanotify", 5<<20, time.Second
	td := startDaemon(t, holderOf(t), cfg)
	metricsAddr := cfg.MetricsAddr
	ctx := context.Background()
	mnt := mountpoint(t)
	for _, name := range []string{"a", "b"} {
		if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: name, Bootstrap: imgs[name]}, Mountpoint: mnt}); err != nil {
			t.Fatalf("mount %s: %v", name, err)
		}
		got, err := os.ReadFile(filepath.Join(mnt, "f"))
		if err != nil || !bytes.Equal(got, want[name]) {
			t.Fatalf("reading %s under a 5 MiB limit: %d bytes, %v", name, len(got), err)
		}
		if err := td.api.Unmount(ctx, mnt); err != nil {
			t.Fatalf("umount: %v", err)
		}
	}
	// The usage is refreshed every check interval (1s).
	var m map[string]float64
	for i := 0; i < 50; i++ {
		if m = scrape.Metrics(t, metricsAddr); m[`erofsd_cache_used_bytes{frontend="fanotify"}`] >= 3<<20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m[`erofsd_cache_evicted_objects_total{frontend="fanotify"}`] != 1 || m[`erofsd_cache_limit_bytes{frontend="fanotify"}`] != 5<<20 {
		t.Errorf("evicted %v, limit %v: want a's file evicted under a 5 MiB limit", m[`erofsd_cache_evicted_objects_total{frontend="fanotify"}`],
			m[`erofsd_cache_limit_bytes{frontend="fanotify"}`])
	}
	if used := m[`erofsd_cache_used_bytes{frontend="fanotify"}`]; used > 5<<20 || used < 3<<20 {
		t.Errorf("cache used %v bytes: want b's file, under the limit", used)
	}
	if ents, _ := os.ReadDir(filepath.Join(cfg.CacheDir, "fanotify")); len(ents) != 2 {
		t.Errorf("%d files in the fanotify cache, want b's file and map", len(ents))
	}
}
