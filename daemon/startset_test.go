package daemon

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/prefetchlist"
)

// TestStartSet: an image built with a prefetch list records its start set;
// at mount erofsd fetches it in a few large store reads, after which the
// workload the list describes reads the right bytes with no store read at
// all. The same workload on the image built without the list costs many
// more, smaller reads.
func TestStartSet(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	rng := rand.New(rand.NewPCG(7, 7))
	var names []string
	for i := range 300 {
		name := fmt.Sprintf("d%02d/f%03d", i%17, i)
		names = append(names, name)
		data := make([]byte, 1+rng.IntN(48<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeRandom(t, filepath.Join(src, "zz-big"), 16<<20)
	// The workload: 43 files scattered over the tree, then every file of
	// d16 in name order (as the blob has them, right before zz-big, the
	// bulk it never reads), whole. (A file read in part is the trace
	// test's: the kernel's readahead decides what is read, and the trace
	// records it.)
	var workload []string
	for i := 0; i < 300; i += 7 {
		if n := names[(i*13)%300]; !strings.HasPrefix(n, "d16/") {
			workload = append(workload, n)
		}
	}
	last, _ := filepath.Glob(filepath.Join(src, "d16", "*"))
	for _, p := range last {
		workload = append(workload, "d16/"+filepath.Base(p))
	}
	var list prefetchlist.List
	var opened int64
	for _, w := range workload {
		list.Add("/"+w, 0, 0)
		fi, err := os.Stat(filepath.Join(src, w))
		if err != nil {
			t.Fatal(err)
		}
		opened += fi.Size()
	}
	read := func(mnt string) {
		t.Helper()
		for _, w := range workload {
			got, err := os.ReadFile(filepath.Join(mnt, w))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(filepath.Join(src, w))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s reads wrong", w)
			}
		}
	}
	const (
		requests = `erofsd_backend_requests_total{backend="local"}`
		fetched  = "erofsd_backend_fetched_bytes_total"
	)
	type run struct{ requests, bytes, afterPrefetch, startBytes, late, misses float64 }
	measure := func(withList bool) run {
		sub := t.TempDir()
		blobs := filepath.Join(sub, "blobs")
		opts := build.Options{BlobDir: blobs, ChunkSize: 64 << 10}
		if withList {
			opts.PrefetchList = &list
		}
		img, _, _ := testimage.Build(t, src, opts)
		cfg := cliConfig(t, sub)
		cfg.BlobDir = blobs
		td := startDaemon(t, holderOf(t), cfg)
		ctx := context.Background()
		mnt := mountpoint(t)
		if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "img", Bootstrap: img},
			Mountpoint: mnt, Frontend: "fanotify"}); err != nil {
			t.Fatalf("mount: %v", err)
		}
		defer td.api.Unmount(ctx, mnt)
		m := scrape.Metrics(t, cfg.MetricsAddr)
		if withList {
			deadline := time.Now().Add(30 * time.Second)
			for m["erofsd_prefetch_bytes_done_total"] == 0 || m["erofsd_prefetch_bytes_left"] != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("start set not fetched in 30 s: %v", m)
				}
				time.Sleep(20 * time.Millisecond)
				m = scrape.Metrics(t, cfg.MetricsAddr)
			}
		}
		read(mnt)
		after := scrape.Metrics(t, cfg.MetricsAddr)
		if withList {
			// A file outside the list, read by another process (this
			// one's reads are the daemon's own, which it does not
			// count): a start set miss.
			if out, err := exec.Command("cat", filepath.Join(mnt, names[1])).Output(); err != nil || len(out) == 0 {
				t.Fatalf("cat: %v", err)
			}
			if m := scrape.Metrics(t, cfg.MetricsAddr); m["erofsd_start_set_misses_total"] != 1 {
				t.Errorf("reading one file outside the start set: %v start set misses, want 1", m["erofsd_start_set_misses_total"])
			}
		}
		return run{requests: after[requests], bytes: after[fetched], afterPrefetch: after[requests] - m[requests],
			startBytes: after["erofsd_start_set_fetched_bytes_total"], late: after["erofsd_start_set_late_total"], misses: after["erofsd_start_set_misses_total"]}
	}
	lazy, start := measure(false), measure(true)
	t.Logf("without the list: %v store reads, %v bytes; with it: %v reads (%v after the start set), %v bytes",
		lazy.requests, lazy.bytes, start.requests, start.afterPrefetch, start.bytes)
	if lazy.startBytes != 0 || lazy.late != 0 || lazy.misses != 0 || start.startBytes == 0 || start.late != 0 || start.misses != 0 {
		t.Errorf("start set metrics: without the list %+v, with it %+v: want zeros, then bytes fetched and no late reads or misses", lazy, start)
	}
	// Readahead stays in the files read: a cold start fetches at most
	// 1.5x what it opens, with the defaults, list or not (the files are
	// side by side in the blob, a 16 MiB file after them).
	for _, r := range []run{lazy, start} {
		if r.bytes > 1.5*float64(opened) {
			t.Errorf("the workload opened %d bytes; erofsd fetched %v (%.2fx), want at most 1.5x", opened, r.bytes, r.bytes/float64(opened))
		}
	}
	if start.afterPrefetch != 0 {
		t.Errorf("the workload made %v store reads after the start set was fetched", start.afterPrefetch)
	}
	if start.requests*4 > lazy.requests {
		t.Errorf("with the start set %v store reads, without %v: want at least 4x fewer", start.requests, lazy.requests)
	}
	if start.requests > 0 && lazy.requests > 0 && start.bytes/start.requests <= lazy.bytes/lazy.requests {
		t.Errorf("start set reads average %v bytes, lazy ones %v: want larger", start.bytes/start.requests, lazy.bytes/lazy.requests)
	}
	// The start set is the workload's chunks, each a 64 KiB chunk at most.
	if max := float64(len(workload)) * (64 << 10); start.bytes > max {
		t.Errorf("with the start set %v bytes fetched, more than the workload's %v chunks", start.bytes, len(workload))
	}
}

// TestStartSetHungStore: the start set's prefetch meets a store that
// hangs, then recovers. Its fills give up after the request timeout like
// a kernel read's, so a kernel read of a start set chunk, which waits on
// such a fill, fetches the chunk itself once the store is back instead of
// failing for as long as the store's own timeout keeps the prefetch's
// request open.
func TestStartSetHungStore(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := writeRandom(t, filepath.Join(src, "start"), 16<<20)
	writeRandom(t, filepath.Join(src, "rest"), 1<<20)
	var list prefetchlist.List
	list.Add("/start", 0, 0)
	blobs := filepath.Join(dir, "blobs")
	img, _, _ := testimage.Build(t, src, build.Options{BlobDir: blobs, ChunkSize: 64 << 10, PrefetchList: &list})
	// The first read (the prefetch target's priming read) is served;
	// then the store hangs until told otherwise.
	var served atomic.Int64
	var hang atomic.Bool
	hang.Store(true)
	files := http.FileServer(http.Dir(blobs))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.Header.Get("Range") != "" && served.Add(1) > 1 && hang.Load() {
			<-r.Context().Done() // as long as the client waits
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()

	cfg := cliConfig(t, dir)
	cfg.RequestTimeout = 2 * time.Second
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	if _, err := td.api.Mount(ctx, mountReq("img", img, srv.URL, mnt)); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer td.api.Unmount(ctx, mnt)
	time.Sleep(time.Second) // the start set's fills are waiting on the store
	hang.Store(false)
	start := time.Now()
	got, err := exec.Command("cat", filepath.Join(mnt, "start")).Output()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading the start set after the store came back: %v (%d of %d bytes) after %v", err, len(got), len(data), time.Since(start))
	}
	t.Logf("read after the store came back in %v (%d ranged requests)", time.Since(start), served.Load())
}
