package erofstrace

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
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
// once, by default. Their histograms take about 300 bytes of kernel
// memory each, allocated as they are added.
const DefaultLatencyMaxDevs = 1 << 14

// The tracepoints the programs attach to (BTF tracepoints, tp_btf): every
// system call's entry and exit, and, for calls on overlayfs files, where
// a read fills a batch from a file's page cache.
const (
	enterEvent   = "sys_enter"            // raw_syscalls
	exitEvent    = "sys_exit"             // raw_syscalls
	stackedEvent = "mm_filemap_get_pages" // filemap; recent kernels only
)

// The ABIs whose registers bpf/latency.c reads (its ABI_ constants).
const (
	abiX8664 = 1
	abiARM64 = 2
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

	// Tests: noStacked leaves calls on overlayfs files untimed, as on a
	// kernel without the mm_filemap_get_pages tracepoint.
	noStacked bool
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

// DevLatency is what readers of one superblock's files waited.
//
// Page faults on files mapped from the superblock (how executables and
// shared libraries are read) are not timed. Tracepoints mark a fault's
// start (exceptions/page_fault_user, x86 only) and tell that it is on a
// file (filemap/mm_filemap_fault, at filemap_fault's start), but none
// marks its end: the task goes back to user space without an event, and
// the next one it makes (a system call, a fault, a context switch) may
// come any time later, so any end taken from them would be made up.
// fentry/fexit on filemap_fault would time it, but kernels such as the
// one this is tested on refuse them (to root too), and have no kprobes.
type DevLatency struct {
	// Read is the time read system calls on the superblock's files took,
	// from the call's entry to its return (raw_syscalls sys_enter and
	// sys_exit): read, pread64, readv, preadv and preadv2 through a file
	// descriptor of a file on the superblock, and, where Mechanism says
	// so, through one of an overlayfs file whose read went to the page
	// cache of a file on the superblock (a layer below). Every such call
	// counts, those that return at once too (data cached, end of file,
	// an error), and a call that a signal interrupted and the kernel
	// restarts counts twice.
	//
	// Not counted: io_uring and AIO reads, splice, sendfile and
	// copy_file_range, the kernel's own reads (exec), the system calls
	// of 32-bit (compat) tasks, and, through overlayfs, calls that read
	// no page cache of the layer (at end of file, O_DIRECT).
	Read Histogram
}

// A LatencyMonitor times, with eBPF on tracepoints, how long readers of
// files on chosen EROFS superblocks wait in read system calls: per
// superblock, a histogram kept in the kernel; nothing is sent per call.
// The time is the whole call's, entry to return, as the reader sees it,
// including the waits for data that is not cached (disk or network
// reads, erofsd's own answers to the kernel: a cachefiles read request,
// a fanotify pre-content event on the backing file).
//
// Each read call's descriptor is resolved to its file in the kernel at
// the call's entry (the task's file table), and the call timed if the
// file's superblock is one added with AddDev. Calls on overlayfs files
// (how containers see EROFS layers) are timed for the layer's superblock
// when their read reaches its page cache (filemap:mm_filemap_get_pages,
// a recent tracepoint, which Linux 6.18 has; see Mechanism).
//
// Every system call on the machine passes the entry and exit programs
// while a LatencyMonitor is open: the kernel enables its system call
// tracepoints for all tasks, and the programs turn all but reads away by
// their number; reads of files elsewhere are turned away once their file
// is looked up. On the 2-core VM it is tested on (Linux 6.18,
// BenchmarkLatencyOverhead), that cost a getppid call 130 ns more (160
// to 290 ns) and a pread of a cached file elsewhere about 450 ns more
// (520 to 980 ns).
//
// It needs BTF tracepoints (tp_btf, Linux 5.5), the kernel's BTF,
// task-local storage for tracing programs (5.11), amd64 or arm64, and
// root (or CAP_BPF with CAP_PERFMON); where one is missing, OpenLatency
// returns an error matching ErrUnsupported that says which. It needs
// neither fentry nor kprobes.
//
// Its methods may be called from several goroutines.
type LatencyMonitor struct {
	stacked bool
	objs    latencyObjs

	mu     sync.Mutex
	devs   map[uint32]uint64 // kernel dev_t -> st_dev, as added
	links  []link.Link
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// latencyObjs are what OpenLatency loads of the BPF collection.
// StackedRead is nil where calls on overlayfs files are not timed.
type latencyObjs struct {
	SysEnter, SysExit, StackedRead *ebpf.Program
	Devs, Inflights, Missed        *ebpf.Map
}

func (o *latencyObjs) closers() []io.Closer {
	var cs []io.Closer
	for _, p := range []*ebpf.Program{o.SysEnter, o.SysExit, o.StackedRead} {
		if p != nil {
			cs = append(cs, p)
		}
	}
	for _, m := range []*ebpf.Map{o.Devs, o.Inflights, o.Missed} {
		if m != nil {
			cs = append(cs, m)
		}
	}
	return cs
}

// latencyABI returns how bpf/latency.c reads this architecture's
// registers.
func latencyABI() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return abiX8664, nil
	case "arm64":
		return abiARM64, nil
	}
	return 0, &hostcap.Missing{What: whatLatency, Why: "system call registers known on amd64 and arm64 only, not " + runtime.GOARCH}
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
	abi, err := latencyABI()
	if err != nil {
		return nil, err
	}
	cache := btf.NewCache()
	kernel, err := cache.Kernel()
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
			return nil, &hostcap.Missing{What: whatLatency,
				Why: "the kernel has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): " + err.Error(), Err: err}
		}
		return nil, latencyUnsupported("read the kernel's BTF", err)
	}
	// The tracepoint of stacked reads is recent (Linux 6.18 has it, 6.1
	// not); without it, calls on overlayfs files go untimed.
	var tp *btf.Typedef
	stacked := !o.noStacked && kernel.TypeByName("btf_trace_"+stackedEvent, &tp) == nil

	spec, err := loadLatency()
	if err != nil {
		return nil, err
	}
	spec.Maps["devs"].MaxEntries = uint32(o.MaxDevs)
	vars := map[string]any{
		"abi": abi,
		"read_nrs": [5]uint32{unix.SYS_READ, unix.SYS_PREAD64, unix.SYS_READV,
			unix.SYS_PREADV, unix.SYS_PREADV2},
		"stacked": boolToU32(stacked),
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("erofstrace: the BPF object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("erofstrace: set %s: %w", name, err)
		}
	}
	if !stacked {
		delete(spec.Programs, "stacked_read")
	}

	m := &LatencyMonitor{stacked: stacked, devs: make(map[uint32]uint64)}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Cache: cache})
	if err != nil {
		return nil, latencyUnsupported("load the BPF programs", err)
	}
	m.objs = latencyObjs{
		SysEnter:    coll.DetachProgram("sys_enter"),
		SysExit:     coll.DetachProgram("sys_exit"),
		StackedRead: coll.DetachProgram("stacked_read"),
		Devs:        coll.DetachMap("devs"),
		Inflights:   coll.DetachMap("inflights"),
		Missed:      coll.DetachMap("missed"),
	}
	coll.Close() // closes what was not detached: nothing
	if o := m.objs; o.SysEnter == nil || o.SysExit == nil || (stacked && o.StackedRead == nil) ||
		o.Devs == nil || o.Inflights == nil || o.Missed == nil {
		m.Close()
		return nil, errors.New("erofstrace: the BPF object lacks a program or map")
	}

	// The exit first, so that no call is timed from an entry whose exit
	// goes unseen; an exit without its entry finds nothing to count.
	for _, p := range []struct {
		event string
		prog  *ebpf.Program
	}{
		{exitEvent, m.objs.SysExit},
		{stackedEvent, m.objs.StackedRead},
		{enterEvent, m.objs.SysEnter},
	} {
		if p.prog == nil {
			continue
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			m.Close()
			return nil, latencyUnsupported("attach to the tracepoint "+p.event, err)
		}
		m.links = append(m.links, l)
	}
	return m, nil
}

func boolToU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// Mechanism says how reads are timed: "raw_syscalls" (read system calls
// on files of a superblock added, by their descriptor), followed by
// "+mm_filemap_get_pages" where calls on overlayfs files are timed for
// the superblock of the layer whose page cache they read. Without the
// latter (older kernels), reads through overlayfs go untimed.
func (m *LatencyMonitor) Mechanism() string {
	if m.stacked {
		return "raw_syscalls+" + stackedEvent
	}
	return "raw_syscalls"
}

// AddDev starts timing the reads of files on the superblock
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
	var zero latencyHist
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
	var v latencyHist
	for kdev, dev := range m.devs {
		if err := m.objs.Devs.Lookup(kdev, &v); err != nil {
			return nil, fmt.Errorf("erofstrace: read the histograms of device %d:%d: %w", unix.Major(dev), unix.Minor(dev), err)
		}
		snap[dev] = DevLatency{
			Read: histogramOf(v.SumNs, v.Slots[:]),
		}
	}
	return snap, nil
}

// Missed counts read calls on timed superblocks (or on overlayfs files)
// that went untimed because the kernel could not allocate the task's
// storage for them.
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
// no permission, or a kernel without BTF tracepoints, task storage or
// the tracepoint to attach to.
func latencyUnsupported(step string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		why := step + ": permission denied (needs root, or CAP_BPF and CAP_PERFMON)"
		if os.Geteuid() == 0 {
			// Seen where the kernel forbids some BPF programs to
			// everyone (fentry, kprobes), as sandboxes' kernels may.
			why = step + ": permission denied to root (the kernel forbids it: lockdown, or a sandbox's policy)"
		}
		return &hostcap.Missing{What: whatLatency, Why: why, Err: err}
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP),
		errors.Is(err, unix.Errno(524)): // ENOTSUPP
		return &hostcap.Missing{What: whatLatency, Why: step + ": the kernel does not support it: " + err.Error(), Err: err}
	case errors.Is(err, btf.ErrNotFound), errors.Is(err, btf.ErrMultipleMatches):
		return &hostcap.Missing{What: whatLatency, Why: step + ": not in the kernel's BTF: " + err.Error(), Err: err}
	}
	return fmt.Errorf("erofstrace: %s: %w", step, err)
}
