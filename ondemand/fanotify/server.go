// Package fanotify is erofsd's front end for current kernels (Linux 6.14
// and later): each blob of a mounted image is a sparse cache file that
// EROFS reads as a file-backed extra device, and a fanotify group with
// pre-content events (FAN_PRE_ACCESS) stops every read of it until
// erofsd has written the range, fetched and verified through the serving
// core. A read whose data cannot be produced is denied with EIO. Which
// blocks are present is recorded next to each cache file, so a restarted
// daemon does not fetch them again; a complete file is unmarked and read
// at native speed.
package fanotify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erofsd/erofsd/internal/hostcap"
	"github.com/erofsd/erofsd/ondemand"
	abi "github.com/erofsd/erofsd/ondemand/internal/fanotifyabi"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ErrUnsupported explains that the kernel lacks pre-content events.
var ErrUnsupported = errors.New("the kernel lacks fanotify pre-content events (Linux 6.14+ with CONFIG_FANOTIFY_ACCESS_PERMISSIONS=y) or EROFS file-backed mounts (CONFIG_EROFS_FS_BACKED_BY_FILE=y)")

// Config configures a Server.
type Config struct {
	Workers int // events handled at once (default 16)
	// RequestTimeout bounds an event: one not served within it is
	// denied with EIO and its fill's context is cancelled (default 60s).
	RequestTimeout time.Duration
	// Resolver finds the sources of the blobs of the images Mount and
	// Adopt are given (*ondemand.Registry).
	Resolver ondemand.Resolver
	// MountReadahead, if set, is the readahead in bytes of the mounts
	// Mount makes: each read of a blob not yet complete is an event, so
	// larger reads mean fewer of them for a sequential reader.
	MountReadahead int64
	Logger         logrus.FieldLogger // default: discard
	// ReadLatency, if set, observes the seconds from an event's arrival
	// to its answer.
	ReadLatency ondemand.Observer
	// Journal, if set, learns every event being handled and every
	// writer fd, so that a restarted daemon can finish what this one
	// started (see Replay and AdoptWriters).
	Journal Journal
	// CacheDir is the directory of the cache files Watch is given; it
	// is scanned to account for and evict the files of blobs no mount
	// uses (empty: no eviction, no limit).
	CacheDir string
	// CacheLimit caps the bytes allocated to CacheDir (0: no limit): a
	// write that would pass it first evicts files of blobs no mount uses
	// and fails with ErrCacheFull (the reader gets EIO) if that is not
	// enough. See evict.go for why mounted blobs are never evicted.
	CacheLimit int64
	// CacheCheckInterval is how often KeepCache scans the cache (default
	// 30s).
	CacheCheckInterval time.Duration
}

// Journal records work in progress outside the daemon (a supervisor).
type Journal interface {
	Begin(key, text string) error
	End(key string) error
	Hold(name string, fd int) error
	Drop(name string) error
}

// WriterName is the Journal name under which a cache file's writer fd
// is held.
func WriterName(path string) string { return "fanotify-writer:" + path }

// Stats counts events by result.
type Stats struct {
	Events, Allowed, Denied atomic.Int64
	WrittenBytes            atomic.Int64
	InFlight                atomic.Int64
	Watches                 atomic.Int64
	Malformed, Panicked     atomic.Int64
	Readaheads              atomic.Int64 // background fills of the next chunk
	// NoSpace counts writes refused for lack of space: the filesystem's
	// ENOSPC, or the cache limit with nothing left to evict.
	NoSpace      atomic.Int64
	Evicted      atomic.Int64 // blob cache files evicted
	EvictedBytes atomic.Int64 // their allocated bytes
	// VerifiedBytes counts bytes of complete cache files checked whole
	// against their blob's digest; NotBlob counts files that failed.
	VerifiedBytes atomic.Int64
	NotBlob       atomic.Int64
	// ProvenBytes counts bytes of complete cache files that needed no
	// whole check: every chunk was checked as a step of the blob's
	// sha256 (the image records chunk states).
	ProvenBytes atomic.Int64
	TimedOut    atomic.Int64 // events denied at the request timeout
}

// Server owns one fanotify group.
type Server struct {
	fd      int
	wakeFD  int
	log     logrus.FieldLogger
	pool    *ondemand.Pool
	timeout time.Duration
	res     ondemand.Resolver
	mountRA int64
	// checkEvery is KeepCache's interval.
	checkEvery time.Duration
	// flushEvery is how often presence maps are saved (default 1 s).
	flushEvery time.Duration
	bg         sync.WaitGroup // background work outside the pool (finishing complete files)
	// bgMu and bgStopped keep background work from starting once Serve
	// waits for it: a prefetch, which runs outside Serve, may complete a
	// file while Serve returns (see background).
	bgMu      sync.Mutex
	bgStopped bool
	closed    atomic.Bool
	once      sync.Once
	// abort is the context of every event's fill: Stop(true) cancels
	// it, so that what is pending is denied at once when erofsd stops
	// for good.
	abort     context.Context
	abortFill context.CancelFunc
	Stats     Stats

	journal Journal
	lat     ondemand.Observer

	mu      sync.Mutex
	watches map[devIno]*Watch
	writers map[string]int // adopted writer fds by cache file path

	cacheDir string
	limit    int64
	fileMu   sync.Mutex // held by Watch while it sets up a file and by eviction while it removes one
	evictMu  sync.Mutex // one eviction pass at a time
	cache    cacheState
}

type devIno struct{ dev, ino uint64 }

// Supported reports whether this kernel can serve through fanotify
// pre-content events, by creating a group and marking a scratch file.
func Supported(scratchDir string) error {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_PRE_CONTENT|unix.FAN_CLOEXEC, unix.O_RDWR|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		return unsupported("fanotify_init", err)
	}
	defer unix.Close(fd)
	f, err := os.CreateTemp(scratchDir, ".fanotify-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	f.Close()
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, unix.FAN_PRE_ACCESS, unix.AT_FDCWD, f.Name()); err != nil {
		return unsupported("FAN_PRE_ACCESS mark", err)
	}
	return nil
}

// unsupported is the *hostcap.Missing of a failed probe step; it
// matches ErrUnsupported too.
func unsupported(step string, err error) error {
	return &hostcap.Missing{What: "fanotify pre-content events", Why: fmt.Sprintf("%s: %v (%v)", step, err, ErrUnsupported),
		Err: fmt.Errorf("%w: %s: %w", ErrUnsupported, step, err)}
}

// New creates a fanotify group for pre-content events.
func New(cfg Config) (*Server, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_PRE_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_QUEUE,
		unix.O_RDWR|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		return nil, unsupported("fanotify_init", err)
	}
	return newServer(fd, cfg)
}

// FromFD serves an existing group (one kept across a daemon restart by
// a supervisor or systemd's fd store): events queued meanwhile are
// answered by this server.
func FromFD(fd int, cfg Config) (*Server, error) { return newServer(fd, cfg) }

func newServer(fd int, cfg Config) (*Server, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
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
	if cfg.CacheLimit < 0 {
		unix.Close(fd)
		unix.Close(efd)
		return nil, fmt.Errorf("fanotify cache limit %d: want 0 (none) or more", cfg.CacheLimit)
	}
	abort, abortFill := context.WithCancel(context.Background())
	return &Server{fd: fd, wakeFD: efd, log: log, pool: ondemand.NewPool(cfg.Workers), timeout: cfg.RequestTimeout, abort: abort, abortFill: abortFill,
		res: cfg.Resolver, mountRA: cfg.MountReadahead, checkEvery: cfg.CacheCheckInterval, journal: cfg.Journal, lat: cfg.ReadLatency,
		watches: map[devIno]*Watch{}, writers: map[string]int{}, cacheDir: cfg.CacheDir, limit: cfg.CacheLimit}, nil
}

// FD returns the group's fd, for handing to a supervisor.
func (s *Server) FD() int { return s.fd }

// Serve reads and answers events until ctx ends or Close is called. It
// waits for the events being handled before it returns.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.wake)
	defer stop()
	defer s.flushMaps() // last, after the workers: what they wrote is saved
	defer s.stopBackground()
	defer s.pool.Wait()
	// Presence maps reach disk once a second, after the data they claim.
	flushed := make(chan struct{})
	flushCtx, stopFlush := context.WithCancel(ctx)
	go func() {
		defer close(flushed)
		every := s.flushEvery
		if every <= 0 {
			every = time.Second
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-flushCtx.Done():
				return
			case <-t.C:
				s.flushMaps()
			}
		}
	}()
	defer func() { stopFlush(); <-flushed }()
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.wakeFD), Events: unix.POLLIN}}
	for {
		if ctx.Err() != nil || s.closed.Load() {
			return ctx.Err()
		}
		// A read takes events out of the kernel's queue: if the process
		// died before they are journaled they would be lost, so the batch
		// is journaled as open until every event in it is.
		s.journalBegin(batchKey, "open")
		n, err := unix.Read(s.fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			s.journalEnd(batchKey)
			if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("polling the fanotify group: %w", err)
			}
			if fds[1].Revents != 0 {
				var b [8]byte
				unix.Read(s.wakeFD, b[:])
			}
			continue
		case err != nil:
			s.journalEnd(batchKey)
			return fmt.Errorf("reading the fanotify group: %w", err)
		}
		var evs []abi.Event
		for b := buf[:n]; len(b) > 0; {
			ev, used, err := abi.Next(b)
			if err != nil {
				s.Stats.Malformed.Add(1)
				s.log.WithError(err).Error("malformed fanotify event")
				if ev.Fd > 0 && used > 0 {
					s.respond(ev.Fd, false, unix.EIO)
					unix.Close(int(ev.Fd))
				}
				if used <= 0 {
					break
				}
			} else {
				s.journalEvent(ev)
				evs = append(evs, ev)
			}
			b = b[used:]
		}
		s.journalEnd(batchKey)
		for _, ev := range evs {
			// Events taken are answered even when ctx ends (a deny
			// would fail a reader); if the process exits first, the
			// journal lets the next daemon answer them. Only Stop(true)
			// fails them.
			s.dispatch(s.abort, ev)
		}
	}
}

// batchKey is the journal entry that is present while a read of the
// group's events is not fully journaled yet.
const batchKey = "batch"

// LostBatch is a journal key for a holder whose own journal was lost
// (a supervisor restarted with the fds from systemd's fd store): events
// may have been taken and not journaled, so Replay fills every watched
// file and then answers every event number, as after a lost batch.
const LostBatch = batchKey

func (s *Server) journalBegin(key, text string) {
	if s.journal != nil {
		s.journal.Begin(key, text)
	}
}

func (s *Server) journalEnd(key string) {
	if s.journal != nil {
		s.journal.End(key)
	}
}

// journalEvent records an event of a watched file as "dev ino off count"
// under its fd number.
func (s *Server) journalEvent(ev abi.Event) {
	if s.journal == nil || ev.Fd < 0 || !ev.HasRange {
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ev.Fd), &st); err != nil {
		return
	}
	s.journal.Begin(strconv.Itoa(int(ev.Fd)), fmt.Sprintf("%d %d %d %d", st.Dev, st.Ino, ev.Offset, ev.Count))
}

func (s *Server) wake() { unix.Write(s.wakeFD, []byte{1, 0, 0, 0, 0, 0, 0, 0}) }

// Close makes Serve return; it is safe to call twice. Release closes the
// group afterwards.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.wake()
	})
	return nil
}

// Release closes the group fd. Reads of files still marked then proceed
// without waiting (and see holes as zeros) unless another process holds
// the group: keep it held (fd store, supervisor) across restarts.
func (s *Server) Release() error {
	unix.Close(s.wakeFD)
	return unix.Close(s.fd)
}

func (s *Server) respond(fd int32, allow bool, errno unix.Errno) {
	if _, err := unix.Write(s.fd, abi.Response(fd, allow, errno)); err != nil {
		s.log.WithError(err).Error("fanotify response failed")
	}
	if allow {
		s.Stats.Allowed.Add(1)
	} else {
		s.Stats.Denied.Add(1)
	}
}

func (s *Server) dispatch(ctx context.Context, ev abi.Event) {
	s.Stats.Events.Add(1)
	if ev.Fd < 0 { // queue overflow: nothing to answer
		s.log.Error("fanotify queue overflow")
		return
	}
	if ev.Mask&unix.FAN_PRE_ACCESS == 0 || !ev.HasRange {
		s.respond(ev.Fd, true, 0)
		unix.Close(int(ev.Fd))
		return
	}
	arrived := time.Now()
	w, lookupErr := s.watchOf(ev) // once, for both paths
	if o, ok := watchObject(w); ok && ev.Pid != int32(os.Getpid()) {
		// The workload's read, present or not (erofsd's own, a prefetch
		// target's priming read, are not).
		o.KernelRead(int64(ev.Offset), int64(ev.Count))
	}
	if w != nil && w.isPoisoned() && isOwnTruncation(ev) {
		// Poison's own truncation: allowed from the reading loop, so it
		// never waits for a worker (they may all be busy).
		s.respond(ev.Fd, true, 0)
		if s.journal != nil {
			s.journal.End(strconv.Itoa(int(ev.Fd)))
		}
		unix.Close(int(ev.Fd))
		return
	}
	if w != nil && s.answerPresent(ctx, ev, w) {
		// Fast path: the range is there already (fetched ahead), so
		// the reader waits for one answer, not for a worker too.
		if s.lat != nil {
			s.lat.Observe(time.Since(arrived).Seconds())
		}
		if s.journal != nil {
			s.journal.End(strconv.Itoa(int(ev.Fd)))
		}
		unix.Close(int(ev.Fd))
		return
	}
	s.pool.Acquire(context.Background()) // events taken are answered: wait for a worker
	s.Stats.InFlight.Add(1)
	s.pool.Go(func() {
		defer s.Stats.InFlight.Add(-1)
		key := strconv.Itoa(int(ev.Fd))
		err, closeFD := s.handleTimed(ctx, ev, w, lookupErr)
		if err != nil {
			fields := logrus.Fields{"off": ev.Offset, "len": ev.Count, "pid": ev.Pid}
			if w != nil {
				fields["source"] = w.src.Name()
				if o, ok := w.src.(*ondemand.Object); ok && o.Image != nil {
					fields["image"] = o.Image.Spec.FSID
				}
			}
			l := s.log.WithFields(fields).WithError(err)
			if errors.Is(err, ondemand.ErrCacheFull) || ondemand.IsNoSpace(err) {
				l.Debug("read denied: cache full") // counted in Stats.NoSpace
			} else {
				l.Warn("read denied")
			}
			s.respond(ev.Fd, false, unix.EIO)
		} else {
			s.respond(ev.Fd, true, 0)
		}
		if s.lat != nil {
			s.lat.Observe(time.Since(arrived).Seconds())
		}
		if s.journal != nil {
			s.journal.End(key)
		}
		closeFD()
	})
}

// isOwnTruncation reports whether ev is the event of Poison's truncation
// of a cache file: this process's, with an empty range at 0. A read by
// this process (a program embedding the daemon that reads its own
// mounts) has a range, and is denied like any other.
func isOwnTruncation(ev abi.Event) bool {
	return ev.Pid == int32(os.Getpid()) && ev.Offset == 0 && ev.Count == 0
}

// errTimedOut denies an event its fill did not finish in time.
var errTimedOut = errors.New("not served within the request timeout")

// handleTimed handles an event within the request timeout: past it, the
// fill's context is cancelled (the store request behind it ends) and the
// event is denied without waiting further. The event's fd stays open
// until the handler ends (it may still take it as the writer fd: closed
// early, its number could name another file by then), and so does the
// watch; closeFD closes the fd if the handler is done.
func (s *Server) handleTimed(ctx context.Context, ev abi.Event, w *Watch, lookupErr error) (err error, closeFD func()) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	if w != nil && !w.hold() {
		w = nil
		lookupErr = fmt.Errorf("event for a cache file no longer watched")
	}
	done := make(chan error, 1)
	go func() {
		err := s.handle(ctx, ev, w, lookupErr)
		if w != nil {
			w.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		cancel()
		return err, func() { unix.Close(int(ev.Fd)) }
	case <-ctx.Done():
		if s.abort.Err() != nil {
			err = errors.New("erofsd is stopping")
		} else {
			s.Stats.TimedOut.Add(1)
			err = fmt.Errorf("%d bytes at %d: %w (%v)", ev.Count, ev.Offset, errTimedOut, s.timeout)
		}
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			<-done
			cancel()
			unix.Close(int(ev.Fd))
		}()
		return err, func() {}
	}
}

// background runs fn on a goroutine Serve waits for before it returns;
// once Serve has begun that wait, it runs nothing and reports false (the
// work is left to the next start, which checks complete files again).
func (s *Server) background(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgStopped {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn()
	}()
	return true
}

// stopBackground stops background from starting work and waits for what
// it started.
func (s *Server) stopBackground() {
	s.bgMu.Lock()
	s.bgStopped = true
	s.bgMu.Unlock()
	s.bg.Wait()
}

// AdoptWriters gives the server writer fds kept by a supervisor (by
// cache file path); Watch uses them for files it watches again.
func (s *Server) AdoptWriters(fds map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, fd := range fds {
		s.writers[p] = fd
	}
}

// Replay finishes the events a previous daemon had read but not answered
// (journal entries "dev ino off count" keyed by the event's fd number in
// the group): it makes each range present and answers it. Call it after
// the files are watched again and before Serve, so that the numbers of
// new events cannot be confused with these.
func (s *Server) Replay(ctx context.Context, journal map[string]string) {
	if _, lost := journal[batchKey]; lost {
		s.recoverLostBatch(ctx, journal)
		delete(journal, batchKey)
	}
	for key, text := range journal {
		fd, err1 := strconv.Atoi(key)
		var dev, ino uint64
		var off, count int64
		_, err2 := fmt.Sscanf(text, "%d %d %d %d", &dev, &ino, &off, &count)
		if err1 != nil || err2 != nil {
			continue
		}
		s.mu.Lock()
		w := s.watches[devIno{dev, ino}]
		s.mu.Unlock()
		err := fmt.Errorf("no watched file dev %d ino %d", dev, ino)
		if w != nil {
			err = w.serve(ctx, -1, off, count)
		}
		if err != nil {
			s.log.WithError(err).WithField("event", key).Warn("replayed read denied")
		}
		s.respond(int32(fd), err == nil, unix.EIO)
		if s.journal != nil {
			s.journal.End(key)
		}
	}
}

// recoverLostBatch handles a daemon that died between taking events from
// the kernel and journaling them: those events wait for answers under fd
// numbers nobody knows. Every watched file is filled completely, after
// which any access is safe to allow, and every fd number the dead daemon
// may have used (and that is not journaled) is answered "allow"; numbers
// with no pending event are refused by the kernel with ENOENT, harmlessly.
func (s *Server) recoverLostBatch(ctx context.Context, journal map[string]string) {
	s.mu.Lock()
	watches := make([]*Watch, 0, len(s.watches))
	for _, w := range s.watches {
		watches = append(watches, w)
	}
	s.mu.Unlock()
	for _, w := range watches {
		if err := w.serve(ctx, -1, 0, w.size); err != nil {
			// Cannot make it safe: the lost readers get EIO instead.
			s.log.WithError(err).WithField("file", w.Path).Error("filling a cache file after a lost event batch")
			s.sweep(journal, false)
			return
		}
	}
	s.sweep(journal, true)
}

// maxSweepFD bounds the fd numbers recoverLostBatch answers.
const maxSweepFD = 1 << 16

func (s *Server) sweep(journal map[string]string, allow bool) {
	for fd := 3; fd < maxSweepFD; fd++ {
		if _, ok := journal[strconv.Itoa(fd)]; ok {
			continue
		}
		unix.Write(s.fd, abi.Response(int32(fd), allow, unix.EIO))
	}
	s.log.WithField("allowed", allow).Warn("answered events lost by the previous daemon")
}

// answerPresent allows the event at once, from the reading loop, when
// its whole range is present in a watched file, starting readahead as
// serve would; otherwise it does nothing and returns false.
func (s *Server) answerPresent(ctx context.Context, ev abi.Event, w *Watch) (answered bool) {
	defer func() {
		// A fault here must not take the reading loop down: the worker
		// path answers the event instead (and recovers on its own).
		if p := recover(); p != nil {
			s.Stats.Panicked.Add(1)
			s.log.Errorf("panic in the fast path: %v\n%s", p, debug.Stack())
			answered = false
		}
	}()
	off, n := int64(ev.Offset), int64(ev.Count)
	if n <= 0 || w.isPoisoned() || !w.has(off, n) {
		return false
	}
	w.readahead(off, n)
	s.respond(ev.Fd, true, 0)
	// A file found complete (on disk from before, or filled by another
	// path) gets its whole-file check now that there is an fd to read
	// it through.
	if w.ensureWriter(int(ev.Fd)) == nil {
		w.finishLater()
	}
	return true
}

// watchOf finds the watch of the file an event is about.
func (s *Server) watchOf(ev abi.Event) (*Watch, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(ev.Fd), &st); err != nil {
		return nil, err
	}
	s.mu.Lock()
	w := s.watches[devIno{st.Dev, st.Ino}]
	s.mu.Unlock()
	if w == nil {
		return nil, fmt.Errorf("event for a file erofsd does not serve (dev %d ino %d)", st.Dev, st.Ino)
	}
	return w, nil
}

// handle makes the event's range present; a panic becomes an error. It
// returns the watch the event was for, if any.
func (s *Server) handle(ctx context.Context, ev abi.Event, w *Watch, lookupErr error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.Stats.Panicked.Add(1)
			err = fmt.Errorf("panic serving a read: %v\n%s", p, debug.Stack())
		}
	}()
	if lookupErr != nil {
		return lookupErr
	}
	if w.isPoisoned() {
		// Only Poison's own truncation may proceed; readers fail.
		if isOwnTruncation(ev) {
			return nil
		}
		return fmt.Errorf("%s: erofsd is stopping", w.Path)
	}
	return w.serve(ctx, int(ev.Fd), int64(ev.Offset), int64(ev.Count))
}

// watchObject returns the serving core's object behind a watch, if any.
func watchObject(w *Watch) (*ondemand.Object, bool) {
	if w == nil {
		return nil, false
	}
	o, ok := w.src.(*ondemand.Object)
	return o, ok
}
