package cachefiles

import (
	"context"
	"fmt"

	"github.com/erofsd/erofsd/ondemand"
	"golang.org/x/sys/unix"
)

// attachTarget makes an open blob object a prefetch target: prefetch
// writes into its anonymous fd like a READ's fill, and the object stays
// open while it does. Releasing the object (after CLOSE) detaches it.
func (s *Server) attachTarget(o *object) {
	if o.obj.Kind == "blob" {
		o.obj.Attach(objectTarget{s: s, o: o})
	}
}

type objectTarget struct {
	s *Server
	o *object
}

func (t objectTarget) Write(ctx context.Context, off, n int64, fn func(ondemand.BlockWriter) error) error {
	s, o := t.s, t.o
	s.mu.Lock()
	if o.closing {
		s.mu.Unlock()
		return fmt.Errorf("%s: %w", o.obj.Name(), ondemand.ErrTargetClosed)
	}
	o.inflight++
	s.mu.Unlock()
	defer s.release(o)
	return fn(objectWriter{ctx: ctx, s: s, io: o.io, limit: ondemand.AlignUp(o.obj.Size())})
}

// Present asks the cache file: the anonymous fd seeks in it, and a range
// with no hole was written before (by this daemon or an earlier one).
func (t objectTarget) Present(off, n int64) bool {
	fd, ok := t.o.io.(anonFD)
	if !ok || n <= 0 {
		return false
	}
	// Hold the object open around the seek: after a CLOSE its fd is
	// closed, and the number may belong to another file by then.
	s, o := t.s, t.o
	s.mu.Lock()
	if o.closing {
		s.mu.Unlock()
		return false
	}
	o.inflight++
	s.mu.Unlock()
	defer s.release(o)
	hole, err := unix.Seek(int(fd), off, unix.SEEK_HOLE)
	return err == nil && hole >= min(off+n, ondemand.AlignUp(t.o.obj.Size()))
}
