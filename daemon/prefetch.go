package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/prefetchlist"
	"github.com/sirupsen/logrus"
)

// prefetcher runs the background prefetch of the daemon's mounts: after
// a mount, the chunks of the files of its prefetch list, then (whole)
// the rest of its blobs, at the daemon-wide bandwidth limit, yielding to
// kernel reads. A prefetch ends when done or when its mount goes.
type prefetcher struct {
	reg      *ondemand.Registry
	mode     string            // --prefetch: the default for mounts that do not say
	start    bool              // --prefetch-start: fetch images' start sets at mount
	startMax int64             // --prefetch-start-max
	limiter  *ondemand.Limiter // --prefetch-rate, shared by every prefetch; nil: unlimited
	timeout  time.Duration     // --request-timeout: bounds each fill, as it bounds kernel reads
	log      logrus.FieldLogger

	mu   sync.Mutex
	runs map[string]*prefetchRun // by mountpoint
}

type prefetchRun struct {
	fsid, domain string
	opts         ondemand.PrefetchOptions
	cancel       context.CancelFunc
	done         chan struct{}
}

func newPrefetcher(reg *ondemand.Registry, cfg Config, log logrus.FieldLogger) *prefetcher {
	return &prefetcher{reg: reg, mode: cfg.Prefetch, start: cfg.PrefetchStart, startMax: cfg.PrefetchStartMax,
		limiter: ondemand.NewLimiter(cfg.PrefetchRate), timeout: cfg.RequestTimeout, log: log, runs: map[string]*prefetchRun{}}
}

// prefetchOptions are the options of a prefetch of the start set (start),
// the files and (whole) the rest, with the daemon's limits.
func (p *prefetcher) prefetchOptions(start, whole bool, files []prefetchlist.Entry) ondemand.PrefetchOptions {
	opts := ondemand.PrefetchOptions{Start: start, Whole: whole, Files: files, Limiter: p.limiter, FillTimeout: p.timeout}
	if start {
		opts.StartMax = p.startMax
	}
	return opts
}

// checkPrefetchMode validates --prefetch and a mount's prefetch field.
func checkPrefetchMode(s string) error {
	switch s {
	case "off", "whole":
		return nil
	}
	return fmt.Errorf("prefetch %q: want off or whole", s)
}

// options turns a mount request into prefetch options; run is false when
// the mount wants no prefetch.
func (p *prefetcher) options(req control.MountRequest) (opts ondemand.PrefetchOptions, run bool, err error) {
	if p == nil {
		p = &prefetcher{mode: "off"}
	}
	mode := p.mode
	if req.Prefetch != "" {
		mode = req.Prefetch
	}
	if err := checkPrefetchMode(mode); err != nil {
		return opts, false, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	}
	if req.Prefetch == "off" && len(req.PrefetchList) > 0 {
		return opts, false, fmt.Errorf("%w: a prefetch list with prefetch off", control.ErrBadRequest)
	}
	opts = p.prefetchOptions(p.start && req.Prefetch != "off", mode == "whole", req.PrefetchList)
	return opts, opts.Start || opts.Whole || len(opts.Files) > 0, nil
}

// resume starts again, after a restart, the prefetch a mount had.
func (p *prefetcher) resume(mp, fsid, domain string, saved savedPrefetch) {
	if p == nil {
		return
	}
	opts := p.prefetchOptions(saved.Start, saved.Whole, saved.Files)
	p.log.WithFields(logrus.Fields{"mountpoint": mp, "start": saved.Start, "whole": saved.Whole, "files": len(saved.Files)}).Info("resuming prefetch")
	p.run(mp, fsid, domain, opts)
}

// run opens the blob stores of a mount's image and then prefetches it,
// if opts ask for any, in the background.
func (p *prefetcher) run(mp, fsid, domain string, opts ondemand.PrefetchOptions) {
	if p == nil {
		return
	}
	im, ok := p.reg.Lookup(fsid, domain)
	if !ok {
		return
	}
	if opts.Start && im.StartBytes() == 0 {
		opts.Start = false // the image records no start set
	}
	prefetch := opts.Start || opts.Whole || len(opts.Files) > 0
	ctx, cancel := context.WithCancel(context.Background())
	run := &prefetchRun{fsid: fsid, domain: domain, opts: opts, cancel: cancel, done: make(chan struct{})}
	p.mu.Lock()
	if old := p.runs[mp]; old != nil {
		old.cancel()
	}
	p.runs[mp] = run
	p.mu.Unlock()
	log := p.log.WithFields(logrus.Fields{"fsid": fsid, "mountpoint": mp})
	go func() {
		defer close(run.done)
		defer cancel()
		defer func() {
			p.mu.Lock()
			if p.runs[mp] == run {
				delete(p.runs, mp)
			}
			p.mu.Unlock()
		}()
		// The first read of each blob then costs one store round trip,
		// not two (a registry's HEAD, then the data).
		timeout := p.timeout
		if timeout <= 0 {
			timeout = DefaultRequestTimeout
		}
		openCtx, openCancel := context.WithTimeout(ctx, timeout)
		if err := im.OpenStores(openCtx); err != nil && ctx.Err() == nil {
			log.WithError(err).Debug("blob stores not opened ahead (the first read opens them)")
		}
		openCancel()
		if !prefetch {
			return
		}
		start := time.Now()
		res, err := p.reg.Prefetch(ctx, im, opts)
		log = log.WithFields(logrus.Fields{"planned": res.Planned, "done": res.Done, "fetched": res.Fetched,
			"failed": res.Failed, "seconds": time.Since(start).Seconds()})
		if len(res.Missing) > 0 {
			log.WithFields(logrus.Fields{"paths": len(res.Missing), "first": res.Missing[0]}).Warn("prefetch list names paths the image lacks")
		}
		switch {
		case errors.Is(err, context.Canceled):
			log.Info("prefetch stopped")
		case err != nil:
			log.WithError(err).Warn("prefetch failed")
		default:
			log.Info("prefetch done")
		}
	}()
}

// stop ends the prefetch of a mount, waiting (bounded) for it to let go
// of the mount's cache objects. It returns a function that starts the
// prefetch again (for an unmount that failed).
func (p *prefetcher) stop(mp string) (resume func()) {
	if p == nil {
		return func() {}
	}
	p.mu.Lock()
	run := p.runs[mp]
	p.mu.Unlock()
	if run == nil {
		return func() {}
	}
	run.cancel()
	select {
	case <-run.done:
	case <-time.After(5 * time.Second):
		p.log.WithField("mountpoint", mp).Warn("prefetch still running 5 s after it was stopped")
	}
	return func() { p.run(mp, run.fsid, run.domain, run.opts) }
}

// stopAll ends every prefetch: all are told at once, then waited for,
// 5 s in all.
func (p *prefetcher) stopAll() {
	if p == nil {
		return
	}
	p.mu.Lock()
	runs := make([]*prefetchRun, 0, len(p.runs))
	for _, run := range p.runs {
		run.cancel()
		runs = append(runs, run)
	}
	p.mu.Unlock()
	deadline := time.After(5 * time.Second)
	for _, run := range runs {
		select {
		case <-run.done:
		case <-deadline:
			p.log.Warn("prefetch still running 5 s after it was stopped")
			return
		}
	}
}
