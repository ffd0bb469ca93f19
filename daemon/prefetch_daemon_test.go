package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
	"github.com/erofsd/erofsd/prefetchlist"
)

// TestDaemonPrefetch: a mount with a prefetch list under the "whole"
// prefetch default fills every blob in the background (the metrics show
// its progress), after which reading every file fetches nothing and no
// read waits for erofsd.
func TestDaemonPrefetch(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	big := writeRandom(t, filepath.Join(src, "big"), 8<<20)
	blobs := filepath.Join(dir, "blobs")
	img := buildImage(t, src, blobs, 256<<10)
	cfg := cliConfig(t, dir) // the auto front end
	cfg.BlobDir, cfg.Prefetch, cfg.PrefetchRate = blobs, "whole", 64<<20
	td := startDaemon(t, holderOf(t), cfg)
	metricsAddr := cfg.MetricsAddr
	ctx := context.Background()
	mnt := mountpoint(t)
	// The list as erofsctl reads it from "# read at start\n/big\n\nnot/there\n".
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "img", Bootstrap: img},
		Mountpoint: mnt, Frontend: "auto", PrefetchList: prefetchlist.Files("/big", "not/there")}); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer td.api.Unmount(ctx, mnt)
	var m map[string]float64
	deadline := time.Now().Add(60 * time.Second)
	for {
		m = scrape.Metrics(t, metricsAddr)
		if m["erofsd_prefetch_bytes_done_total"] > 0 && m["erofsd_prefetch_bytes_left"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch not done in 60 s: done %v, left %v", m["erofsd_prefetch_bytes_done_total"], m["erofsd_prefetch_bytes_left"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m["erofsd_prefetch_bytes_done_total"] < float64(len(big)) {
		t.Errorf("prefetch done: %v bytes, less than the big file", m["erofsd_prefetch_bytes_done_total"])
	}
	st, err := td.api.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Counters["prefetch_bytes_done_total"]; !ok {
		t.Errorf("status lacks the prefetch counters: %v", st.Counters)
	}
	reads := `erofsd_kernel_requests_total{frontend="fanotify",result="ok",type="read"}`
	if _, err := os.Stat("/dev/cachefiles"); err == nil {
		reads = `erofsd_kernel_requests_total{frontend="cachefiles",result="ok",type="read"}`
	}
	treecmp.Expect(t, src, mnt, treecmp.Options{})
	after := scrape.Metrics(t, metricsAddr)
	if f := after["erofsd_backend_fetches_total"] - m["erofsd_backend_fetches_total"]; f != 0 {
		t.Errorf("reading every file after the prefetch fetched %v chunks", f)
	}
	if r := after[reads] - m[reads]; r != 0 {
		t.Errorf("reading every file after the prefetch: %v kernel read requests", r)
	}
	logs := td.logText()
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "prefetch") {
			t.Log(line)
		}
	}
	if !strings.Contains(logs, "not/there") || !strings.Contains(logs, "prefetch done") {
		t.Errorf("the log does not report the prefetch and the missing path")
	}
}
