package fanotify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/erofsd/erofsd/ondemand"
)

// primeTimeout bounds the wait for the event a priming read raises.
const primeTimeout = 30 * time.Second

// Target returns the watch as a prefetch target, to attach to the
// Object it serves (ondemand.Object.Attach). Prefetch writes go through
// the watch's writer fd like the answers to events, and a file made
// complete is unmarked in the background, once proven or checked to be
// the blob (see finish). A watch
// that has no writer yet (no read has come since it was created) gets
// one on the first prefetch write: the target reads one byte at the
// range to fill through an ordinary fd, which raises a pre-content event
// like any reader's; Serve (which must be running) answers it, filling
// that range, and keeps the event's fd.
func (w *Watch) Target() ondemand.Target { return &watchTarget{w: w} }

type watchTarget struct {
	w       *Watch
	priming sync.Mutex // one priming read at a time
}

func (t *watchTarget) Present(off, n int64) bool { return t.w.has(off, n) }

func (t *watchTarget) Write(ctx context.Context, off, n int64, fn func(ondemand.BlockWriter) error) error {
	w := t.w
	w.mu.Lock()
	if w.refs == 0 || w.poisoned {
		w.mu.Unlock()
		return fmt.Errorf("%s: %w", w.Path, ondemand.ErrTargetClosed)
	}
	w.refs++
	noWriter := w.writeFD < 0
	w.mu.Unlock()
	defer w.Close()
	if noWriter {
		if err := t.prime(ctx, off); err != nil {
			return err
		}
	}
	if err := fn(blockWriter{ctx, w}); err != nil {
		return err
	}
	// As after a read: saving the map of a file this write completed
	// (an fdatasync of all its data) and checking it whole are not the
	// prefetch's to wait for.
	w.finishLater()
	return nil
}

// prime gets the watch a writer fd unless a concurrent write did.
func (t *watchTarget) prime(ctx context.Context, off int64) error {
	w := t.w
	t.priming.Lock()
	defer t.priming.Unlock()
	hasWriter := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.writeFD >= 0
	}
	if hasWriter() {
		return nil
	}
	if err := w.prime(ctx, off); err != nil {
		return err
	}
	if !hasWriter() {
		return fmt.Errorf("%s: no writer fd after a priming read", w.Path)
	}
	return nil
}

// prime reads one byte of the cache file at off through an fd of its
// own: the read waits for the pre-content event it raises, which the
// server answers like any other (and keeps its fd as the writer). The
// read runs in a goroutine so that ctx and primeTimeout bound the wait;
// if they end it first, the goroutine ends when the event is answered or
// the group closes.
func (w *Watch) prime(ctx context.Context, off int64) error {
	f, err := os.Open(w.Path)
	if err != nil {
		return fmt.Errorf("priming %s: %w", w.Path, err)
	}
	done := make(chan error, 1)
	go func() {
		defer f.Close()
		_, err := f.ReadAt(make([]byte, 1), off)
		done <- err
	}()
	timer := time.NewTimer(primeTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("priming %s at %d: %w", w.Path, off, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("priming %s at %d: no answer to the read's event in %v", w.Path, off, primeTimeout)
	}
}
