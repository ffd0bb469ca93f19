package ondemand

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/prefetchlist"
)

// Errors from prefetch.
var (
	ErrNoTarget     = errors.New("blob has no open cache object to prefetch into")
	ErrTargetClosed = errors.New("cache object closed")
)

// Target is an open cache object of a blob that prefetch may write into.
// A front end attaches one to the Object it resolved (Object.Attach) once
// the object can be written; releasing the Object detaches it.
type Target interface {
	// Write calls fn with a writer into the cache object, keeping the
	// object open meanwhile; prefetch is about to fill [off, off+n). It
	// fails without calling fn if the object is closed or cannot be
	// written.
	Write(ctx context.Context, off, n int64, fn func(BlockWriter) error) error
	// Present reports whether every block covering [off, off+n) is in
	// the cache object already; false when unknown.
	Present(off, n int64) bool
}

// attached is a target and the object whose source fills it.
type attached struct {
	obj *Object
	t   Target
}

func targetKey(volume, blobName string) string { return volume + "\x00" + blobName }

// Attach makes t the cache object prefetch fills for this object's blob
// in its volume, through this object's source (so that prefetch and the
// kernel's reads share fetches and know what is written). It returns a
// function that detaches t; Release detaches it too. Attaching to a
// bootstrap object does nothing.
func (o *Object) Attach(t Target) (detach func()) {
	if o.blob == nil || o.reg == nil {
		return func() {}
	}
	a := &attached{obj: o, t: t}
	key := targetKey(o.volume, o.blob.name)
	r := o.reg
	r.tmu.Lock()
	if r.targets == nil {
		r.targets = map[string][]*attached{}
	}
	r.targets[key] = append(r.targets[key], a)
	r.tmu.Unlock()
	return func() { r.detach(key, func(x *attached) bool { return x == a }) }
}

func (o *Object) detachAll() {
	if o.blob == nil || o.reg == nil {
		return
	}
	o.reg.detach(targetKey(o.volume, o.blob.name), func(x *attached) bool { return x.obj == o })
}

func (r *Registry) detach(key string, match func(*attached) bool) {
	r.tmu.Lock()
	defer r.tmu.Unlock()
	ts, ok := r.targets[key]
	if !ok {
		return
	}
	if ts = slices.DeleteFunc(ts, match); len(ts) > 0 {
		r.targets[key] = ts
	} else {
		delete(r.targets, key)
	}
}

// target returns the first target attached for a blob of im.
func (r *Registry) target(im *Image, b *blobData) *attached {
	r.tmu.Lock()
	defer r.tmu.Unlock()
	if ts := r.targets[targetKey(im.VolumeKey(), b.name)]; len(ts) > 0 {
		return ts[0]
	}
	return nil
}

func (st *Stats) demandStart() {
	st.FillsInFlight.Add(1)
	st.lastFill.Store(time.Now().UnixNano())
}

func (st *Stats) demandEnd() {
	st.lastFill.Store(time.Now().UnixNano())
	st.FillsInFlight.Add(-1)
}

// Limiter paces prefetch to a bandwidth in bytes per second: each fill
// of n bytes starts no earlier than the previous fills' n/rate seconds
// allow. One Limiter may be shared by several prefetches (a daemon-wide
// limit). A nil *Limiter does not limit.
type Limiter struct {
	rate float64 // bytes per second

	mu   sync.Mutex
	next time.Time // when the next fill may start
}

// NewLimiter returns a limiter of bytesPerSec; 0 or less gives nil, no
// limit.
func NewLimiter(bytesPerSec int64) *Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return &Limiter{rate: float64(bytesPerSec)}
}

// Wait reserves n bytes and waits until they may be fetched. If ctx
// ends first, the reservation is given back.
func (l *Limiter) Wait(ctx context.Context, n int64) error {
	if l == nil {
		return ctx.Err()
	}
	d := time.Duration(float64(n) / l.rate * float64(time.Second))
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	start := l.next
	l.next = l.next.Add(d)
	l.mu.Unlock()
	if err := sleep(ctx, time.Until(start)); err != nil {
		l.mu.Lock()
		l.next = l.next.Add(-d)
		l.mu.Unlock()
		return err
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PrefetchOptions say what a prefetch fills and how.
type PrefetchOptions struct {
	// Start fills first the image's start set (erofs.Image.StartSet:
	// what its workload reads first, laid out at the front of its blobs)
	// without waiting for kernel reads to pause: the kernel is about to
	// ask for it.
	Start bool
	// StartMax bounds the start set bytes fetched eagerly (0: no bound):
	// the rest of a larger set is fetched like Files, paced and yielding
	// (an image's start set is its author's claim).
	StartMax int64
	// Files are files in the image whose chunks are filled next, in
	// this order: the chunks their ranges touch, or all of them (a
	// directory stands for the files under it, in lexical order). Paths
	// not in the image are reported in the result.
	Files []prefetchlist.Entry
	// Whole fills, after the files, every other chunk of every blob,
	// in blob order.
	Whole bool
	// Limiter bounds the bandwidth (nil: unlimited).
	Limiter *Limiter
	// Quiet is how long no front-end fill may have run before prefetch
	// fetches (default DefaultQuiet): prefetch yields to kernel reads.
	Quiet time.Duration
	// MaxFetch bounds one prefetch fill: adjacent planned chunks are
	// fetched together up to this many bytes (at most a blob's run:
	// MaxRun, or MaxStreamRun from a store that streams; a chunk larger
	// than it is fetched alone). A fill that runs out of FillTimeout
	// halves it for the fills after it. When it is 0, fills start at
	// DefaultMaxFetch and follow the store's pace: each fill sizes the
	// ones after it to what the store delivered to it in FillTarget.
	MaxFetch int64
	// FillTarget is how long a fill should take when its size follows
	// the store's pace (default DefaultFillTarget).
	FillTarget time.Duration
	// TargetWait is how long prefetch waits for a blob's cache object
	// to be attached before it gives up (default 10 s).
	TargetWait time.Duration
	// FillTimeout bounds one fill (default DefaultFillTimeout), as a
	// front end bounds a kernel read: a kernel read of a chunk a fill is
	// fetching waits for that fill, so a fill stuck on a hung store must
	// let go for the read to fetch the chunk itself.
	FillTimeout time.Duration
	// Parallel bounds the fills running at once (default
	// DefaultParallel): more hide the round trips of remote stores.
	Parallel int
}

// Defaults of PrefetchOptions.
const (
	DefaultQuiet       = 10 * time.Millisecond
	DefaultParallel    = 4
	DefaultFillTimeout = time.Minute
	// DefaultMaxFetch is the size of the first fills when MaxFetch is
	// not set (a whole prefetch through a link adding 20 ms per request,
	// in fills of one size: 120 MiB/s and 307 requests with 1 MiB
	// fills, 223 MiB/s and 79 with 4 MiB, 265 and 41 with 8 MiB;
	// BenchmarkRegistry).
	DefaultMaxFetch = 4 << 20
)

// DefaultFillTarget is how long a prefetch fill should take when its
// size follows the store (PrefetchOptions.MaxFetch unset): on a fast
// link few large requests fetch the image (a registry pays for each one:
// docker-registry about 4 ms of CPU), and on a slow one the fills in
// flight, which a kernel read of the same link waits behind, end soon.
const DefaultFillTarget = 250 * time.Millisecond

// minAdaptiveFetch is the least a fill that follows the store's pace
// asks for: below it, round trips rather than bytes set the pace.
const minAdaptiveFetch = 1 << 20

// maxFailures bounds the fills in a row that may fail before a prefetch
// gives up.
const maxFailures = 8

// PrefetchResult reports what a prefetch did.
type PrefetchResult struct {
	Planned int64    // bytes of the chunks planned
	Done    int64    // of which now in the cache: fetched by prefetch or there already
	Fetched int64    // bytes written during prefetch's own fills (a concurrent read may have fetched some)
	Failed  int      // chunks that could not be filled
	Missing []string // listed paths the image does not have
}

// planned is one chunk of a prefetch plan.
type planned struct {
	blob  int // index in Image.blobs
	c     chunk
	eager bool // fetched without waiting for kernel reads to pause
}

// Prefetch fills the chunks of im that opts plan into the cache objects
// attached for its blobs, in plan order, through the same path as kernel
// reads (verified, sharing fetches with them, skipping what is written).
// Before each fill it waits until no front-end fill has run for
// opts.Quiet, and for opts.Limiter; up to opts.Parallel fills run at
// once. It returns when the plan is done, when ctx ends, when im is
// unregistered, when a blob has no attached object for
// opts.TargetWait, or after maxFailures failed fills in a row, once its
// fills in flight have ended; the result counts what was done either
// way. Stats.PrefetchBytesDone and PrefetchBytesLeft follow its
// progress.
func (r *Registry) Prefetch(ctx context.Context, im *Image, opts PrefetchOptions) (PrefetchResult, error) {
	plan, missing, err := im.prefetchPlan(opts)
	p := &prefetch{r: r, im: im, limiter: opts.Limiter, res: PrefetchResult{Missing: missing}}
	if err != nil {
		return p.res, err
	}
	for _, pc := range plan {
		p.res.Planned += pc.c.length
	}
	p.left = p.res.Planned
	r.Stats.PrefetchBytesLeft.Add(p.left)
	if opts.Quiet <= 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.MaxFetch > 0 {
		p.fetchCap = min(opts.MaxFetch, MaxStreamRun)
		opts.MaxFetch = p.fetchCap
	} else {
		p.adaptive, p.fetchCap, opts.MaxFetch = true, MaxStreamRun, DefaultMaxFetch
	}
	p.fillTarget = opts.FillTarget
	if p.fillTarget <= 0 {
		p.fillTarget = DefaultFillTarget
	}
	if p.adaptive && p.limiter != nil {
		// Paced fills still run at the link's speed: a fill is a burst
		// that kernel reads wait behind, as long as the pace allows in
		// fillTarget.
		p.fetchCap = min(p.fetchCap, max(int64(p.limiter.rate*p.fillTarget.Seconds()), minAdaptiveFetch))
		opts.MaxFetch = min(opts.MaxFetch, p.fetchCap)
	}
	if opts.TargetWait <= 0 {
		opts.TargetWait = 10 * time.Second
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultParallel
	}
	if opts.FillTimeout <= 0 {
		opts.FillTimeout = DefaultFillTimeout
	}
	p.maxFetch.Store(opts.MaxFetch)
	runCtx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	err = p.dispatch(runCtx, plan, opts)
	if err != nil {
		cancel() // stop the fills in flight too
	}
	p.wg.Wait()
	cancel()
	r.Stats.PrefetchBytesLeft.Add(-p.left)
	switch {
	case p.stopErr != nil:
		err = p.stopErr
	case err != nil && ctx.Err() != nil:
		err = ctx.Err()
	case err == nil && p.res.Failed > 0:
		err = fmt.Errorf("prefetch of %s: %d chunks not filled, the last error: %w", im.Spec.FSID, p.res.Failed, p.lastErr)
	}
	return p.res, err
}

// prefetch is one running Prefetch.
type prefetch struct {
	r      *Registry
	im     *Image
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// maxFetch is the size of the next fills: opts.MaxFetch, halved
	// below the size of each fill that ran out of time (on a link too
	// slow for a fill of that size within FillTimeout, prefetch goes on
	// in smaller fills instead of failing), and when adaptive, sized
	// after each fill to the store's pace (adapt), up to fetchCap. A
	// blob's fills are also at most its run (blobSource.runCap).
	maxFetch   atomic.Int64
	adaptive   bool
	fetchCap   int64
	fillTarget time.Duration
	limiter    *Limiter // opts.Limiter: paces fills, and fills done again

	mu       sync.Mutex // guards the rest
	res      PrefetchResult
	left     int64
	failures int // fills failed in a row
	lastErr  error
	stopErr  error // why a fill stopped the prefetch
}

// done counts n planned bytes as in the cache; p.mu is held.
func (p *prefetch) done(n int64) {
	p.res.Done += n
	p.left -= n
	p.r.Stats.PrefetchBytesDone.Add(n)
	p.r.Stats.PrefetchBytesLeft.Add(-n)
}

// dispatch walks the plan and starts the fills; it returns when every
// fill is started or it must stop.
func (p *prefetch) dispatch(ctx context.Context, plan []planned, opts PrefetchOptions) error {
	r, im := p.r, p.im
	slots := make(chan struct{}, opts.Parallel)
	for i := 0; i < len(plan); {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !r.registered(im) {
			return fmt.Errorf("prefetch of %s: %w", im.Spec.FSID, ErrNotFound)
		}
		a, err := r.waitTarget(ctx, im, im.blobs[plan[i].blob], opts.TargetWait)
		if err != nil {
			return err
		}
		src := a.obj.blob
		if src.has(a.t, plan[i].c) {
			p.mu.Lock()
			p.done(plan[i].c.length)
			p.mu.Unlock()
			i++
			<-slots
			continue
		}
		// Adjacent planned chunks of the blob that are not written yet
		// go in one fill (one store read).
		start := plan[i].c.off
		end := start + alignUp(plan[i].c.length)
		limit := min(p.maxFetch.Load(), src.runCap())
		j := i + 1
		for ; j < len(plan) && plan[j].blob == plan[i].blob && plan[j].c.off == end && plan[j].eager == plan[i].eager; j++ {
			next := end + alignUp(plan[j].c.length)
			if next-start > limit || src.has(a.t, plan[j].c) {
				break
			}
			end = next
		}
		// The start set is what the kernel is about to ask for: it is
		// neither paced nor held back for kernel reads to pause.
		if !plan[i].eager {
			if err := p.limiter.Wait(ctx, end-start); err != nil {
				return err
			}
			if err := r.Stats.waitIdle(ctx, opts.Quiet); err != nil {
				return err
			}
		}
		p.wg.Add(1)
		go p.fill(ctx, a, plan[i:j], start, end-start, opts.FillTimeout, slots)
		i = j
	}
	return nil
}

// fill fills [off, off+n), the planned chunks group, into a's object and
// counts the outcome.
func (p *prefetch) fill(ctx context.Context, a *attached, group []planned, off, n int64, timeout time.Duration, slots chan struct{}) {
	defer p.wg.Done()
	defer func() { <-slots }()
	src := a.obj.blob
	before := src.writtenIn(group)
	start := time.Now()
	err := p.write(ctx, a, group, off, n, timeout)
	after := src.writtenIn(group)
	if took := time.Since(start); err == nil && p.adaptive && took < timeout {
		// A fill that ran out of its timeout halved the size already
		// (write).
		p.adapt(after-before, took)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Fetched += after - before
	if group[0].eager {
		p.r.Stats.StartSetBytes.Add(after - before)
	}
	for _, pc := range group {
		if src.has(a.t, pc.c) {
			p.done(pc.c.length)
		} else if ctx.Err() == nil {
			p.res.Failed++
		}
	}
	switch {
	case err == nil:
		p.failures = 0
	case ctx.Err() != nil:
		// Stopping: not a failure of the fill.
	default:
		p.lastErr = err
		if p.failures++; p.failures >= maxFailures && p.stopErr == nil {
			p.stopErr = fmt.Errorf("prefetch of %s: %d fills in a row failed, the last: %w", p.im.Spec.FSID, p.failures, err)
			p.cancel()
		}
	}
}

// adapt sizes the fills after one that wrote n bytes in d to what the
// store delivers in p.fillTarget at that pace (the fills in flight share
// the link, so each one's pace is its share), moving at most by half or
// by double at a time, within minAdaptiveFetch and fetchCap. A fill that
// wrote less than half of a full one (its chunks were there or another
// fill's) says nothing of the pace.
func (p *prefetch) adapt(n int64, d time.Duration) {
	cur := p.maxFetch.Load()
	if n < min(cur, minAdaptiveFetch)/2 || d <= 0 {
		return
	}
	want := int64(float64(n) * p.fillTarget.Seconds() / d.Seconds())
	for {
		next := min(max(want, cur/2, minAdaptiveFetch), 2*cur, p.fetchCap)
		if next == cur || p.maxFetch.CompareAndSwap(cur, next) {
			return
		}
		cur = p.maxFetch.Load()
	}
}

// write fills [off, off+n), the chunks of group, within timeout. If that
// runs out, the link is too slow for fills this large: later fills are
// made half as large, and group is filled again in such pieces (each
// within timeout, split again if it runs out), down to single chunks.
func (p *prefetch) write(ctx context.Context, a *attached, group []planned, off, n int64, timeout time.Duration) error {
	src := a.obj.blob
	fctx, cancel := context.WithTimeout(ctx, timeout)
	err := a.t.Write(fctx, off, n, func(w BlockWriter) error { return src.safeFill(fctx, off, n, w) })
	timedOut := errors.Is(fctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err == nil || !timedOut || len(group) < 2 {
		return err
	}
	half := max(n/2, BlockSize)
	// Fills in flight at one size that all time out halve it once.
	for {
		cur := p.maxFetch.Load()
		if half >= cur || p.maxFetch.CompareAndSwap(cur, half) {
			break
		}
	}
	var errs []error
	for i := 0; i < len(group); {
		start := group[i].c.off
		end := start + alignUp(group[i].c.length)
		j := i + 1
		for ; j < len(group) && end+alignUp(group[j].c.length)-start <= half; j++ {
			end += alignUp(group[j].c.length)
		}
		// What the fill that ran out did not write is fetched again:
		// paced again, as --prefetch-rate bounds what is fetched. It
		// does not wait for kernel reads to pause again: the fill
		// already did, and holds its parallel slot meanwhile.
		if !group[0].eager && p.limiter != nil {
			var missing int64
			for _, pc := range group[i:j] {
				if !src.has(a.t, pc.c) {
					missing += alignUp(pc.c.length)
				}
			}
			if missing > 0 {
				if err := p.limiter.Wait(ctx, missing); err != nil {
					return errors.Join(append(errs, err)...)
				}
			}
		}
		if err := p.write(ctx, a, group[i:j], start, end-start, timeout); err != nil {
			errs = append(errs, err)
		}
		i = j
	}
	return errors.Join(errs...)
}

func (r *Registry) registered(im *Image) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.images[imageKey(im.Spec.FSID, im.Spec.DomainID)] == im
}

// waitTarget returns the target attached for blob b of im, waiting up to
// wait for one.
func (r *Registry) waitTarget(ctx context.Context, im *Image, b *blobData, wait time.Duration) (*attached, error) {
	deadline := time.Now().Add(wait)
	for {
		if a := r.target(im, b); a != nil {
			return a, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("prefetch of %s: blob %s: %w", im.Spec.FSID, b.digest, ErrNoTarget)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// waitIdle returns once no front-end fill has run for quiet. It waits
// as long as kernel reads keep coming: ctx bounds it.
func (st *Stats) waitIdle(ctx context.Context, quiet time.Duration) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		wait := quiet
		if st.FillsInFlight.Load() == 0 {
			since := time.Duration(time.Now().UnixNano() - st.lastFill.Load())
			if since >= quiet {
				return nil
			}
			wait = quiet - since
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// has reports whether chunk c is in the object t fills.
func (s *blobSource) has(t Target, c chunk) bool {
	s.mu.Lock()
	w := s.written[c.off]
	s.mu.Unlock()
	return w || t.Present(c.off, alignUp(c.length))
}

// writtenIn sums the lengths of the planned chunks this source wrote.
func (s *blobSource) writtenIn(ps []planned) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, p := range ps {
		if s.written[p.c.off] {
			n += p.c.length
		}
	}
	return n
}

// safeFill is fill with a panic turned into an error: prefetch runs in
// the daemon's own goroutine.
func (s *blobSource) safeFill(ctx context.Context, off, n int64, w BlockWriter) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in prefetch of %s: %v\n%s", s.digest, p, debug.Stack())
		}
	}()
	return s.fill(ctx, off, n, w)
}

// prefetchPlan lists the chunks opts ask for, each once: the start set's
// chunks (Start, eager), the listed files' chunks in list order, then
// (Whole) every other chunk in blob order. It also returns the listed
// paths the image lacks.
func (im *Image) prefetchPlan(opts PrefetchOptions) ([]planned, []string, error) {
	var plan []planned
	seen := map[chunkKey]bool{}
	add := func(p planned) {
		if k := (chunkKey{p.blob, p.c.off}); !seen[k] {
			seen[k] = true
			plan = append(plan, p)
		}
	}
	if opts.Start {
		var eager int64
		for _, e := range im.start {
			bi := int(e.Device) - 1
			for _, c := range im.blobs[bi].chunksIn(int64(e.BlkAddr)*BlockSize, int64(e.Blocks)*BlockSize) {
				eager += c.length
				add(planned{blob: bi, c: c, eager: opts.StartMax <= 0 || eager <= opts.StartMax})
			}
		}
	}
	var missing []string
	if len(opts.Files) > 0 && len(im.blobs) > 0 {
		img, err := erofs.Open(im.file, erofs.WithSize(im.Size))
		if err != nil {
			return nil, nil, fmt.Errorf("prefetch of %s: %w", im.Spec.FSID, err)
		}
		defer img.Close()
		for _, entry := range opts.Files {
			files, err := filesUnder(img, entry.Path)
			if err != nil {
				missing = append(missing, entry.Path)
				continue
			}
			for _, f := range files {
				fcs, err := img.Chunks(f)
				if err != nil {
					// Not chunk-based (data inline in the image) or
					// not a regular file: nothing to fetch.
					continue
				}
				for _, fc := range fcs {
					if fc.Hole || fc.Device < 1 || fc.Device > len(im.blobs) || !touches(entry, fc.Offset, fc.Length) {
						continue
					}
					bi := fc.Device - 1
					for _, c := range im.blobs[bi].chunksIn(int64(fc.BlkAddr)*BlockSize, alignUp(fc.Length)) {
						add(planned{blob: bi, c: c})
					}
				}
			}
		}
	}
	if opts.Whole {
		for bi, b := range im.blobs {
			for _, c := range b.chunks {
				add(planned{blob: bi, c: c})
			}
		}
	}
	return plan, missing, nil
}

// chunkKey names a chunk of an image by its blob and offset.
type chunkKey struct {
	blob int
	off  int64
}

// touches reports whether a list entry covers any of [off, off+n) of its
// file.
func touches(e prefetchlist.Entry, off, n int64) bool {
	if e.Whole() {
		return true
	}
	for _, r := range e.Ranges {
		if r.Off < off+n && off < r.End() {
			return true
		}
	}
	return false
}

// filesUnder resolves a listed path ("/usr/bin/x" or "usr/bin/x") to
// itself, or for a directory to the files under it in lexical order.
func filesUnder(img fs.FS, name string) ([]string, error) {
	p := strings.TrimPrefix(path.Clean("/"+strings.TrimSpace(name)), "/")
	if p == "" {
		p = "."
	}
	st, err := fs.Stat(img, p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	// The image has not been through Check: a directory entry may point
	// back at an ancestor. Each directory is entered once, and the walk
	// is bounded.
	var out []string
	entered := map[uint64]bool{}
	walked := 0
	err = fs.WalkDir(img, p, func(f string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if walked++; walked > maxPlanEntries {
			return fmt.Errorf("prefetch of %s: more than %d entries", name, maxPlanEntries)
		}
		if d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if st, ok := fi.Sys().(*erofs.Stat); ok {
				if entered[st.Nid] {
					return fs.SkipDir
				}
				entered[st.Nid] = true
			}
		}
		if d.Type().IsRegular() {
			out = append(out, f)
		}
		return nil
	})
	return out, err
}

// maxPlanEntries bounds the entries one prefetch list item may walk.
const maxPlanEntries = 4 << 20

// chunksIn returns the blob's chunks overlapping [off, off+n).
func (d *blobData) chunksIn(off, n int64) []chunk {
	i := d.chunkEndingAfter(off)
	j := i
	for j < len(d.chunks) && d.chunks[j].off < off+n {
		j++
	}
	return d.chunks[i:j]
}
