package erofstrace

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/erofsd/erofsd/internal/hostcap"
	"golang.org/x/sys/unix"
)

// Options tune a Tracer; the zero value (or nil) takes the defaults.
type Options struct {
	// RingSize is the BPF ring buffer's size in bytes, a power of two
	// and at least a page (default DefaultRingSize).
	RingSize int
	// MaxEvents bounds the events Run keeps; it counts further ones in
	// Trace.Dropped (default DefaultMaxEvents).
	MaxEvents int
}

// The event names: the readahead event was erofs_readpages before it
// was renamed along with the kernel's readahead API.
var (
	readaheadEvents = []string{"erofs_readahead", "erofs_readpages"}
	readFolioEvents = []string{"erofs_read_folio"}
)

// tracefsDirs are where tracefs is found, in the order cilium/ebpf's
// link package looks.
var tracefsDirs = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

// eventSize is the size of struct event in bpf/trace.c.
const eventSize = 32

// objects are what Open loads of the BPF collection.
type objects struct {
	Readahead *ebpf.Program `ebpf:"erofs_readahead"`
	ReadFolio *ebpf.Program `ebpf:"erofs_read_folio"`
	Events    *ebpf.Map     `ebpf:"events"`
	Lost      *ebpf.Map     `ebpf:"lost"`
}

// A Tracer records the file reads of one EROFS mount from Open until
// Run's context is done or Close.
type Tracer struct {
	dev       uint64
	maxEvents int
	objs      objects
	rd        *ringbuf.Reader

	mu    sync.Mutex // guards links
	links []link.Link

	closeOnce sync.Once
	closeErr  error
}

// Open attaches a tracer to the EROFS mount whose st_dev (stat(2), as
// StatMount returns it) is dev. Reads are recorded from now on, in the
// ring buffer until Run takes them. Close releases it.
func Open(dev uint64, opts *Options) (*Tracer, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.RingSize == 0 {
		o.RingSize = DefaultRingSize
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	if o.RingSize < os.Getpagesize() || o.RingSize&(o.RingSize-1) != 0 || o.RingSize > 1<<30 {
		return nil, fmt.Errorf("erofstrace: ring size %d: want a power of two from a page to 1 GiB", o.RingSize)
	}
	kdev, err := KernelDev(dev)
	if err != nil {
		return nil, err
	}
	tracefs, err := findTracefs()
	if err != nil {
		return nil, err
	}
	raEvent, raLayout, err := eventLayout(tracefs, readaheadEvents, readahead)
	if err != nil {
		return nil, err
	}
	rfEvent, rfLayout, err := eventLayout(tracefs, readFolioEvents, readFolio)
	if err != nil {
		return nil, err
	}

	spec, err := loadTrace()
	if err != nil {
		return nil, err
	}
	for name, v := range map[string]any{"target_dev": kdev, "readahead_layout": raLayout, "read_folio_layout": rfLayout} {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("erofstrace: the BPF object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("erofstrace: set %s: %w", name, err)
		}
	}
	spec.Maps["events"].MaxEntries = uint32(o.RingSize)

	t := &Tracer{dev: dev, maxEvents: o.MaxEvents}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		return nil, unsupported("load the BPF program", err)
	}
	if t.rd, err = ringbuf.NewReader(t.objs.Events); err != nil {
		t.Close()
		return nil, unsupported("read the ring buffer", err)
	}
	for _, a := range []struct {
		event string
		prog  *ebpf.Program
	}{{raEvent, t.objs.Readahead}, {rfEvent, t.objs.ReadFolio}} {
		l, err := link.Tracepoint("erofs", a.event, a.prog, nil)
		if err != nil {
			t.Close()
			return nil, unsupported("attach to erofs/"+a.event, err)
		}
		t.links = append(t.links, l)
	}
	return t, nil
}

// KernelDev turns st_dev, as stat(2) returns it, into the kernel's
// internal dev_t, which the tracepoints carry: the major number above 20
// bits of minor.
func KernelDev(stDev uint64) (uint32, error) {
	major, minor := unix.Major(stDev), unix.Minor(stDev)
	if major >= 1<<12 || minor >= 1<<20 {
		return 0, fmt.Errorf("erofstrace: device %d:%d does not fit the kernel's dev_t", major, minor)
	}
	return major<<20 | minor, nil
}

// Run takes the tracer's events until ctx is done, then detaches the
// tracer, takes what the kernel queued before that and returns the
// trace; ctx being done is how a trace ends, not an error. After Close,
// Run returns what it has with an error wrapping os.ErrClosed. Run is
// meant to be called once, from one goroutine.
func (t *Tracer) Run(ctx context.Context) (*Trace, error) {
	tr := &Trace{Dev: t.dev}
	// Detaching first means the flush marks the end: every event queued
	// before it is read before ringbuf.ErrFlushed.
	stop := context.AfterFunc(ctx, func() {
		t.detach()
		t.rd.Flush()
	})
	defer stop()
	var rec ringbuf.Record
	for {
		err := t.rd.ReadInto(&rec)
		switch {
		case errors.Is(err, ringbuf.ErrFlushed):
			tr.Lost = t.lost()
			return tr, nil
		case errors.Is(err, os.ErrClosed):
			return tr, fmt.Errorf("erofstrace: tracer closed: %w", os.ErrClosed)
		case err != nil:
			return tr, fmt.Errorf("erofstrace: read the ring buffer: %w", err)
		}
		ev, ok := decodeEvent(rec.RawSample)
		switch {
		case !ok:
			return tr, fmt.Errorf("erofstrace: ring buffer record of %d bytes, want %d", len(rec.RawSample), eventSize)
		case len(tr.Events) >= t.maxEvents:
			tr.Dropped++
		default:
			tr.Events = append(tr.Events, ev)
		}
	}
}

// decodeEvent decodes struct event of bpf/trace.c, in the host's byte
// order (the program is built for little-endian hosts only).
func decodeEvent(b []byte) (Event, bool) {
	if len(b) < eventSize {
		return Event{}, false
	}
	le := binary.LittleEndian
	return Event{
		Time:  time.Duration(le.Uint64(b[0:])),
		Nid:   le.Uint64(b[8:]),
		Index: le.Uint64(b[16:]),
		Pages: le.Uint32(b[24:]),
	}, true
}

// lost reads the count of events the ring buffer had no room for.
func (t *Tracer) lost() uint64 {
	var n uint64
	if err := t.objs.Lost.Lookup(uint32(0), &n); err != nil {
		return 0
	}
	return n
}

// detach stops the kernel from running the programs.
func (t *Tracer) detach() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	return errors.Join(errs...)
}

// Close detaches the tracer and frees it, making a blocked Run return.
// Calling it again does nothing.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		errs := []error{t.detach()}
		if t.rd != nil {
			errs = append(errs, t.rd.Close())
		}
		for _, c := range []io.Closer{t.objs.Readahead, t.objs.ReadFolio, t.objs.Events, t.objs.Lost} {
			if c != nil {
				errs = append(errs, c.Close())
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.closeErr = fmt.Errorf("erofstrace: close: %w", err)
		}
	})
	return t.closeErr
}

// findTracefs returns where tracefs is mounted.
func findTracefs() (string, error) {
	for _, dir := range tracefsDirs {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && uint32(st.Type) == unix.TRACEFS_MAGIC {
			return dir, nil
		}
	}
	return "", &hostcap.Missing{What: what,
		Why: fmt.Sprintf("tracefs is not mounted on %s (mount -t tracefs nodev /sys/kernel/tracing)", tracefsDirs[0])}
}

// eventLayout reads the format of the first of names that tracefs has
// and finds the layout of kind in it.
func eventLayout(tracefs string, names []string, kind int) (string, layout, error) {
	for _, name := range names {
		path := filepath.Join(tracefs, "events", "erofs", name, "format")
		data, err := readFile(path, maxFormat)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case errors.Is(err, os.ErrPermission):
			return "", layout{}, &hostcap.Missing{What: what, Why: "reading " + path + ": permission denied (needs root)", Err: err}
		case err != nil:
			return "", layout{}, fmt.Errorf("erofstrace: %w", err)
		}
		l, err := layoutOf(data, kind)
		if err != nil {
			// A kernel whose tracepoint changed: nothing to fix here.
			return "", layout{}, hostcap.Missingf(what, "event erofs/%s: %w", name, err)
		}
		return name, l, nil
	}
	return "", layout{}, &hostcap.Missing{What: what,
		Why: fmt.Sprintf("tracefs has no event erofs/%s (erofs not loaded, or built without tracepoints)", names[0])}
}

// readFile reads at most limit bytes of path; tracefs files report size 0,
// so it reads to EOF.
func readFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", path, limit)
	}
	return data, nil
}

// unsupported says why step failed where it is the host's doing: no
// permission, or a kernel without BPF, ring buffers or the tracepoint.
func unsupported(step string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return &hostcap.Missing{What: what, Why: step + ": permission denied (needs root, or CAP_BPF and CAP_PERFMON)", Err: err}
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.ENOSYS):
		return &hostcap.Missing{What: what, Why: step + ": the kernel does not support it: " + err.Error(), Err: err}
	case errors.Is(err, os.ErrNotExist):
		return &hostcap.Missing{What: what, Why: step + ": no such tracepoint: " + err.Error(), Err: err}
	}
	return fmt.Errorf("erofstrace: %s: %w", step, err)
}
