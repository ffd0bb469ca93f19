package build

import (
	"context"
	"runtime"
	"sync"

	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// Compression runs on a worker per CPU, each with its own encoder, while
// the building goroutine reads the next files. Results are taken in the
// order files were added, and everything that places data (image blocks,
// blob packs, dedupe) happens then, on the building goroutine: the image
// is the same whatever the timing.

// zjob is one segment of one file.
type zjob struct {
	file     *zfile
	off      int64  // where data starts in the file
	data     []byte // the segment's bytes
	eof      bool   // the file's last segment
	compress bool   // worth trying (else the file is stored as is)
	exts     []cutExt
	err      error
	done     chan struct{}
}

// zpending bounds the segments in flight, and so the memory they hold.
func zpending() int { return 2*runtime.GOMAXPROCS(0) + 2 }

// zpipe is the worker pool and the queue of jobs in file order.
type zpipe struct {
	cfg     *zconfig
	jobs    chan *zjob
	pending []*zjob
	wg      sync.WaitGroup
}

func newZpipe(cfg *zconfig) *zpipe {
	p := &zpipe{cfg: cfg, jobs: make(chan *zjob, zpending())}
	for range runtime.GOMAXPROCS(0) {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

func (p *zpipe) work() {
	defer p.wg.Done()
	var enc zcodec.Encoder
	dst := make([]byte, p.cfg.pcluster)
	for j := range p.jobs {
		if j.compress {
			if enc == nil {
				enc, j.err = p.cfg.newEncoder()
			}
			if j.err == nil {
				j.exts, j.err = p.cfg.cutSegment(enc, j.data, j.off, j.eof, dst)
			}
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

// zsubmit queues a job and stores the results of finished ones, waiting
// for the oldest when too many are in flight.
func (b *Builder) zsubmit(ctx context.Context, j *zjob) error {
	p := b.zpipe
	j.done = make(chan struct{})
	if len(p.pending) >= zpending() {
		if err := b.zcollect(ctx, true); err != nil {
			return err
		}
	}
	p.pending = append(p.pending, j)
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
		if err := b.zstore(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// zdrain stores every queued job's result and closes the open blob pack,
// so that all data added so far is placed.
func (b *Builder) zdrain(ctx context.Context) error {
	if b.zpipe == nil {
		return nil
	}
	for len(b.zpipe.pending) > 0 {
		if err := b.zcollect(ctx, true); err != nil {
			return err
		}
	}
	return b.zpackFlush()
}
