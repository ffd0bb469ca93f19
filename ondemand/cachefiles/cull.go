package cachefiles

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erofsd/erofsd/ondemand/internal/space"
	"golang.org/x/sys/unix"
)

// The cache directory as cachefiles lays it out (fs/cachefiles): objects
// live in cache/I<volume key>/@<fan>/D<cookie key> (keys that are not
// printable are encoded under other prefixes), and what the kernel
// retires is moved to graveyard/, which the daemon empties.
const (
	cacheSubdir     = "cache"
	graveyardSubdir = "graveyard"
)

// Bounds of one cull pass.
const (
	defaultCullInterval = 30 * time.Second
	maxCullPerPass      = 4096    // objects culled by one pass
	maxScan             = 1 << 20 // directory entries one scan looks at
	maxGraveyard        = 4096    // graveyard entries removed by one pass
	cullPassTimeout     = 20 * time.Second
	makeRoomWait        = 10 * time.Second // a write waiting for a pass
	futileWait          = time.Second      // a pass that left no room stands this long
)

// CacheUsage is the cache's space as the last cull pass saw it.
type CacheUsage struct {
	FS space.FS // the cache filesystem
	// Objects are the cache files under cache/ and ObjectBytes their
	// allocated bytes. Objects the kernel created while their image is
	// mounted are unlinked temporary files until it is unmounted: they
	// are not counted (nor can they be culled), but FS accounts for them.
	Objects     int
	ObjectBytes int64
	Scanned     time.Time
}

// CullResult is what one cull pass did.
type CullResult struct {
	Culled    int   // objects culled
	Bytes     int64 // their allocated bytes
	Busy      int   // candidates the kernel has in use (mounted)
	Graveyard int   // graveyard entries removed
	Usage     CacheUsage
}

// dirCommander writes device commands that name a file in a directory:
// the kernel resolves "cull" and "inuse" against the writer's current
// directory.
type dirCommander interface {
	inDir(dir, cmd string) error
	stop()
}

// culler keeps a bound cache within its limits.
type culler struct {
	dir      string
	lim      Limits
	interval time.Duration
	cmd      dirCommander
	statfs   func(string) (space.FS, error)
	wanted   func(volumeKey, cookieKey string) bool
	stats    *Stats

	sem   chan struct{} // one pass at a time
	usage atomic.Pointer[CacheUsage]

	// Under sem: when the last pass ended and whether it left room
	// (culled something, or found the cache above its cull threshold).
	lastEnd  time.Time
	lastRoom bool
	// closed is set when the kernel closed an object since: objects may
	// have become cullable, so the last pass no longer stands.
	closed atomic.Bool
	// fullUntil (unix nanoseconds) is set by a pass that found the cache
	// below bstop with nothing to cull: until then the kernel refuses
	// every write, so READs fail at once instead of fetching data that
	// cannot be written. A CLOSE clears it.
	fullUntil atomic.Int64
	// refused is the size of the last write the kernel refused: it
	// checks the space a write needs, so the cache is "stopped" for a
	// write of that size while fewer than that many bytes above bstop
	// are free.
	refused atomic.Int64
}

func newCuller(dir string, cfg Config, cmd dirCommander, stats *Stats) *culler {
	lim := cfg.Limits
	if lim.BRun == 0 && lim.BCull == 0 && lim.BStop == 0 {
		lim.BRun, lim.BCull, lim.BStop = 7, 5, 1 // the kernel's defaults
	}
	if lim.FRun == 0 && lim.FCull == 0 && lim.FStop == 0 {
		lim.FRun, lim.FCull, lim.FStop = 7, 5, 1
	}
	iv := cfg.CullInterval
	if iv == 0 {
		iv = defaultCullInterval
	}
	wanted := cfg.Wanted
	if wanted == nil {
		wanted = func(string, string) bool { return false }
	}
	return &culler{dir: dir, lim: lim, interval: iv, cmd: cmd, statfs: space.Statfs, wanted: wanted, stats: stats,
		sem: make(chan struct{}, 1)}
}

// lock takes the pass semaphore unless ctx ends first.
func (c *culler) lock(ctx context.Context) bool {
	select {
	case c.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *culler) unlock() { <-c.sem }

// low reports whether the cache filesystem is below a cull threshold.
func (c *culler) low(fs space.FS) bool {
	return space.Below(fs.Free, fs.Size, c.lim.BCull) || space.Below(fs.FilesFree, fs.Files, c.lim.FCull)
}

// enough reports whether culling can stop: both run thresholds are free.
func (c *culler) enough(fs space.FS) bool {
	return !space.Below(fs.Free, fs.Size, c.lim.BRun) && !space.Below(fs.FilesFree, fs.Files, c.lim.FRun)
}

// stopped reports whether the cache filesystem is below a stop
// threshold: the kernel refuses to grow the cache.
func (c *culler) stopped(fs space.FS) bool {
	return fs.Size > 0 && (space.Below(fs.Free-c.refused.Load(), fs.Size, c.lim.BStop) || space.Below(fs.FilesFree, fs.Files, c.lim.FStop))
}

// full reports whether a recent pass found the cache stopped with
// nothing to cull, and no object was closed since.
func (c *culler) full() bool { return time.Now().UnixNano() < c.fullUntil.Load() }

// objectClosed notes a CLOSE: objects may have become cullable.
func (c *culler) objectClosed() {
	c.closed.Store(true)
	c.fullUntil.Store(0)
}

// scanned is one cache object found by a scan.
type scanned struct {
	space.Victim
	volume string // the volume directory's name
}

// scan lists the cache objects, at most maxScan directory entries.
func (c *culler) scan() (objs []scanned, volumes map[string]int, err error) {
	root := filepath.Join(c.dir, cacheSubdir)
	vols, err := os.ReadDir(root)
	if err != nil {
		return nil, nil, fmt.Errorf("scanning the cache: %w", err)
	}
	volumes = map[string]int{}
	seen := 0
	for _, v := range vols {
		if !v.IsDir() {
			continue
		}
		volumes[v.Name()] += 0 // listed even when no object of it is visible
		volKey, isVol := strings.CutPrefix(v.Name(), "I")
		fans, err := os.ReadDir(filepath.Join(root, v.Name()))
		if err != nil {
			continue // culled meanwhile
		}
		for _, f := range fans {
			if !f.IsDir() {
				continue
			}
			fanDir := filepath.Join(root, v.Name(), f.Name())
			ents, err := os.ReadDir(fanDir)
			if err != nil {
				continue
			}
			for _, e := range ents {
				if seen++; seen > maxScan {
					return objs, volumes, nil
				}
				p := filepath.Join(fanDir, e.Name())
				var st unix.Stat_t
				if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
					continue
				}
				volumes[v.Name()]++
				cookie, isData := strings.CutPrefix(e.Name(), "D")
				objs = append(objs, scanned{volume: v.Name(), Victim: space.Victim{
					Path: p, Bytes: st.Blocks * 512, Used: space.LastUse(&st),
					Wanted: isVol && isData && c.wanted(volKey, cookie),
				}})
			}
		}
	}
	return objs, volumes, nil
}

// emptyGraveyard deletes what the kernel moved to graveyard/ (culled or
// retired directories), at most maxGraveyard entries.
func (c *culler) emptyGraveyard(deadline time.Time) (int, error) {
	gy := filepath.Join(c.dir, graveyardSubdir)
	ents, err := os.ReadDir(gy)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("graveyard: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if n >= maxGraveyard || time.Now().After(deadline) {
			break
		}
		if err := os.RemoveAll(filepath.Join(gy, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	c.stats.GraveyardRemoved.Add(int64(n))
	return n, errors.Join(errs...)
}

// pass culls objects no mount uses while the cache filesystem is below
// its cull thresholds, least recently used first (objects of images no
// longer registered before those of registered ones), until the run
// thresholds are free; every object is checked with "inuse" first and
// the kernel refuses to cull one in use. force culls every object not in
// use whatever the free space. A pass is bounded in objects and time.
func (c *culler) pass(ctx context.Context, force bool) (CullResult, error) {
	if !c.lock(ctx) {
		return CullResult{}, ctx.Err()
	}
	defer c.unlock()
	return c.passLocked(ctx, force)
}

func (c *culler) passLocked(ctx context.Context, force bool) (res CullResult, err error) {
	defer func() {
		c.lastEnd = time.Now()
		c.lastRoom = res.Culled > 0 || res.Graveyard > 0 || (res.Usage.FS.Size > 0 && !c.low(res.Usage.FS))
		var until int64
		if !c.lastRoom && c.stopped(res.Usage.FS) {
			until = c.lastEnd.Add(futileWait).UnixNano()
		}
		c.fullUntil.Store(until)
	}()
	deadline := time.Now().Add(cullPassTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	n, gerr := c.emptyGraveyard(deadline)
	res.Graveyard = n
	fs, err := c.statfs(c.dir)
	if err != nil {
		return res, err
	}
	objs, volumes, err := c.scan()
	if err != nil {
		return res, errors.Join(err, gerr)
	}
	res.Usage = CacheUsage{FS: fs, Objects: len(objs), Scanned: time.Now()}
	for _, o := range objs {
		res.Usage.ObjectBytes += o.Bytes
	}
	if !force && !c.low(fs) {
		c.usage.Store(&res.Usage)
		return res, gerr
	}
	victims := make([]space.Victim, len(objs))
	volOf := map[string]string{}
	for i, o := range objs {
		victims[i] = o.Victim
		volOf[o.Path] = o.volume
	}
	space.Order(victims)
	var errs []error
victims:
	for _, v := range victims {
		if ctx.Err() != nil || time.Now().After(deadline) || res.Culled >= maxCullPerPass {
			break
		}
		if !force && c.enough(fs) {
			break
		}
		dir, name := filepath.Split(v.Path)
		ok, err := c.cullOne(dir, name)
		switch {
		case errors.Is(err, unix.EBUSY):
			res.Busy++
			continue
		case err != nil:
			errs = append(errs, err)
			if errors.Is(err, unix.EIO) || errors.Is(err, errCommanderStopped) {
				break victims // a dead cache or a closed device: stop here
			}
			continue
		case !ok:
			continue
		}
		res.Culled++
		res.Bytes += v.Bytes
		res.Usage.Objects--
		res.Usage.ObjectBytes -= v.Bytes
		volumes[volOf[v.Path]]--
		if fs, err = c.statfs(c.dir); err != nil {
			errs = append(errs, err)
			break victims
		}
	}
	c.stats.Culled.Add(int64(res.Culled))
	c.stats.CulledBytes.Add(res.Bytes)
	// Volume directories left empty go too (a mounted image's volume is
	// in use: the kernel refuses); the kernel moves them to the
	// graveyard, emptied right after.
	for vol, left := range volumes {
		if left == 0 && time.Now().Before(deadline) {
			c.cullOne(filepath.Join(c.dir, cacheSubdir), vol)
		}
	}
	n, err = c.emptyGraveyard(deadline)
	res.Graveyard += n
	if fs2, err2 := c.statfs(c.dir); err2 == nil {
		res.Usage.FS = fs2
	}
	c.usage.Store(&res.Usage)
	return res, errors.Join(append(errs, gerr, err)...)
}

// cullOne culls dir/name unless the kernel has it in use (EBUSY). It
// reports false when the object went away meanwhile.
func (c *culler) cullOne(dir, name string) (bool, error) {
	for _, cmd := range []string{"inuse ", "cull "} {
		err := c.cmd.inDir(dir, cmd+name)
		switch {
		case errors.Is(err, unix.EBUSY):
			return false, err
		case errors.Is(err, unix.ESTALE), errors.Is(err, unix.ENOENT):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("cachefiles %q in %s: %w", cmd+name, dir, err)
		}
	}
	return true, nil
}

// makeRoom runs a pass for a write that failed for lack of space at
// failedAt and reports whether it is worth trying again. A pass that
// ended after the failure answers for it, and a pass that left no room
// less than futileWait ago stands, so that a full cache is not scanned
// again for every write. It waits at most makeRoomWait.
func (c *culler) makeRoom(ctx context.Context, failedAt time.Time, size int) bool {
	c.refused.Store(int64(size))
	ctx, cancel := context.WithTimeout(ctx, makeRoomWait)
	defer cancel()
	if !c.lock(ctx) {
		return false
	}
	defer c.unlock()
	fresh := c.closed.Swap(false)
	if c.lastEnd.After(failedAt) || (!fresh && !c.lastRoom && time.Since(c.lastEnd) < futileWait) {
		return c.lastRoom
	}
	c.passLocked(ctx, false)
	return c.lastRoom
}

// run checks the cache every interval until ctx ends.
func (c *culler) run(ctx context.Context, report func(CullResult, error)) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		res, err := c.pass(ctx, false)
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

var errCommanderStopped = errors.New("cachefiles device closed")

// cwdThread runs "cull" and "inuse" from one OS thread with a current
// directory of its own (unshare(CLONE_FS)), so that changing it does not
// move the rest of the process.
type cwdThread struct {
	reqs chan cwdReq
	quit chan struct{}
	done chan struct{} // closed when the thread stopped writing
	once sync.Once
}

type cwdReq struct {
	dir, cmd string
	res      chan error
}

func newCwdThread(write func(string) error) (*cwdThread, error) {
	t := &cwdThread{reqs: make(chan cwdReq), quit: make(chan struct{}), done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(t.done)
		// Never unlocked: the thread, with its private fs state, ends
		// with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			started <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		started <- nil
		for {
			select {
			case <-t.quit:
				return
			case r := <-t.reqs:
				err := unix.Chdir(r.dir)
				if err == nil {
					err = write(r.cmd)
				}
				r.res <- err
			}
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return t, nil
}

func (t *cwdThread) inDir(dir, cmd string) error {
	r := cwdReq{dir: dir, cmd: cmd, res: make(chan error, 1)}
	select {
	case t.reqs <- r:
	case <-t.quit:
		return errCommanderStopped
	}
	return <-r.res
}

// stop ends the thread and waits until it no longer writes to the
// device, so that the device fd can be closed.
func (t *cwdThread) stop() {
	t.once.Do(func() { close(t.quit) })
	<-t.done
}
