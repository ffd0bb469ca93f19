// Package cachefiles is erofsd's main kernel front end: it speaks the
// cachefiles on-demand protocol on /dev/cachefiles, so that EROFS mounted
// in fscache mode (mount -t erofs none -o fsid=...) pulls its data
// through the serving core. Every OPEN is answered with copen, every READ
// is completed with READ_COMPLETE whether or not its data could be
// produced (a READ completed without data makes the reader get EIO), and
// CLOSE releases the object.
package cachefiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/ondemand"
	abi "github.com/erofsd/erofsd/ondemand/internal/cachefiles"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// errCacheFull fails a READ without fetching its data while the cache is
// below bstop with nothing to cull (the kernel would refuse the write).
var errCacheFull = fmt.Errorf("cachefiles %w: below bstop and nothing to cull", ondemand.ErrCacheFull)

// Resolver maps the kernel's names for a cache object to its source.
type Resolver = ondemand.Resolver

// Config configures a Server.
type Config struct {
	// Workers bounds the READ requests handled at once (default 16).
	Workers int
	// RequestTimeout bounds a READ: one not filled within it is
	// completed without data (EIO) and its fill's context is cancelled
	// (default 60s).
	RequestTimeout time.Duration
	// Logger receives one line per failed request (default: discard).
	Logger logrus.FieldLogger
	// ReadLatency, if set, observes the seconds from a READ's arrival
	// to its completion.
	ReadLatency ondemand.Observer

	// Limits are written to the device before the cache is bound (see
	// Limits); zero keeps the kernel's defaults.
	Limits Limits
	// CacheDir is the cache directory: Open takes it as an argument;
	// Resume needs it here to cull the cache (empty: no culling).
	CacheDir string
	// CullInterval is how often RunCuller checks the cache's free space
	// (default 30s).
	CullInterval time.Duration
	// Wanted, if set, reports whether a registered image still refers to
	// an object (volume key, cookie key): such objects are culled last.
	Wanted func(volumeKey, cookieKey string) bool
}

// Stats counts requests by type and result.
type Stats struct {
	Opens, OpenErrors   atomic.Int64
	Reads, ReadErrors   atomic.Int64
	Closes              atomic.Int64
	ReadBytes           atomic.Int64 // bytes written into cache files
	InFlight            atomic.Int64 // READs being handled
	OpenObjects         atomic.Int64
	Malformed, Panicked atomic.Int64
	Readaheads          atomic.Int64 // background fills after sequential READs
	TimedOut            atomic.Int64 // READs answered at the request timeout
	// NoSpace counts writes into the cache the kernel refused for lack
	// of space (ENOBUFS below bstop, ENOSPC).
	NoSpace          atomic.Int64
	Culled           atomic.Int64 // objects culled
	CulledBytes      atomic.Int64 // their allocated bytes
	GraveyardRemoved atomic.Int64 // graveyard entries deleted
}

// kernel is the device side of the protocol; tests replace it.
type kernel interface {
	// wait blocks until a message may be pending or wake is called.
	wait() error
	// wake interrupts wait.
	wake()
	// read returns one message, or 0 bytes when none is pending.
	read(buf []byte) (int, error)
	// command writes one command line such as "copen 1,4096".
	command(cmd string) error
	// object returns the I/O handle for an anonymous fd from OPEN.
	object(fd int32) (objectIO, error)
}

// objectIO is one anonymous fd of a cache object.
type objectIO interface {
	pwrite(p []byte, off int64) error
	complete(msgID uint32) error
	close() error
}

// Server serves one bound cachefiles cache.
type Server struct {
	k       kernel
	dev     *device // the real device; nil in tests
	res     Resolver
	log     logrus.FieldLogger
	pool    *ondemand.Pool
	timeout time.Duration
	holeBug bool   // this kernel reads sparse holes wrongly in fscache mode
	noZip   bool   // this kernel refuses compressed inodes in fscache mode
	kernel  string // its release
	lat     ondemand.Observer
	Stats   Stats
	closed  atomic.Bool
	once    sync.Once
	// abort is the context of every request's fill: Stop(true) cancels
	// it, so that what is pending fails at once when erofsd stops for
	// good (on a handover it is left to the next daemon).
	abort     context.Context
	abortFill context.CancelFunc

	mu      sync.Mutex
	objects map[uint32]*object

	cull *culler    // nil without a cache directory (tests, Resume without CacheDir)
	cwd  *cwdThread // writes the culler's commands
}

// object is an open cache object: its fd, its source, and the READs in
// flight on it (the fd is closed after the last one, once CLOSE came).
type object struct {
	id       uint32
	io       objectIO
	obj      *ondemand.Object
	inflight int
	closing  bool
}

func newServer(k kernel, res Resolver, cfg Config) *Server {
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = l
	}
	release := KernelRelease()
	abort, abortFill := context.WithCancel(context.Background())
	return &Server{k: k, res: res, log: log, pool: ondemand.NewPool(cfg.Workers), timeout: cfg.RequestTimeout,
		holeBug: HolesReadWrong(release), noZip: CompressedUnreadable(release), kernel: release, lat: cfg.ReadLatency, objects: map[uint32]*object{},
		abort: abort, abortFill: abortFill}
}

// Serve reads and handles requests until ctx ends or Close is called. It
// waits for the READs in flight before returning; they are not cancelled
// (a process that exits meanwhile leaves them to the next daemon).
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.k.wake)
	defer stop()
	buf := make([]byte, abi.MsgMaxSize)
	defer s.pool.Wait()
	for {
		if ctx.Err() != nil || s.closed.Load() {
			return ctx.Err()
		}
		n, err := s.k.read(buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return fmt.Errorf("reading /dev/cachefiles: %w", err)
		}
		if n == 0 {
			if err := s.k.wait(); err != nil {
				return fmt.Errorf("polling /dev/cachefiles: %w", err)
			}
			continue
		}
		// Requests taken are finished even when ctx ends: completing a
		// READ because we are stopping would fail it; a READ left
		// unanswered is re-delivered to the next daemon after restore.
		// Only Stop(true) fails them.
		s.dispatch(s.abort, buf[:n])
	}
}

// Close makes Serve return. It is safe to call more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.k.wake()
	})
	return nil
}

func (s *Server) dispatch(ctx context.Context, b []byte) {
	m, err := abi.DecodeMsg(b)
	if err != nil {
		s.Stats.Malformed.Add(1)
		s.log.WithError(err).Error("malformed message from the kernel")
		return
	}
	switch m.Opcode {
	case abi.OpOpen:
		s.handleOpen(m)
	case abi.OpRead:
		s.handleRead(ctx, m)
	case abi.OpClose:
		s.handleClose(m)
	default:
		s.Stats.Malformed.Add(1)
		s.log.WithField("opcode", m.Opcode).Error("unknown opcode from the kernel")
	}
}

func (s *Server) handleOpen(m abi.Msg) {
	s.Stats.Opens.Add(1)
	o, err := abi.DecodeOpen(m.Payload)
	if err != nil {
		// Without the keys we cannot answer meaningfully, but the
		// kernel still waits for copen: refuse the object.
		s.Stats.OpenErrors.Add(1)
		s.log.WithError(err).Error("malformed OPEN")
		s.reply(m.ID, -int64(unix.EINVAL))
		return
	}
	obj, io, err := s.openObject(o)
	if err != nil {
		s.Stats.OpenErrors.Add(1)
		s.log.WithFields(logrus.Fields{"volume": o.VolumeKey, "cookie": o.CookieKey, "object": m.ObjectID}).WithError(err).Warn("OPEN refused")
		s.reply(m.ID, -int64(errnoOf(err)))
		return
	}
	s.mu.Lock()
	if old := s.objects[m.ObjectID]; old != nil {
		// The kernel reused an id we still track (a CLOSE we
		// missed): drop the old one.
		s.dropLocked(old)
	}
	added := &object{id: m.ObjectID, io: io, obj: obj}
	s.objects[m.ObjectID] = added
	s.mu.Unlock()
	s.Stats.OpenObjects.Add(1)
	s.log.WithFields(logrus.Fields{"object": m.ObjectID, "source": obj.Name(), "size": obj.Size()}).Debug("OPEN")
	if err := s.reply(m.ID, obj.Size()); err != nil {
		s.mu.Lock()
		if cur := s.objects[m.ObjectID]; cur != nil && cur.obj == obj {
			s.dropLocked(cur)
		}
		s.mu.Unlock()
		return
	}
	s.attachTarget(added)
}

// openObject resolves an OPEN and prepares its fd; on failure the fd is
// closed.
func (s *Server) openObject(o abi.Open) (obj *ondemand.Object, io objectIO, err error) {
	io, err = s.k.object(o.Fd)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			s.Stats.Panicked.Add(1)
			err = fmt.Errorf("panic resolving object: %v\n%s", r, debug.Stack())
		}
		if err != nil {
			io.close()
		}
	}()
	obj, err = s.res.Resolve(o.VolumeKey, o.CookieKey)
	return obj, io, err
}

func (s *Server) reply(id uint32, size int64) error {
	err := s.k.command(fmt.Sprintf("copen %d,%d", id, size))
	if err != nil {
		s.log.WithError(err).WithField("msg", id).Error("copen failed")
	}
	return err
}

// errnoOf picks the errno the kernel passes on for a refused OPEN.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	switch {
	case errors.As(err, &e) && e > 0 && e < 4096:
		return e
	case errors.Is(err, ondemand.ErrUnknownObject):
		return unix.ENOENT
	}
	return unix.EIO
}

func (s *Server) handleRead(ctx context.Context, m abi.Msg) {
	s.Stats.Reads.Add(1)
	arrived := time.Now()
	s.mu.Lock()
	o := s.objects[m.ObjectID]
	if o != nil && !o.closing {
		o.inflight++
	} else {
		o = nil
	}
	s.mu.Unlock()
	if o == nil {
		// Nothing to write into and no fd to complete on: the kernel
		// fails the request itself when the object is gone.
		s.Stats.ReadErrors.Add(1)
		s.log.WithField("object", m.ObjectID).Warn("READ for an unknown object")
		return
	}
	r, err := abi.DecodeRead(m.Payload)
	if !s.pool.Acquire(ctx) {
		s.complete(o, m.ID, ctx.Err(), r)
		return
	}
	s.Stats.InFlight.Add(1)
	s.pool.Go(func() {
		defer s.Stats.InFlight.Add(-1)
		if err == nil {
			// Start on the next chunk now, so that it is fetched and
			// verified on another core while this one is.
			s.readahead(ctx, o, r)
			err = s.fillTimed(ctx, o, r)
		}
		s.complete(o, m.ID, err, r)
		if s.lat != nil {
			s.lat.Observe(time.Since(arrived).Seconds())
		}
	})
}

// errTimedOut completes a READ its fill did not finish in time.
var errTimedOut = errors.New("not served within the request timeout")

// fillTimed fills a READ's range within the request timeout: past it,
// the fill's context is cancelled (the store request behind it ends) and
// the READ is answered without waiting further. A fill still running
// keeps the object open until it ends.
func (s *Server) fillTimed(ctx context.Context, o *object, r abi.Read) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.mu.Lock()
	o.inflight++ // for the fill, which may outlive this call
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer s.release(o)
		done <- s.fill(ctx, o, r)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if s.abort.Err() != nil {
			return errors.New("erofsd is stopping")
		}
		s.Stats.TimedOut.Add(1)
		return fmt.Errorf("READ of %d bytes at %d: %w (%v)", r.Len, r.Off, errTimedOut, s.timeout)
	}
}

// readahead fills, in the background, what the source suggests after a
// READ's range, when a worker is idle, so a sequential reader finds the
// next chunk fetched and verified. The object stays open until it is done.
func (s *Server) readahead(ctx context.Context, o *object, r abi.Read) {
	hold := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if o.closing {
			return false
		}
		o.inflight++
		return true
	}
	s.pool.Readahead(o.obj, int64(r.Off), int64(r.Len), nil, hold, func(off, n int64) {
		s.Stats.Readaheads.Add(1)
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		if err := s.fill(ctx, o, abi.Read{Off: uint64(off), Len: uint64(n)}); err != nil {
			s.log.WithError(err).WithField("source", o.obj.Name()).Debug("readahead failed")
		}
		s.release(o)
	})
}

// fill produces the requested range; a panic in a source becomes an error.
func (s *Server) fill(ctx context.Context, o *object, r abi.Read) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.Stats.Panicked.Add(1)
			err = fmt.Errorf("panic serving READ: %v\n%s", p, debug.Stack())
		}
	}()
	if r.Off > 1<<62 || r.Len > 1<<40 {
		return fmt.Errorf("READ out of range: %d bytes at %d", r.Len, r.Off)
	}
	if s.cull != nil && s.cull.full() {
		s.Stats.NoSpace.Add(1)
		return errCacheFull
	}
	w := objectWriter{ctx: ctx, s: s, io: o.io, limit: ondemand.AlignUp(o.obj.Size())}
	o.obj.KernelRead(int64(r.Off), int64(r.Len))
	return o.obj.Fill(ctx, int64(r.Off), int64(r.Len), w)
}

// complete always issues READ_COMPLETE, then releases the object if a
// CLOSE arrived meanwhile.
func (s *Server) complete(o *object, msgID uint32, err error, r abi.Read) {
	if err != nil {
		s.Stats.ReadErrors.Add(1)
		l := s.log.WithFields(logrus.Fields{"source": o.obj.Name(), "image": o.obj.Image.Spec.FSID, "off": r.Off, "len": r.Len}).WithError(err)
		if errors.Is(err, ondemand.ErrCacheFull) || ondemand.IsNoSpace(err) {
			// A full cache fails every READ: counted (Stats.NoSpace),
			// and reported once per check by the daemon, not per READ.
			l.Debug("READ failed: cache full")
		} else {
			l.Warn("READ failed")
		}
	}
	if cerr := o.io.complete(msgID); cerr != nil {
		s.log.WithError(cerr).WithField("msg", msgID).Error("READ_COMPLETE failed")
	}
	s.release(o)
}

// release ends one use of an object; the last use after CLOSE closes it.
func (s *Server) release(o *object) {
	s.mu.Lock()
	o.inflight--
	if o.closing && o.inflight == 0 {
		s.releaseLocked(o)
	}
	s.mu.Unlock()
}

func (s *Server) handleClose(m abi.Msg) {
	s.Stats.Closes.Add(1)
	if s.cull != nil {
		s.cull.objectClosed()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[m.ObjectID]
	if o == nil {
		return
	}
	s.dropLocked(o)
}

// dropLocked forgets an object; its fd is closed now or after its last
// READ completes.
func (s *Server) dropLocked(o *object) {
	delete(s.objects, o.id)
	o.closing = true
	if o.inflight == 0 {
		s.releaseLocked(o)
	}
}

func (s *Server) releaseLocked(o *object) {
	o.io.close()
	o.obj.Release()
	s.Stats.OpenObjects.Add(-1)
}

// objectWriter writes blocks into an object's anonymous fd.
type objectWriter struct {
	ctx   context.Context
	s     *Server
	io    objectIO
	limit int64 // the cache file's size (object size rounded up)
}

// WriteBlocks writes p at off. A write the kernel refuses for lack of
// space (ENOBUFS: the cache is below bstop; ENOSPC) makes room by culling
// objects no mount uses and is tried once more; if it still fails the
// READ completes without these blocks, so the reader gets EIO. Blocks
// never written stay holes, which the kernel never reads as data.
func (w objectWriter) WriteBlocks(p []byte, off int64) error {
	if off >= w.limit {
		return nil
	}
	if off+int64(len(p)) > w.limit {
		p = p[:w.limit-off]
	}
	err := w.io.pwrite(p, off)
	if ondemand.IsNoSpace(err) {
		w.s.Stats.NoSpace.Add(1)
		if w.s.cull != nil && w.s.cull.makeRoom(w.ctx, time.Now(), len(p)) {
			err = w.io.pwrite(p, off)
			if ondemand.IsNoSpace(err) {
				w.s.Stats.NoSpace.Add(1)
			}
		}
	}
	if err != nil {
		return err
	}
	w.s.Stats.ReadBytes.Add(int64(len(p)))
	return nil
}

// RunCuller keeps the cache within its limits until ctx ends: every
// CullInterval it empties the graveyard and, when the cache filesystem
// is below bcull (or fcull), culls objects no mount uses until brun (and
// frun) is free. report, if set, gets every pass's result. Without a
// cache directory it returns at once.
func (s *Server) RunCuller(ctx context.Context, report func(CullResult, error)) {
	if s.cull == nil {
		return
	}
	s.cull.run(ctx, report)
}

// Cull runs one cull pass now; force culls every object no mount uses,
// whatever the free space.
func (s *Server) Cull(ctx context.Context, force bool) (CullResult, error) {
	if s.cull == nil {
		return CullResult{}, errors.New("cachefiles: no cache directory to cull")
	}
	return s.cull.pass(ctx, force)
}

// CacheUsage returns the cache's usage as the last cull pass saw it.
func (s *Server) CacheUsage() (CacheUsage, bool) {
	if s.cull == nil {
		return CacheUsage{}, false
	}
	u := s.cull.usage.Load()
	if u == nil {
		return CacheUsage{}, false
	}
	return *u, true
}
