package build

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
)

// Compression runs on a few lanes, each a goroutine with its own
// encoder, while the building goroutine reads the next files. A free
// lane takes the next job; each job starts with its encoder reset (see
// zlane.encode for runs of zeros), so a segment's extents depend on its
// bytes alone, whichever lane cut it. Results are taken in the order
// files were added, and everything that places data (image blocks, blob
// packs, dedupe) happens then, on the building goroutine: the image is
// the same whatever the timing and the number of CPUs.

// zjob is one segment of one file.
type zjob struct {
	file *zfile
	off  int64  // where data starts in the file
	data []byte // the segment's bytes
	eof  bool   // the file's last segment
	exts []cutExt
	err  error
	done chan struct{}
}

// zlanes is the number of compression lanes: one per CPU, at least 2
// (the building goroutine reads while they compress) and at most 16.
// Images do not depend on it.
func zlanes() int { return min(max(runtime.GOMAXPROCS(0), 2), 16) }

// zpipe is the lanes and the queue of jobs in file order.
type zpipe struct {
	cfg  *zconfig
	jobs chan *zjob // to whichever lane is free
	// pending are the jobs in file order; maxPending bounds them, and
	// pendingBytes their data (at most zpendingBytes, unless one job is
	// more): enough that lanes find work while the oldest job, which
	// must be stored first, still runs.
	pending      []*zjob
	maxPending   int
	pendingBytes int
	wg           sync.WaitGroup
	// aborted: the build is given up; queued jobs end without being
	// compressed (up to zpendingBytes of work nobody will store).
	aborted atomic.Bool
}

// zpendingBytes bounds the segment data in flight.
const zpendingBytes = 8 * segmentSize

func newZpipe(cfg *zconfig) *zpipe {
	lanes := zlanes()
	p := &zpipe{cfg: cfg, maxPending: 8*lanes + 8}
	p.jobs = make(chan *zjob, p.maxPending)
	for range lanes {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

func (p *zpipe) work() {
	defer p.wg.Done()
	l := &zlane{cfg: p.cfg, dst: make([]byte, 2*p.cfg.pcluster)}
	for j := range p.jobs {
		if p.aborted.Load() {
			j.err = errFinished
			close(j.done)
			continue
		}
		if l.enc == nil {
			l.enc, j.err = p.cfg.newEncoder()
		}
		if j.err == nil {
			j.exts, j.err = l.cutSegment(j.data, j.off, j.eof)
		}
		close(j.done)
	}
}

// stop ends the workers once the queued jobs are done. Safe to call twice.
func (p *zpipe) stop() {
	if p.jobs != nil {
		close(p.jobs)
		p.wg.Wait()
		p.jobs = nil
	}
}

// abort ends the workers without compressing the jobs still queued.
func (p *zpipe) abort() {
	p.aborted.Store(true)
	p.stop()
}

// errFinished is what a finished or aborted build says when used again.
var errFinished = errors.New("build already finished or aborted")

// zsubmit queues a job and stores the results of finished ones, waiting
// for the oldest when too many are in flight.
func (b *Builder) zsubmit(ctx context.Context, j *zjob) error {
	p := b.zpipe
	if p.jobs == nil {
		return errFinished // stopped: a send would block for good
	}
	j.done = make(chan struct{})
	for len(p.pending) >= p.maxPending || len(p.pending) > 0 && p.pendingBytes+len(j.data) > zpendingBytes {
		if err := b.zcollect(ctx, true); err != nil {
			return err
		}
	}
	p.pending = append(p.pending, j)
	p.pendingBytes += len(j.data)
	p.jobs <- j
	return b.zcollect(ctx, false)
}

// zcollect stores the results of finished jobs at the head of the queue;
// with wait it waits for the head job first.
func (b *Builder) zcollect(ctx context.Context, wait bool) error {
	p := b.zpipe
	for len(p.pending) > 0 {
		j := p.pending[0]
		if wait {
			<-j.done
			wait = false
		} else {
			select {
			case <-j.done:
			default:
				return nil
			}
		}
		p.pending[0] = nil
		p.pending = p.pending[1:]
		p.pendingBytes -= len(j.data)
		if err := b.zstore(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// zdrain stores every queued job's result and closes the open blob pack,
// so that all data added so far is placed.
func (b *Builder) zdrain(ctx context.Context) error {
	for b.zpipe != nil && len(b.zpipe.pending) > 0 {
		if err := b.zcollect(ctx, true); err != nil {
			return err
		}
	}
	return b.zpackFlush()
}
