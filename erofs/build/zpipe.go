package build

import (
	"context"
	"sync"
)

// Compression runs on a fixed number of lanes, each a goroutine with its
// own encoder, while the building goroutine reads the next files. Job i
// goes to lane i mod zlanes, and each job starts with its encoder reset,
// so a segment's extents depend on its bytes alone. Results are taken in
// the order files were added, and everything that places data (image
// blocks, blob packs, dedupe) happens then, on the building goroutine:
// the image is the same whatever the timing and the number of CPUs.

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

// zlanes is the number of compression lanes: enough to keep a few CPUs
// busy, and a constant so that images do not depend on the machine.
const zlanes = 4

// zpending bounds the segments in flight, and so the memory they hold.
const zpending = 2*zlanes + 2

// zpipe is the lanes and the queue of jobs in file order.
type zpipe struct {
	cfg     *zconfig
	lanes   []chan *zjob
	next    int // jobs submitted so far
	pending []*zjob
	wg      sync.WaitGroup
}

func newZpipe(cfg *zconfig) *zpipe {
	p := &zpipe{cfg: cfg}
	for range zlanes {
		lane := make(chan *zjob, zpending)
		p.lanes = append(p.lanes, lane)
		p.wg.Add(1)
		go p.work(lane)
	}
	return p
}

func (p *zpipe) work(lane chan *zjob) {
	defer p.wg.Done()
	l := &zlane{cfg: p.cfg, dst: make([]byte, 2*p.cfg.pcluster)}
	for j := range lane {
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
	if p.lanes != nil {
		for _, lane := range p.lanes {
			close(lane)
		}
		p.wg.Wait()
		p.lanes = nil
	}
}

// zsubmit queues a job and stores the results of finished ones, waiting
// for the oldest when too many are in flight.
func (b *Builder) zsubmit(ctx context.Context, j *zjob) error {
	p := b.zpipe
	j.done = make(chan struct{})
	if len(p.pending) >= zpending {
		if err := b.zcollect(ctx, true); err != nil {
			return err
		}
	}
	p.pending = append(p.pending, j)
	p.lanes[p.next%zlanes] <- j
	p.next++
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
	for b.zpipe != nil && len(b.zpipe.pending) > 0 {
		if err := b.zcollect(ctx, true); err != nil {
			return err
		}
	}
	return b.zpackFlush()
}
