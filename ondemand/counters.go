package ondemand

import "github.com/erofsd/erofsd/internal/counters"

// Counter families of the serving core and of the kernel front ends,
// described once: the front ends report theirs under these, labelled
// with their name, and package metrics and erofsctl status read them.
var (
	KernelRequests = &counters.Desc{Name: "kernel_requests_total", Labels: []string{"frontend", "type", "result"},
		Help: "Kernel requests handled, by front end, type and result."}
	CacheWritten = &counters.Desc{Name: "cache_written_bytes_total", Labels: []string{"frontend"},
		Help: "Bytes written into the kernel's cache files."}
	RequestsInFlight = &counters.Desc{Name: "requests_in_flight", Labels: []string{"frontend"}, Gauge: true,
		Help: "Kernel read requests being handled."}
	OpenObjects = &counters.Desc{Name: "open_objects", Labels: []string{"frontend"}, Gauge: true,
		Help: "Cache objects the kernel has open (cachefiles) or cache files watched (fanotify)."}
	Readaheads = &counters.Desc{Name: "readaheads_total", Labels: []string{"frontend"},
		Help: "Background fills of the chunks after a read."}
	HandlerPanics = &counters.Desc{Name: "handler_panics_total", Labels: []string{"frontend"},
		Help: "Kernel requests whose handling panicked (answered with an error)."}
	TimedOut = &counters.Desc{Name: "requests_timed_out_total", Labels: []string{"frontend"},
		Help: "Kernel read requests not served within --request-timeout (answered with EIO)."}

	// Cache space, as the last periodic check saw it (cachefiles: the
	// cull pass; fanotify: the eviction pass).
	CacheFSSize = &counters.Desc{Name: "cache_filesystem_size_bytes", Labels: []string{"frontend"}, Gauge: true,
		Help: "Size of the filesystem holding the front end's cache."}
	CacheFSUsed = &counters.Desc{Name: "cache_filesystem_used_bytes", Labels: []string{"frontend"}, Gauge: true,
		Help: "Bytes in use on the filesystem holding the front end's cache (by anything: the cache, other files)."}
	CacheFSFree = &counters.Desc{Name: "cache_filesystem_free_bytes", Labels: []string{"frontend"}, Gauge: true,
		Help: "Bytes free (for unprivileged users) on the filesystem holding the front end's cache."}
	CacheUsed = &counters.Desc{Name: "cache_used_bytes", Labels: []string{"frontend"}, Gauge: true,
		Help: "Bytes allocated to the cache files found in the cache directory: fanotify blob files and their maps; cachefiles objects, except those the kernel created for images mounted now (unlinked temporary files until unmount)."}
	CacheObjects = &counters.Desc{Name: "cache_objects", Labels: []string{"frontend"}, Gauge: true,
		Help: "Cache files of the front end (cachefiles objects, fanotify blob files)."}
	CacheLimit = &counters.Desc{Name: "cache_limit_bytes", Labels: []string{"frontend"}, Gauge: true,
		Help: "The configured cap on the front end's cache (fanotify only; absent without a cap)."}
	CacheEvicted = &counters.Desc{Name: "cache_evicted_objects_total", Labels: []string{"frontend"},
		Help: "Cache files given up to make room: objects culled from the cachefiles cache, blob files evicted from the fanotify cache."}
	CacheEvictedBytes = &counters.Desc{Name: "cache_evicted_bytes_total", Labels: []string{"frontend"},
		Help: "Bytes allocated to the cache files given up to make room."}
	CacheNoSpace = &counters.Desc{Name: "cache_no_space_total", Labels: []string{"frontend"},
		Help: "Writes into the cache refused for lack of space (ENOBUFS below cachefiles' bstop, ENOSPC, the fanotify cap); a read still refused after culling fails with EIO."}
	CacheGraveyard = &counters.Desc{Name: "cache_graveyard_removed_total",
		Help: "Entries deleted from cachefiles' graveyard directory."}
	CacheVerified = &counters.Desc{Name: "cache_verified_bytes_total", Labels: []string{"frontend"},
		Help: "Bytes of complete cache files checked whole against their blob's sha256 before being read natively."}
	CacheProven = &counters.Desc{Name: "cache_proven_bytes_total", Labels: []string{"frontend"},
		Help: "Bytes of complete cache files read natively without a whole check: every chunk was verified as a step of its blob's sha256 (images with chunk states)."}
	CacheNotBlob = &counters.Desc{Name: "cache_files_not_blob_total", Labels: []string{"frontend"},
		Help: "Complete cache files whose sha256 is not their blob's digest (an image naming a blob it does not describe): left to be served through events."}

	// The serving core.
	Fetches = &counters.Desc{Name: "backend_fetches_total",
		Help: "Chunks fetched from blob stores."}
	FetchedBytes = &counters.Desc{Name: "backend_fetched_bytes_total",
		Help: "Bytes of chunks fetched from blob stores."}
	DigestFailures = &counters.Desc{Name: "chunk_digest_failures_total",
		Help: "Chunks whose sha256 did not match the image's digest table (never handed to the kernel)."}
	ZeroChunks = &counters.Desc{Name: "zero_chunks_total",
		Help: "All-zero chunks (the holes of sparse files) written as zeros without a fetch."}
	Coalesced = &counters.Desc{Name: "coalesced_fetches_total",
		Help: "Chunk fills that waited for a fill of the same chunk instead of fetching again."}
	CoalescedReads = &counters.Desc{Name: "backend_coalesced_reads_total",
		Help: "Single blob store reads that fetched several adjacent chunks."}
	CopiedBytes = &counters.Desc{Name: "backend_copied_bytes_total",
		Help: "Part of backend_fetched_bytes_total copied from local blob files into cache files in the kernel (copy_file_range) and verified where it landed."}
	PrefetchDone = &counters.Desc{Name: "prefetch_bytes_done_total",
		Help: "Bytes of prefetch plans now in the cache: fetched by prefetch, or found there already."}
	PrefetchLeft = &counters.Desc{Name: "prefetch_bytes_left", Gauge: true,
		Help: "Bytes the running prefetches still plan to fill."}
	StartSetBytes = &counters.Desc{Name: "start_set_fetched_bytes_total",
		Help: "Bytes of images' start sets fetched ahead of the kernel by the start prefetch."}
	StartSetHits = &counters.Desc{Name: "start_set_hits_total",
		Help: "Kernel reads of start set chunks that found them fetched ahead (fanotify; cachefiles does not show reads of cached data)."}
	StartSetLate = &counters.Desc{Name: "start_set_late_total",
		Help: "Kernel reads of start set chunks the start prefetch had not fetched yet."}
	StartSetMisses = &counters.Desc{Name: "start_set_misses_total",
		Help: "Kernel reads, of images that record a start set, of chunks outside it (the start read more than its recorded list)."}
	Images = &counters.Desc{Name: "images", Gauge: true,
		Help: "Images registered."}
	Mounts = &counters.Desc{Name: "mounts", Gauge: true,
		Help: "Mounts made by erofsd."}
)

// FrontendCounters are the families a front end may report.
var FrontendCounters = []*counters.Desc{KernelRequests, CacheWritten, RequestsInFlight, OpenObjects, Readaheads, HandlerPanics, TimedOut,
	CacheFSSize, CacheFSUsed, CacheFSFree, CacheUsed, CacheObjects, CacheLimit, CacheEvicted, CacheEvictedBytes, CacheNoSpace,
	CacheGraveyard, CacheVerified, CacheProven, CacheNotBlob}

// Describe names the serving core's families.
func (r *Registry) Describe(describe func(*counters.Desc)) {
	for _, d := range []*counters.Desc{Fetches, FetchedBytes, DigestFailures, ZeroChunks, Coalesced, CoalescedReads, CopiedBytes, PrefetchDone, PrefetchLeft, StartSetBytes, StartSetHits, StartSetLate, StartSetMisses, Images} {
		describe(d)
	}
}

// Counters reports the serving core's counters.
func (r *Registry) Counters(emit func(counters.Value)) {
	e := counters.Emitter(emit)
	st := &r.Stats
	e.Add(Fetches, st.Fetches.Load())
	e.Add(FetchedBytes, st.FetchedBytes.Load())
	e.Add(DigestFailures, st.DigestFailures.Load())
	e.Add(ZeroChunks, st.ZeroChunks.Load())
	e.Add(Coalesced, st.Coalesced.Load())
	e.Add(CoalescedReads, st.CoalescedFetches.Load())
	e.Add(CopiedBytes, st.CopiedBytes.Load())
	e.Add(PrefetchDone, st.PrefetchBytesDone.Load())
	e.Add(PrefetchLeft, st.PrefetchBytesLeft.Load())
	e.Add(StartSetBytes, st.StartSetBytes.Load())
	e.Add(StartSetHits, st.StartSetHits.Load())
	e.Add(StartSetLate, st.StartSetLate.Load())
	e.Add(StartSetMisses, st.StartSetMisses.Load())
	r.mu.Lock()
	n := len(r.images)
	r.mu.Unlock()
	e.Add(Images, int64(n))
}
