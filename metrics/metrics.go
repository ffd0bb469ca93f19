// Package metrics exposes erofsd's counters as Prometheus metrics. The
// serving core and the front ends keep plain atomic counters; a
// collector reads them at scrape time, so nothing is counted twice.
// Latencies are histograms the daemon passes to the core and front ends
// as observers. Label values are fixed small sets (front end, request
// type, result): no digests, paths or image names.
package metrics

import (
	"runtime"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const ns = "erofsd"

// Sources are what the collector reads. Nil front ends are skipped.
type Sources struct {
	Registry   *ondemand.Registry
	Cachefiles *cachefiles.Server
	Fanotify   *fanotify.Server
	Mounts     func() int
	Version    string
	// Backends are the blob stores' counters by kind (hand the same
	// Stats to blobstore.Open); nil: no erofsd_backend_* per-kind series.
	Backends *blobstore.Stats
}

// Histograms are the latency observers to hand to the core and the front
// ends.
type Histograms struct {
	CachefilesRead ondemand.Observer // READ arrival to completion
	FanotifyRead   ondemand.Observer // event arrival to answer
	BackendFetch   ondemand.Observer // one chunk fetch from a blob store
}

// NewHistograms registers the latency histograms.
func NewHistograms(reg prometheus.Registerer) *Histograms {
	read := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "read_duration_seconds",
		Help:    "Time from a kernel read request (cachefiles READ or fanotify pre-access event) to its answer.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"frontend"})
	fetch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "backend_fetch_duration_seconds",
		Help:    "Time to fetch one chunk from a blob store (each attempt).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	})
	reg.MustRegister(read, fetch)
	return &Histograms{
		CachefilesRead: read.WithLabelValues("cachefiles"),
		FanotifyRead:   read.WithLabelValues("fanotify"),
		BackendFetch:   fetch,
	}
}

// Register registers the counter collector, build info and the Go and
// process collectors.
func Register(reg prometheus.Registerer, src Sources) {
	reg.MustRegister(&collector{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "build_info", Help: "Build information; the value is 1.",
		ConstLabels: prometheus.Labels{"version": src.Version, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(info)
}

var (
	descRequests = prometheus.NewDesc(ns+"_kernel_requests_total",
		"Kernel requests handled, by front end, type and result.", []string{"frontend", "type", "result"}, nil)
	descWritten = prometheus.NewDesc(ns+"_cache_written_bytes_total",
		"Bytes written into the kernel's cache files.", []string{"frontend"}, nil)
	descInFlight = prometheus.NewDesc(ns+"_requests_in_flight",
		"Kernel read requests being handled.", []string{"frontend"}, nil)
	descOpenObjects = prometheus.NewDesc(ns+"_open_objects",
		"Cache objects the kernel has open (cachefiles) or cache files watched (fanotify).", []string{"frontend"}, nil)
	descReadaheads = prometheus.NewDesc(ns+"_readaheads_total",
		"Background fills of the chunk after a read.", []string{"frontend"}, nil)
	descFetches = prometheus.NewDesc(ns+"_backend_fetches_total",
		"Chunks fetched from blob stores.", nil, nil)
	descFetchedBytes = prometheus.NewDesc(ns+"_backend_fetched_bytes_total",
		"Bytes of chunks fetched from blob stores.", nil, nil)
	descDigestFailures = prometheus.NewDesc(ns+"_chunk_digest_failures_total",
		"Chunks whose sha256 did not match the image's digest table (never handed to the kernel).", nil, nil)
	descZeroChunks = prometheus.NewDesc(ns+"_zero_chunks_total",
		"All-zero chunks (the holes of sparse files) written as zeros without a fetch.", nil, nil)
	descVerifiedBytes = prometheus.NewDesc(ns+"_cache_verified_bytes_total",
		"Bytes of complete cache files checked whole against their blob's sha256 before being read natively.", []string{"frontend"}, nil)
	descNotBlob = prometheus.NewDesc(ns+"_cache_files_not_blob_total",
		"Complete cache files whose sha256 is not their blob's digest (an image naming a blob it does not describe): left to be served through events.", []string{"frontend"}, nil)
	descCoalesced = prometheus.NewDesc(ns+"_coalesced_fetches_total",
		"Chunk fills that waited for a fill of the same chunk instead of fetching again.", nil, nil)
	descRuns = prometheus.NewDesc(ns+"_backend_coalesced_reads_total",
		"Single blob store reads that fetched several adjacent chunks.", nil, nil)
	descBackendRequests = prometheus.NewDesc(ns+"_backend_requests_total",
		"Requests sent to blob stores (each attempt at each host; local stores: opens and reads), by backend kind.", []string{"backend"}, nil)
	descBackendRetries = prometheus.NewDesc(ns+"_backend_retries_total",
		"Blob store request rounds repeated after a temporary failure (5xx, reset, short read, timeout), by backend kind.", []string{"backend"}, nil)
	descBackendFallbacks = prometheus.NewDesc(ns+"_backend_fallbacks_total",
		"Blob store requests passed on to the next host because a registry mirror failed, by backend kind.", []string{"backend"}, nil)
	descBackendErrors = prometheus.NewDesc(ns+"_backend_errors_total",
		"Blob store operations that failed after retries and fallbacks, by backend kind and error class.", []string{"backend", "class"}, nil)
	descBackendBytes = prometheus.NewDesc(ns+"_backend_received_bytes_total",
		"Blob bytes received from blob stores, including attempts that failed later, by backend kind.", []string{"backend"}, nil)
	descPrefetchDone = prometheus.NewDesc(ns+"_prefetch_bytes_done_total",
		"Bytes of prefetch plans now in the cache: fetched by prefetch, or found there already.", nil, nil)
	descPrefetchLeft = prometheus.NewDesc(ns+"_prefetch_bytes_left",
		"Bytes the running prefetches still plan to fill.", nil, nil)
	descImages = prometheus.NewDesc(ns+"_images",
		"Images registered.", nil, nil)
	descMounts = prometheus.NewDesc(ns+"_mounts",
		"Mounts made by erofsd.", nil, nil)

	// Cache space, as the last periodic check saw it (cachefiles: the
	// cull pass; fanotify: the eviction pass).
	descFSSize = prometheus.NewDesc(ns+"_cache_filesystem_size_bytes",
		"Size of the filesystem holding the front end's cache.", []string{"frontend"}, nil)
	descFSUsed = prometheus.NewDesc(ns+"_cache_filesystem_used_bytes",
		"Bytes in use on the filesystem holding the front end's cache (by anything: the cache, other files).", []string{"frontend"}, nil)
	descFSFree = prometheus.NewDesc(ns+"_cache_filesystem_free_bytes",
		"Bytes free (for unprivileged users) on the filesystem holding the front end's cache.", []string{"frontend"}, nil)
	descCacheUsed = prometheus.NewDesc(ns+"_cache_used_bytes",
		"Bytes allocated to the cache files found in the cache directory: fanotify blob files and their maps; cachefiles objects, except those the kernel created for images mounted now (unlinked temporary files until unmount).", []string{"frontend"}, nil)
	descCacheObjects = prometheus.NewDesc(ns+"_cache_objects",
		"Cache files of the front end (cachefiles objects, fanotify blob files).", []string{"frontend"}, nil)
	descCacheLimit = prometheus.NewDesc(ns+"_cache_limit_bytes",
		"The configured cap on the front end's cache (fanotify only; absent without a cap).", []string{"frontend"}, nil)
	descEvicted = prometheus.NewDesc(ns+"_cache_evicted_objects_total",
		"Cache files given up to make room: objects culled from the cachefiles cache, blob files evicted from the fanotify cache.", []string{"frontend"}, nil)
	descEvictedBytes = prometheus.NewDesc(ns+"_cache_evicted_bytes_total",
		"Bytes allocated to the cache files given up to make room.", []string{"frontend"}, nil)
	descNoSpace = prometheus.NewDesc(ns+"_cache_no_space_total",
		"Writes into the cache refused for lack of space (ENOBUFS below cachefiles' bstop, ENOSPC, the fanotify cap); a read still refused after culling fails with EIO.", []string{"frontend"}, nil)
	descGraveyard = prometheus.NewDesc(ns+"_cache_graveyard_removed_total",
		"Entries deleted from cachefiles' graveyard directory.", nil, nil)
)

type collector struct{ src Sources }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descWritten, descInFlight, descOpenObjects, descReadaheads,
		descFetches, descFetchedBytes, descDigestFailures, descZeroChunks, descVerifiedBytes, descNotBlob, descCoalesced, descRuns, descPrefetchDone, descPrefetchLeft, descImages, descMounts,
		descBackendRequests, descBackendRetries, descBackendFallbacks, descBackendErrors, descBackendBytes,
		descFSSize, descFSUsed, descFSFree, descCacheUsed, descCacheObjects, descCacheLimit, descEvicted, descEvictedBytes, descNoSpace, descGraveyard} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	if s := c.src.Cachefiles; s != nil {
		st := &s.Stats
		opens, openErrs := st.Opens.Load(), st.OpenErrors.Load()
		reads, readErrs := st.Reads.Load(), st.ReadErrors.Load()
		counter(descRequests, opens-openErrs, "cachefiles", "open", "ok")
		counter(descRequests, openErrs, "cachefiles", "open", "error")
		counter(descRequests, reads-readErrs, "cachefiles", "read", "ok")
		counter(descRequests, readErrs, "cachefiles", "read", "error")
		counter(descRequests, st.Closes.Load(), "cachefiles", "close", "ok")
		counter(descRequests, st.Malformed.Load(), "cachefiles", "malformed", "error")
		counter(descWritten, st.ReadBytes.Load(), "cachefiles")
		gauge(descInFlight, st.InFlight.Load(), "cachefiles")
		gauge(descOpenObjects, st.OpenObjects.Load(), "cachefiles")
		counter(descReadaheads, st.Readaheads.Load(), "cachefiles")
		counter(descEvicted, st.Culled.Load(), "cachefiles")
		counter(descEvictedBytes, st.CulledBytes.Load(), "cachefiles")
		counter(descNoSpace, st.NoSpace.Load(), "cachefiles")
		counter(descGraveyard, st.GraveyardRemoved.Load())
		if u, ok := s.CacheUsage(); ok {
			gauge(descFSSize, u.FS.Size, "cachefiles")
			gauge(descFSUsed, u.FS.Used, "cachefiles")
			gauge(descFSFree, u.FS.Free, "cachefiles")
			gauge(descCacheUsed, u.ObjectBytes, "cachefiles")
			gauge(descCacheObjects, int64(u.Objects), "cachefiles")
		}
	}
	if s := c.src.Fanotify; s != nil {
		st := &s.Stats
		counter(descRequests, st.Allowed.Load(), "fanotify", "read", "ok")
		counter(descRequests, st.Denied.Load(), "fanotify", "read", "error")
		counter(descRequests, st.Malformed.Load(), "fanotify", "malformed", "error")
		counter(descWritten, st.WrittenBytes.Load(), "fanotify")
		gauge(descInFlight, st.InFlight.Load(), "fanotify")
		gauge(descOpenObjects, st.Watches.Load(), "fanotify")
		counter(descReadaheads, st.Readaheads.Load(), "fanotify")
		counter(descEvicted, st.Evicted.Load(), "fanotify")
		counter(descEvictedBytes, st.EvictedBytes.Load(), "fanotify")
		counter(descNoSpace, st.NoSpace.Load(), "fanotify")
		counter(descVerifiedBytes, st.VerifiedBytes.Load(), "fanotify")
		counter(descNotBlob, st.NotBlob.Load(), "fanotify")
		if u, ok := s.CacheUsage(); ok {
			gauge(descFSSize, u.FS.Size, "fanotify")
			gauge(descFSUsed, u.FS.Used, "fanotify")
			gauge(descFSFree, u.FS.Free, "fanotify")
			gauge(descCacheUsed, u.Bytes, "fanotify")
			gauge(descCacheObjects, int64(u.Files), "fanotify")
			if u.Limit > 0 {
				gauge(descCacheLimit, u.Limit, "fanotify")
			}
		}
	}
	if r := c.src.Registry; r != nil {
		counter(descFetches, r.Stats.Fetches.Load())
		counter(descFetchedBytes, r.Stats.FetchedBytes.Load())
		counter(descDigestFailures, r.Stats.DigestFailures.Load())
		counter(descZeroChunks, r.Stats.ZeroChunks.Load())
		counter(descCoalesced, r.Stats.Coalesced.Load())
		counter(descRuns, r.Stats.CoalescedFetches.Load())
		counter(descPrefetchDone, r.Stats.PrefetchBytesDone.Load())
		gauge(descPrefetchLeft, r.Stats.PrefetchBytesLeft.Load())
		gauge(descImages, int64(len(r.Images())))
	}
	if b := c.src.Backends; b != nil {
		for _, kind := range blobstore.Kinds {
			st := b.ByKind(kind)
			counter(descBackendRequests, st.Requests.Load(), kind)
			counter(descBackendRetries, st.Retries.Load(), kind)
			counter(descBackendFallbacks, st.Fallbacks.Load(), kind)
			counter(descBackendErrors, st.NotFound.Load(), kind, "not_found")
			counter(descBackendErrors, st.Unauthorized.Load(), kind, "unauthorized")
			counter(descBackendErrors, st.Temporary.Load(), kind, "temporary")
			counter(descBackendErrors, st.Other.Load(), kind, "other")
			counter(descBackendBytes, st.Bytes.Load(), kind)
		}
	}
	if c.src.Mounts != nil {
		gauge(descMounts, int64(c.src.Mounts()))
	}
}
