package erofstrace

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/erofsd/erofsd/internal/hostcap"
	"golang.org/x/sys/unix"
)

// whatLatency names latency measurement in the errors that say it is
// unsupported.
const whatLatency = "measuring EROFS read latency with eBPF"

// DefaultLatencyMaxDevs bounds the superblocks a LatencyMonitor times at
// once, by default. Their histograms take about 600 bytes of kernel
// memory each, allocated as they are added.
const DefaultLatencyMaxDevs = 1 << 14

// The kernel functions timed. Reads: EROFS's read_iter, whose first
// argument is the struct kiocb; where the kernel has no such function
// (renamed, or in an erofs module not loaded yet), filemap_read, the page
// cache read every buffered read_iter calls, which takes the same first
// argument. Faults: filemap_fault, EROFS's fault handler.
const (
	erofsReadFunc = "erofs_file_read_iter"
	cacheReadFunc = "filemap_read"
	faultFunc     = "filemap_fault"
)

// latencyBounds is the number of finite buckets: 1 µs << i for i below
// it, up to 2^24 µs (about 16.8 s); the slot after them (bpf/latency.c,
// NBOUNDS) counts longer operations.
const latencyBounds = 25

// LatencyOptions tune a LatencyMonitor; the zero value (or nil) takes the
// defaults.
type LatencyOptions struct {
	// MaxDevs bounds the superblocks timed at once (default
	// DefaultLatencyMaxDevs); AddDev fails beyond it.
	MaxDevs int

	// Tests: readFunc, when set, is the read function to time instead
	// of the one OpenLatency would pick; hooks, when set, say where to
	// attach each program instead.
	readFunc string
	hooks    map[string]latencyHook
}

// latencyHook is where one program of bpf/latency.c attaches: the kernel
// function (fentry, fexit) or tracepoint (tp_btf) to, or, with loadOnly,
// where it is only loaded (verified) to.
type latencyHook struct {
	typ      ebpf.AttachType
	to       string
	loadOnly bool
}

// defaultHooks attaches the programs to readFunc and filemap_fault.
func defaultHooks(readFunc string) map[string]latencyHook {
	return map[string]latencyHook{
		"read_enter":  {typ: ebpf.AttachTraceFEntry, to: readFunc},
		"read_exit":   {typ: ebpf.AttachTraceFExit, to: readFunc},
		"fault_enter": {typ: ebpf.AttachTraceFEntry, to: faultFunc},
		"fault_exit":  {typ: ebpf.AttachTraceFExit, to: faultFunc},
	}
}

// Histogram is a snapshot of durations counted in buckets, in the form of
// a Prometheus histogram: cumulative bucket counts, seconds.
type Histogram struct {
	// Buckets are the finite buckets by ascending upper bound, 1 µs to
	// about 16.8 s in powers of two; each counts the operations that
	// took at most its bound, the shorter ones included. The +Inf
	// bucket is Count.
	Buckets []Bucket
	Count   uint64  // operations timed
	Sum     float64 // their total duration in seconds
}

// Bucket is one bucket of a Histogram.
type Bucket struct {
	UpperBound float64 // seconds
	Count      uint64  // cumulative
}

// DevLatency is what readers of one superblock's files waited. Every
// call counts, those that return at once too (data cached, end of file,
// an error).
type DevLatency struct {
	// Read is the time read calls (read, pread, readv and their kin,
	// io_uring reads, the kernel's own reads such as exec's) spent in
	// the file's read_iter, or in filemap_read where the kernel has no
	// erofs_file_read_iter (see LatencyMonitor.ReadFunc). Not counted:
	// splice, sendfile and copy_file_range, which read through
	// filemap_splice_read. An io_uring read tried first without waiting
	// (IOCB_NOWAIT) and then again counts twice.
	Read Histogram
	// Fault is the time page faults on mapped files spent in
	// filemap_fault. Not every page fault gets there: fault-around maps
	// the cached pages near a faulting address without it, so the
	// faults counted are those of pages not cached (or not in reach of
	// fault-around), which wait for the data, and copy-on-write faults
	// of private mappings. A fault that waited with the mmap lock
	// dropped is retried; if the retry comes back to filemap_fault it
	// counts as a second, short fault.
	Fault Histogram
}

// A LatencyMonitor times, with eBPF, how long readers of files on chosen
// EROFS superblocks wait in the kernel's read path: read calls from
// entering the filesystem's read_iter to its return, and page faults on
// mapped files from entering filemap_fault to its return (how shared
// libraries and executables are read). Each superblock has a histogram
// of each, kept in the kernel; nothing is sent per operation. The time
// includes the waits for data that is not cached: disk or network
// reads, and erofsd's own answers to the kernel (a cachefiles read
// request, a fanotify pre-content event on the backing file), since the
// reader waits for them inside these functions. It does not include the
// system call's entry, the VFS checks before read_iter, nor the page
// table work around filemap_fault.
//
// It needs BPF trampolines (fentry/fexit: x86-64 since Linux 5.5, arm64
// since 6.0), the kernel's BTF, task-local storage for tracing programs
// (5.11) and root (or CAP_BPF with CAP_PERFMON); where one is missing,
// OpenLatency returns an error matching ErrUnsupported that says which.
//
// Its methods may be called from several goroutines.
type LatencyMonitor struct {
	readFunc string
	objs     latencyObjs

	mu     sync.Mutex
	devs   map[uint32]uint64 // kernel dev_t -> st_dev, as added
	links  []link.Link
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// latencyObjs are what OpenLatency loads of the BPF collection.
type latencyObjs struct {
	ReadEnter  *ebpf.Program `ebpf:"read_enter"`
	ReadExit   *ebpf.Program `ebpf:"read_exit"`
	FaultEnter *ebpf.Program `ebpf:"fault_enter"`
	FaultExit  *ebpf.Program `ebpf:"fault_exit"`
	Devs       *ebpf.Map     `ebpf:"devs"`
	Inflight   *ebpf.Map     `ebpf:"inflight"`
	Missed     *ebpf.Map     `ebpf:"missed"`
}

func (o *latencyObjs) closers() []io.Closer {
	var cs []io.Closer
	for _, p := range []*ebpf.Program{o.ReadEnter, o.ReadExit, o.FaultEnter, o.FaultExit} {
		if p != nil {
			cs = append(cs, p)
		}
	}
	for _, m := range []*ebpf.Map{o.Devs, o.Inflight, o.Missed} {
		if m != nil {
			cs = append(cs, m)
		}
	}
	return cs
}

// OpenLatency loads and attaches the programs. No superblock is timed
// until AddDev adds it. Close releases it.
func OpenLatency(opts *LatencyOptions) (*LatencyMonitor, error) {
	var o LatencyOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxDevs == 0 {
		o.MaxDevs = DefaultLatencyMaxDevs
	}
	if o.MaxDevs < 1 || o.MaxDevs > 1<<20 {
		return nil, fmt.Errorf("erofstrace: latency: MaxDevs %d: want 1 to %d", o.MaxDevs, 1<<20)
	}
	cache := btf.NewCache()
	if _, err := cache.Kernel(); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
			return nil, &hostcap.Missing{What: whatLatency,
				Why: "the kernel has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): " + err.Error(), Err: err}
		}
		return nil, latencyUnsupported("read the kernel's BTF", err)
	}
	readFunc := o.readFunc
	if readFunc == "" {
		readFunc = pickReadFunc(cache)
	}
	hooks := o.hooks
	if hooks == nil {
		hooks = defaultHooks(readFunc)
	}

	spec, err := loadLatency()
	if err != nil {
		return nil, err
	}
	spec.Maps["devs"].MaxEntries = uint32(o.MaxDevs)
	for name, h := range hooks {
		ps, ok := spec.Programs[name]
		if !ok {
			return nil, fmt.Errorf("erofstrace: the BPF object has no program %s", name)
		}
		ps.AttachType, ps.AttachTo = h.typ, h.to
	}

	m := &LatencyMonitor{readFunc: hooks["read_enter"].to, devs: make(map[uint32]uint64)}
	if err := spec.LoadAndAssign(&m.objs, &ebpf.CollectionOptions{Cache: cache}); err != nil {
		m.Close()
		return nil, latencyUnsupported("load the BPF programs", err)
	}
	// Exits first, so that no call is timed from an entry whose exit
	// goes unseen; an exit without its entry finds nothing to count.
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"read_exit", m.objs.ReadExit},
		{"fault_exit", m.objs.FaultExit},
		{"read_enter", m.objs.ReadEnter},
		{"fault_enter", m.objs.FaultEnter},
	} {
		h := hooks[p.name]
		if h.loadOnly {
			continue
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog, AttachType: h.typ})
		if err != nil {
			m.Close()
			return nil, latencyUnsupported(fmt.Sprintf("attach %s to %s", p.name, h.to), err)
		}
		m.links = append(m.links, l)
	}
	return m, nil
}

// pickReadFunc returns EROFS's read_iter if the kernel's BTF has exactly
// one function of that name (in vmlinux, or in a loaded erofs module),
// else filemap_read.
func pickReadFunc(cache *btf.Cache) string {
	one := func(spec *btf.Spec) bool {
		types, err := spec.AnyTypesByName(erofsReadFunc)
		if err != nil {
			return false
		}
		n := 0
		for _, t := range types {
			if _, ok := t.(*btf.Func); ok {
				n++
			}
		}
		return n == 1
	}
	if kernel, err := cache.Kernel(); err == nil && one(kernel) {
		return erofsReadFunc
	}
	if mod, err := cache.Module("erofs"); err == nil && one(mod) {
		return erofsReadFunc
	}
	return cacheReadFunc
}

// ReadFunc is the kernel function whose calls are timed as reads:
// erofs_file_read_iter, or filemap_read on kernels without it, which
// misses direct I/O reads (O_DIRECT) of EROFS files.
func (m *LatencyMonitor) ReadFunc() string { return m.readFunc }

// AddDev starts timing the reads and faults of files on the superblock
// whose st_dev (stat(2), as StatMount returns it) is dev, from zero
// counts. Adding a superblock already timed keeps its counts.
func (m *LatencyMonitor) AddDev(dev uint64) error {
	kdev, err := KernelDev(dev)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("erofstrace: latency monitor closed: %w", os.ErrClosed)
	}
	if _, ok := m.devs[kdev]; ok {
		return nil
	}
	var zero latencyDevHists
	if err := m.objs.Devs.Update(kdev, &zero, ebpf.UpdateNoExist); err != nil {
		if errors.Is(err, unix.E2BIG) {
			return fmt.Errorf("erofstrace: time device %d:%d: %d devices timed already (MaxDevs): %w",
				unix.Major(dev), unix.Minor(dev), len(m.devs), err)
		}
		return fmt.Errorf("erofstrace: time device %d:%d: %w", unix.Major(dev), unix.Minor(dev), err)
	}
	m.devs[kdev] = dev
	return nil
}

// RemoveDev stops timing the superblock whose st_dev is dev and drops
// its counts; operations in flight on it go uncounted. Removing a
// superblock not timed does nothing.
func (m *LatencyMonitor) RemoveDev(dev uint64) error {
	kdev, err := KernelDev(dev)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("erofstrace: latency monitor closed: %w", os.ErrClosed)
	}
	if _, ok := m.devs[kdev]; !ok {
		return nil
	}
	if err := m.objs.Devs.Delete(kdev); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("erofstrace: stop timing device %d:%d: %w", unix.Major(dev), unix.Minor(dev), err)
	}
	delete(m.devs, kdev)
	return nil
}

// Snapshot returns the histograms of every superblock timed, by st_dev
// as AddDev got it. Counts only grow from AddDev to RemoveDev.
func (m *LatencyMonitor) Snapshot() (map[uint64]DevLatency, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("erofstrace: latency monitor closed: %w", os.ErrClosed)
	}
	snap := make(map[uint64]DevLatency, len(m.devs))
	var v latencyDevHists
	for kdev, dev := range m.devs {
		if err := m.objs.Devs.Lookup(kdev, &v); err != nil {
			return nil, fmt.Errorf("erofstrace: read the histograms of device %d:%d: %w", unix.Major(dev), unix.Minor(dev), err)
		}
		snap[dev] = DevLatency{
			Read:  histogramOf(v.Kinds[0].SumNs, v.Kinds[0].Slots[:]),
			Fault: histogramOf(v.Kinds[1].SumNs, v.Kinds[1].Slots[:]),
		}
	}
	return snap, nil
}

// Missed counts reads and faults on timed superblocks that went untimed
// because the kernel could not allocate the task's storage for them.
func (m *LatencyMonitor) Missed() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n uint64
	if m.closed || m.objs.Missed.Lookup(uint32(0), &n) != nil {
		return 0
	}
	return n
}

// histogramOf turns the kernel's histogram, per-slot counts (slot i for
// durations of at most 1 µs << i, slot latencyBounds and any later for
// the longer ones) and a sum in nanoseconds, into a Histogram.
func histogramOf(sumNs uint64, slots []uint64) Histogram {
	h := Histogram{Buckets: make([]Bucket, latencyBounds), Sum: float64(sumNs) / 1e9}
	for i := range latencyBounds {
		if i < len(slots) {
			h.Count += slots[i]
		}
		h.Buckets[i] = Bucket{UpperBound: float64(int64(1000)<<i) / 1e9, Count: h.Count}
	}
	for i := latencyBounds; i < len(slots); i++ {
		h.Count += slots[i]
	}
	return h
}

// Close detaches the programs and frees them and the histograms. Calling
// it again does nothing.
func (m *LatencyMonitor) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.closed = true
		var errs []error
		for _, l := range m.links {
			errs = append(errs, l.Close())
		}
		m.links = nil
		for _, c := range m.objs.closers() {
			errs = append(errs, c.Close())
		}
		if err := errors.Join(errs...); err != nil {
			m.closeErr = fmt.Errorf("erofstrace: close the latency monitor: %w", err)
		}
	})
	return m.closeErr
}

// latencyUnsupported says why step failed where it is the host's doing:
// no permission, or a kernel without BPF trampolines, task storage or
// the function to attach to.
func latencyUnsupported(step string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		why := step + ": permission denied (needs root, or CAP_BPF and CAP_PERFMON)"
		if os.Geteuid() == 0 {
			// Seen where the kernel forbids BPF trampolines (function
			// tracing) to everyone, as sandboxes' kernels may.
			why = step + ": permission denied to root (the kernel forbids it: lockdown, or a sandbox's policy)"
		}
		return &hostcap.Missing{What: whatLatency, Why: why, Err: err}
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP),
		errors.Is(err, unix.Errno(524)): // ENOTSUPP: no BPF trampolines on this architecture
		return &hostcap.Missing{What: whatLatency, Why: step + ": the kernel does not support it: " + err.Error(), Err: err}
	case errors.Is(err, btf.ErrNotFound), errors.Is(err, btf.ErrMultipleMatches):
		return &hostcap.Missing{What: whatLatency, Why: step + ": not in the kernel's BTF: " + err.Error(), Err: err}
	}
	return fmt.Errorf("erofstrace: %s: %w", step, err)
}
