package fanotify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/internal/space"
	"golang.org/x/sys/unix"
)

// Cache space. The cache directory holds one sparse file per blob and
// its presence map, and nothing else: every regular file in it counts
// and may be evicted. Files of blobs no mounted image uses (no Watch) are
// evicted, least recently used first, when the cache would exceed its
// limit or the filesystem is full; their next mount starts them empty.
//
// A watched file is never evicted, not even its complete blocks: the
// kernel reads a complete file without asking (it is unmarked), and a
// read allowed by an event proceeds after the answer, so blocks punched
// out or a file truncated under a mount could be read as zeros or fail
// a read erofsd had allowed. Fail-closed wins over space: when the
// mounted images alone fill the cache, writes of new chunks are refused
// (ondemand.ErrCacheFull, or ENOSPC from the filesystem) and their readers get
// EIO; the presence map only ever records blocks that were written.

// errCacheFull is the error of a write that would take the cache past
// its limit when nothing can be evicted.
var errCacheFull = fmt.Errorf("fanotify %w: the cache files over the limit, or on the full filesystem, belong to mounted images", ondemand.ErrCacheFull)

// Bounds of eviction.
const (
	maxEvictScan    = 1 << 20 // directory entries one scan looks at
	maxEvictPerPass = 4096    // files removed by one pass
	evictPassTime   = 20 * time.Second
	defaultEvictIv  = 30 * time.Second
)

// CacheUsage is the cache directory's usage as the last scan saw it.
type CacheUsage struct {
	FS      space.FS // the filesystem holding the cache
	Bytes   int64    // allocated bytes of cache files and maps
	Files   int      // cache files (blobs)
	Limit   int64    // the configured limit (0: none)
	Scanned time.Time
}

// EvictResult is what one eviction pass did.
type EvictResult struct {
	Evicted int   // blob cache files removed (with their maps)
	Bytes   int64 // their allocated bytes
	Usage   CacheUsage

	raced bool // a file became evictable during the pass
}

// cacheState is the server's view of its cache directory.
type cacheState struct {
	used atomic.Int64 // allocated bytes, estimated between scans
	// pending counts bytes reserved for writes and copies still under
	// way: a scan may not see their blocks yet, so it counts them on top
	// of what it finds (counting some twice for a moment is safe;
	// forgetting them would let the cache grow past its limit).
	pending atomic.Int64
	scanned atomic.Bool
	usage   atomic.Pointer[CacheUsage]

	mu       sync.Mutex
	lastEnd  time.Time // when the last eviction pass ended
	lastFull bool      // and whether it could not make the room it was asked for
	freed    uint64    // counts files that became evictable: a pass that saw one watched must not stand
}

// futileWait is how long a pass that could not make room stands: writes
// meanwhile fail at once instead of scanning a full cache again.
const futileWait = time.Second

// evictable notes that a file became evictable: the next write that
// needs room scans again.
func (c *cacheState) evictable() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastFull = false
	c.freed++
}

func (c *cacheState) futile() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastFull && time.Since(c.lastEnd) < futileWait
}

// scanCache lists the blob cache files of the cache directory with
// their allocated bytes (map included), and returns the total.
func (s *Server) scanCache() (files []space.Victim, total int64, err error) {
	ents, err := os.ReadDir(s.cacheDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("scanning the fanotify cache: %w", err)
	}
	watched := s.watchedPaths()
	byPath := map[string]int{}
	for i, e := range ents {
		if i >= maxEvictScan {
			break
		}
		p := filepath.Join(s.cacheDir, e.Name())
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		bytes := st.Blocks * 512
		total += bytes
		data, isMap := strings.CutSuffix(p, ".present")
		j, ok := byPath[data]
		if !ok {
			j = len(files)
			byPath[data] = j
			files = append(files, space.Victim{Path: data, Wanted: watched[data]})
		}
		files[j].Bytes += bytes
		if !isMap {
			files[j].Used = space.LastUse(&st)
		}
	}
	return files, total, nil
}

func (s *Server) watchedPaths() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool, len(s.watches))
	for _, w := range s.watches {
		out[w.Path] = true
	}
	return out
}

// evict removes unwatched blob files, least recently used first, until
// enough reports that the cache (total allocated bytes) fits. The pass
// is bounded in files and time.
func (s *Server) evict(ctx context.Context, enough func(total int64) bool) (EvictResult, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	var res EvictResult
	s.cache.mu.Lock()
	freed := s.cache.freed
	s.cache.mu.Unlock()
	files, total, err := s.scanCache()
	if err != nil {
		return res, err
	}
	deadline := time.Now().Add(evictPassTime)
	var errs []error
	if !enough(total) {
		space.Order(files)
		for _, f := range files {
			if f.Wanted || enough(total) || res.Evicted >= maxEvictPerPass || ctx.Err() != nil || time.Now().After(deadline) {
				break // watched files sort last: none is ever evicted
			}
			ok, err := s.removeUnwatched(f)
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				res.Evicted++
				res.Bytes += f.Bytes
				total -= f.Bytes
			}
		}
	}
	s.Stats.Evicted.Add(int64(res.Evicted))
	s.Stats.EvictedBytes.Add(res.Bytes)
	s.cache.mu.Lock()
	// A file that became evictable during the pass (a watch closed
	// after the scan saw it) may be the room: the pass does not stand.
	res.raced = s.cache.freed != freed
	s.cache.lastEnd, s.cache.lastFull = time.Now(), !enough(total) && !res.raced
	s.cache.mu.Unlock()
	s.cache.used.Store(total + s.cache.pending.Load())
	s.cache.scanned.Store(true)
	res.Usage = CacheUsage{Bytes: total, Files: len(files) - res.Evicted, Limit: s.limit, Scanned: time.Now()}
	if fs, err := s.statfs(); err == nil {
		res.Usage.FS = fs
	} else {
		errs = append(errs, err)
	}
	s.cache.usage.Store(&res.Usage)
	return res, errors.Join(errs...)
}

// removeUnwatched removes a blob's map, then its data file, unless it is
// watched by now; no Watch can start on it meanwhile. A map without its
// data file, or the reverse, is reset by the next Watch: neither is ever
// trusted alone.
func (s *Server) removeUnwatched(f space.Victim) (bool, error) {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.watchedPaths()[f.Path] {
		return false, nil
	}
	var errs []error
	for _, p := range []string{f.Path + ".present", f.Path} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("evicting %s: %w", p, err))
		}
	}
	return len(errs) == 0, errors.Join(errs...)
}

// reserve accounts for n new bytes in the cache; over the limit it
// evicts unwatched files first (down to 90% of the limit, so that not
// every write evicts) and fails with ErrCacheFull if that is not enough.
// A reservation made is pending until the caller settles it, once its
// write is done.
func (s *Server) reserve(ctx context.Context, n int64) error {
	if err := s.reserveUsed(ctx, n); err != nil {
		return err
	}
	s.cache.pending.Add(n)
	return nil
}

// settle ends a reservation: the write or copy of its n bytes is done
// (its blocks allocated, or its bytes given back).
func (s *Server) settle(n int64) { s.cache.pending.Add(-n) }

func (s *Server) reserveUsed(ctx context.Context, n int64) error {
	if s.limit <= 0 || n <= 0 {
		s.cache.used.Add(n)
		return nil
	}
	if s.cache.scanned.Load() {
		if s.cache.used.Add(n) <= s.limit {
			return nil
		}
		s.cache.used.Add(-n)
	}
	target := s.limit - s.limit/10
	// A second pass if a file became evictable during the first (a
	// watch closed after its scan): that file may be the room.
	for pass := 0; pass < 2 && !s.cache.futile(); pass++ {
		res, _ := s.evict(ctx, func(total int64) bool { return total+n <= target })
		if !res.raced || s.cache.used.Load()+n <= s.limit {
			break
		}
	}
	if s.cache.used.Add(n) <= s.limit {
		return nil
	}
	s.cache.used.Add(-n)
	s.Stats.NoSpace.Add(1)
	return fmt.Errorf("%w (limit %d bytes)", errCacheFull, s.limit)
}

// statfs reads the usage of the cache's filesystem (its parent's until
// the directory is made by the first Watch).
func (s *Server) statfs() (space.FS, error) {
	fs, err := space.Statfs(s.cacheDir)
	if errors.Is(err, unix.ENOENT) {
		fs, err = space.Statfs(filepath.Dir(s.cacheDir))
	}
	return fs, err
}

// makeRoom evicts unwatched files after the filesystem refused a write
// of n bytes, until it has n bytes and 1% of its size free. It reports
// whether anything was evicted.
func (s *Server) makeRoom(ctx context.Context, n int64) bool {
	if s.cache.futile() {
		return false
	}
	res, _ := s.evict(ctx, func(int64) bool {
		fs, err := s.statfs()
		return err != nil || fs.Free >= n+fs.Size/100
	})
	return res.Evicted > 0
}

// EnforceLimit scans the cache and, over the limit, evicts unwatched
// files down to it. RunEvictor calls it periodically.
func (s *Server) EnforceLimit(ctx context.Context) (EvictResult, error) {
	if s.cacheDir == "" {
		return EvictResult{}, errors.New("fanotify: no cache directory configured")
	}
	return s.evict(ctx, func(total int64) bool { return s.limit <= 0 || total <= s.limit })
}

// RunEvictor enforces the limit and refreshes the usage every interval
// (default 30s) until ctx ends; report, if set, gets every pass.
func (s *Server) RunEvictor(ctx context.Context, interval time.Duration, report func(EvictResult, error)) {
	if s.cacheDir == "" {
		return
	}
	if interval <= 0 {
		interval = defaultEvictIv
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := s.EnforceLimit(ctx)
		if report != nil {
			report(res, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CacheUsage returns the cache's usage as the last scan saw it.
func (s *Server) CacheUsage() (CacheUsage, bool) {
	u := s.cache.usage.Load()
	if u == nil {
		return CacheUsage{}, false
	}
	return *u, true
}

// missingBytes returns the bytes of blocks in [off, off+n) not present.
func (w *Watch) missingBytes(off, n int64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var missing int64
	for b := off / ondemand.BlockSize; b*ondemand.BlockSize < off+n && b < w.size/ondemand.BlockSize; b++ {
		if w.present[b/8]&(1<<(b%8)) == 0 {
			missing += ondemand.BlockSize
		}
	}
	return missing
}
