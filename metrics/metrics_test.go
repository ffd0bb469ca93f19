package metrics

import (
	"strings"
	"testing"

	"github.com/erofsd/erofsd/ondemand"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollectorReadsCounters(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	core := ondemand.NewRegistry()
	defer core.Close()
	h := NewHistograms(reg)
	Register(reg, Sources{Registry: core, Mounts: func() int { return 3 }, Version: "test"})

	core.Stats.Fetches.Add(7)
	core.Stats.FetchedBytes.Add(7 << 20)
	core.Stats.DigestFailures.Add(2)
	core.Stats.PrefetchBytesDone.Add(5 << 20)
	core.Stats.PrefetchBytesLeft.Add(3 << 20)
	h.BackendFetch.Observe(0.01)
	h.FanotifyRead.Observe(0.002)

	want := `
# HELP erofsd_backend_fetches_total Chunks fetched from blob stores.
# TYPE erofsd_backend_fetches_total counter
erofsd_backend_fetches_total 7
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
		"erofsd_backend_fetches_total", "erofsd_chunk_digest_failures_total", "erofsd_mounts",
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
