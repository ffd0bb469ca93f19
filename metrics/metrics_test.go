package metrics

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/internal/counters"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollectorReadsCounters(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	core := ondemand.NewRegistry()
	defer core.Close()
	h := NewHistograms(reg)
	mounts := &counters.Desc{Name: "mounts", Gauge: true, Help: "Mounts made by erofsd."}
	Register(reg, "test", core, counters.Func{Descs: []*counters.Desc{mounts}, Emit: func(emit func(counters.Value)) {
		counters.Emitter(emit).Add(mounts, 3)
	}})

	core.Stats.Fetches.Add(7)
	core.Stats.FetchedBytes.Add(7 << 20)
	core.Stats.DigestFailures.Add(2)
	core.Stats.CopiedBytes.Add(4 << 20)
	core.Stats.PrefetchBytesDone.Add(5 << 20)
	core.Stats.PrefetchBytesLeft.Add(3 << 20)
	h.BackendFetch.Observe(0.01)
	h.FanotifyRead.Observe(0.002)

	want := `
# HELP erofsd_backend_fetches_total Chunks fetched from blob stores.
# TYPE erofsd_backend_fetches_total counter
erofsd_backend_fetches_total 7
# HELP erofsd_backend_copied_bytes_total Part of backend_fetched_bytes_total copied from local blob files into cache files in the kernel (copy_file_range) and verified where it landed.
# TYPE erofsd_backend_copied_bytes_total counter
erofsd_backend_copied_bytes_total 4.194304e+06
# HELP erofsd_chunk_digest_failures_total Chunks whose sha256 did not match the image's digest table (never handed to the kernel).
# TYPE erofsd_chunk_digest_failures_total counter
erofsd_chunk_digest_failures_total 2
# HELP erofsd_mounts Mounts made by erofsd.
# TYPE erofsd_mounts gauge
erofsd_mounts 3
# HELP erofsd_prefetch_bytes_done_total Bytes of prefetch plans now in the cache: fetched by prefetch, or found there already.
# TYPE erofsd_prefetch_bytes_done_total counter
erofsd_prefetch_bytes_done_total 5.24288e+06
# HELP erofsd_prefetch_bytes_left Bytes the running prefetches still plan to fill.
# TYPE erofsd_prefetch_bytes_left gauge
erofsd_prefetch_bytes_left 3.145728e+06
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"erofsd_backend_fetches_total", "erofsd_backend_copied_bytes_total", "erofsd_chunk_digest_failures_total", "erofsd_mounts",
		"erofsd_prefetch_bytes_done_total", "erofsd_prefetch_bytes_left"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "erofsd_read_duration_seconds"); n != 2 {
		t.Fatalf("read latency series: %d, want cachefiles and fanotify", n)
	}
	// Every metric must pass the registry's lint (names, help, types).
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}

func TestCacheSpaceMetrics(t *testing.T) {
	dir := t.TempDir()
	fan, err := fanotify.New(fanotify.Config{CacheDir: dir, CacheLimit: 1 << 30})
	if err != nil {
		t.Skipf("no fanotify group here (%v): the cache metrics are read from a fanotify server", err)
	}
	defer fan.Release()
	os.WriteFile(filepath.Join(dir, "0123"), make([]byte, 64<<10), 0o600)
	if _, err := fan.EnforceLimit(context.Background()); err != nil {
		t.Fatal(err)
	}
	fan.Stats.Evicted.Add(2)
	fan.Stats.EvictedBytes.Add(3 << 20)
	fan.Stats.NoSpace.Add(1)
	reg := prometheus.NewPedanticRegistry()
	Register(reg, "test", fan)
	want := `
# HELP erofsd_cache_evicted_bytes_total Bytes allocated to the cache files given up to make room.
# TYPE erofsd_cache_evicted_bytes_total counter
erofsd_cache_evicted_bytes_total{frontend="fanotify"} 3.145728e+06
# HELP erofsd_cache_evicted_objects_total Cache files given up to make room: objects culled from the cachefiles cache, blob files evicted from the fanotify cache.
# TYPE erofsd_cache_evicted_objects_total counter
erofsd_cache_evicted_objects_total{frontend="fanotify"} 2
# HELP erofsd_cache_limit_bytes The configured cap on the front end's cache (fanotify only; absent without a cap).
# TYPE erofsd_cache_limit_bytes gauge
erofsd_cache_limit_bytes{frontend="fanotify"} 1.073741824e+09
# HELP erofsd_cache_objects Cache files of the front end (cachefiles objects, fanotify blob files).
# TYPE erofsd_cache_objects gauge
erofsd_cache_objects{frontend="fanotify"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "erofsd_cache_evicted_bytes_total",
		"erofsd_cache_evicted_objects_total", "erofsd_cache_limit_bytes", "erofsd_cache_objects"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"erofsd_cache_used_bytes", "erofsd_cache_filesystem_free_bytes", "erofsd_cache_filesystem_size_bytes", "erofsd_cache_filesystem_used_bytes", "erofsd_cache_no_space_total"} {
		if n := testutil.CollectAndCount(reg, name); n != 1 {
			t.Errorf("%s: %d series", name, n)
		}
	}
	if got := gathered(t, reg, "erofsd_cache_used_bytes"); got < 64<<10 {
		t.Errorf("used bytes %v, want at least the 64 KiB file", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}

// gathered returns the value of a gathered gauge with one series.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}
