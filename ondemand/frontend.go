package ondemand

import (
	"context"
	"errors"
	"sync"

	"github.com/erofsd/erofsd/internal/counters"
	"golang.org/x/sys/unix"
)

// Frontend is a kernel front end: it answers the kernel's requests for
// the data of registered images and makes their mounts. The cachefiles
// (on-demand fscache) and fanotify (pre-content events on file-backed
// mounts) front ends implement it.
type Frontend interface {
	// Name is the front end's name: "cachefiles" or "fanotify".
	Name() string
	// Serve answers the kernel until ctx ends or Close is called; it
	// waits for the requests being handled before it returns.
	Serve(ctx context.Context) error
	// Close makes Serve return. It is safe to call more than once.
	Close() error
	// Mount mounts im read-only on the directory target. Release the
	// result once target is unmounted.
	Mount(ctx context.Context, im *Image, target string) (Mounted, error)
	// Adopt takes over a mount of im on target that an earlier daemon
	// made, after checking that target holds it.
	Adopt(ctx context.Context, im *Image, target string) (Mounted, error)
	// KeepCache keeps the cache within its limits until ctx ends,
	// logging what it did.
	KeepCache(ctx context.Context)
	// Stop prepares erofsd's exit while Serve still runs. forGood means
	// no daemon takes over: mounts must fail rather than wait.
	Stop(forGood bool) error
	// Release gives the kernel fd up; call it after Serve returned.
	Release() error
	// Counters reports the front end's counters, labelled with its name.
	counters.Source
}

// Mounted is what a front end holds for one mount (watched cache files,
// resolved objects); Release drops it after the unmount.
type Mounted interface {
	Release()
}

// MountedFunc adapts a function to Mounted.
type MountedFunc func()

// Release calls f.
func (f MountedFunc) Release() { f() }

// Resolver maps the kernel's names for a cache object to its source.
// *Registry implements it.
type Resolver interface {
	Resolve(volumeKey, cookieKey string) (*Object, error)
}

// ErrCacheFull is wrapped by the errors of fills that were not tried
// because their data could not be written: the cache is full of data
// mounted images use. The reader gets EIO.
var ErrCacheFull = errors.New("cache full")

// IsNoSpace reports whether err is the kernel refusing a cache write for
// lack of space: ENOSPC, EDQUOT, or ENOBUFS (cachefiles below bstop).
func IsNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.ENOBUFS)
}

// AlignUp rounds n up to a whole number of blocks.
func AlignUp(n int64) int64 { return alignUp(n) }

// Pool bounds the kernel requests a front end handles at once, on
// goroutines of their own. Requests wait for a worker; readahead takes
// one only when it is idle and a quarter of the workers stay idle after
// it, so that requests come first: a readahead run holds its worker for
// a whole fetch, and sequential readers of a few blobs would otherwise
// hold them all while other mounts' reads wait.
type Pool struct {
	sem chan struct{}
	wg  sync.WaitGroup
}

// NewPool returns a pool of n workers (at least 1).
func NewPool(n int) *Pool {
	return &Pool{sem: make(chan struct{}, max(n, 1))}
}

// Acquire waits for an idle worker; it reports false if ctx ended first.
func (p *Pool) Acquire(ctx context.Context) bool {
	select {
	case p.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// TryAcquire takes a worker only if one is idle.
func (p *Pool) TryAcquire() bool {
	select {
	case p.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// tryAcquireForReadahead takes a worker only if a quarter of the
// workers (rounded down) stay idle after it.
func (p *Pool) tryAcquireForReadahead() bool {
	if !p.TryAcquire() {
		return false
	}
	if cap(p.sem)-len(p.sem) < cap(p.sem)/4 {
		p.Put()
		return false
	}
	return true
}

// Put gives back a worker acquired and not used.
func (p *Pool) Put() { <-p.sem }

// Go runs fn on an acquired worker, which it gives back after fn.
func (p *Pool) Go(fn func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.Put()
		fn()
	}()
}

// Wait waits for every fn started by Go.
func (p *Pool) Wait() { p.wg.Wait() }

// Readahead is the front ends' background readahead after a fill of
// [off, off+n) of src: on an idle worker only (requests come first), it
// fills the range src suggests, unless present reports it is there
// already or hold (which keeps the cache object open for the fill,
// false: it is closing) refuses. fill runs on the worker and must let
// the object go. A worker is taken before the range is asked for: src
// hands a range out once, so it must not be dropped for want of one. It
// returns the range src suggested (n == 0: none).
//
// A source that can hand out more of its window (a blob's, see
// blobSource.ReadaheadMore) gets up to maxRunsPerAccess ranges started,
// each on a worker of its own, so that a stream's window fills at once.
func (p *Pool) Readahead(src Source, off, n int64, present func(off, n int64) bool, hold func() bool, fill func(off, n int64)) (int64, int64) {
	if !p.tryAcquireForReadahead() {
		return 0, 0
	}
	raOff, raN := src.Readahead(off, n)
	if !p.startReadahead(raOff, raN, present, hold, fill) {
		return raOff, raN
	}
	if more, ok := src.(ReadaheadMorer); ok {
		for k := 1; k < maxRunsPerAccess && p.tryAcquireForReadahead(); k++ {
			if o, m := more.ReadaheadMore(); !p.startReadahead(o, m, present, hold, fill) {
				break
			}
		}
	}
	return raOff, raN
}

// BlobProver is a Source that checks every chunk it writes as a step of
// its blob's sha256 (the image's chunk states cover the blob): a cache
// file that holds all of it, every block written through sources of this
// one description (the same cache object name, so a prefetch's writes
// count too), is the blob, with no whole-file check.
type BlobProver interface {
	// ProvesBlob reports whether a complete file of such writes is the
	// blob with this sha256.
	ProvesBlob(digest [32]byte) bool
}

var _ BlobProver = (*Object)(nil)

// ProvesBlob reports whether the object is the blob with this digest and
// all its chunks are chained.
func (o *Object) ProvesBlob(digest [32]byte) bool {
	return o.blob != nil && o.blob.chained() && o.blob.digest.Sum() == digest
}

// ReadaheadMorer is implemented by sources that can hand out more of the
// current stream's readahead window after Readahead (*Object, for blobs).
type ReadaheadMorer interface {
	// ReadaheadMore returns the next range to fetch ahead of the
	// stream Readahead last continued; n == 0: nothing more for now.
	ReadaheadMore() (off, n int64)
}

var _ ReadaheadMorer = (*Object)(nil)

// maxRunsPerAccess bounds the readahead ranges one access starts: a
// 32 MiB window's worth of 8 MiB runs (MaxRun; streamed runs are longer
// and fewer fit).
const maxRunsPerAccess = 4

// startReadahead runs fill for [off, off+n) on the worker acquired for
// it, unless the range is empty or present or hold refuses; then it
// gives the worker back and reports false.
func (p *Pool) startReadahead(off, n int64, present func(off, n int64) bool, hold func() bool, fill func(off, n int64)) bool {
	if n <= 0 || (present != nil && present(off, n)) || !hold() {
		p.Put()
		return false
	}
	p.Go(func() { fill(off, n) })
	return true
}
