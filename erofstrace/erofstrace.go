// Package erofstrace records which file data a workload reads from one
// EROFS mount, with eBPF on the kernel's erofs tracepoints, and turns the
// record into a prefetch list: the files in the order they were first
// read, with the byte ranges read.
//
//	m, err := erofstrace.StatMount("/mnt/image")
//	t, err := erofstrace.Open(m.Dev, nil)
//	defer t.Close()
//	tr, err := t.Run(ctx) // until ctx is done
//	list, stats, err := erofstrace.Resolve(m.Path, tr, nil)
//
// The kernel reports reads by inode (its nid) and page, as the page cache
// misses them: a file whose pages are cached already produces no event,
// so trace a cold mount (freshly mounted, or after dropping its caches).
// Resolve maps nids back to paths by walking the mounted filesystem,
// where a directory entry's inode number is the nid.
//
// The events are erofs/erofs_readahead (erofs_readpages on older kernels)
// and erofs/erofs_read_folio. Their record layout is no ABI, so Open
// reads it from the events' format files in tracefs and hands the
// offsets to the BPF program as constants; the program needs neither the
// kernel's BTF nor headers of the running kernel. Tracing needs BPF ring
// buffers (Linux 5.8+), tracefs, the erofs tracepoints, and root (or
// CAP_BPF with CAP_PERFMON); where one is missing, Open returns an error
// matching ErrUnsupported that says which.
//
// Which reads fire these events depends on the kernel. Linux 6.18 fires
// them for reads of file data on file-backed mounts (erofsd's fanotify
// front end) and on block devices, as checked here. Linux 6.1 fires only
// erofs_read_folio for uncompressed files on block devices (their
// readahead goes untraced) and nothing for reads in fscache mode, so a
// trace there misses most reads.
//
// A LatencyMonitor measures, rather than records: with eBPF on the
// system call tracepoints (raw_syscalls sys_enter and sys_exit, as BTF
// tracepoints; no fentry or kprobes), it keeps histograms of how long
// read calls on files of the EROFS superblocks it is given take, directly
// or through overlayfs, the waits users feel, for a daemon to export as
// metrics. Page faults on mapped files are not timed (see DevLatency).
//
//	lm, err := erofstrace.OpenLatency(nil)
//	defer lm.Close()
//	err = lm.AddDev(m.Dev) // as images are mounted; RemoveDev as unmounted
//	snap, err := lm.Snapshot() // per st_dev: the Read histogram
package erofstrace

import (
	"errors"
	"time"

	"github.com/erofsd/erofsd/internal/hostcap"
)

// ErrUnsupported matches every error that says this host cannot trace:
// no BPF, no ring buffers, no tracefs or erofs tracepoints, a record
// layout this package cannot read, or no permission. The error says
// which.
var ErrUnsupported = hostcap.ErrMissing

// ErrNotErofs is returned for a mount point that is not an EROFS mount.
var ErrNotErofs = errors.New("not an EROFS mount")

// what names tracing in the errors that say it is unsupported.
const what = "tracing EROFS reads with eBPF"

// Limits, defaults of Options and ResolveOptions: a trace is a hint for
// prefetching, never a reason to hold unbounded memory.
const (
	// DefaultRingSize is the BPF ring buffer's size: 32-byte events
	// (40 with their header), room for about 26,000 before Run reads
	// them.
	DefaultRingSize = 1 << 20
	// DefaultMaxEvents bounds the events a Trace keeps (32 MiB of them).
	DefaultMaxEvents = 1 << 20
	// DefaultMaxWalk bounds the directory entries Resolve reads.
	DefaultMaxWalk = 1 << 24
)

// Event is one read of a file's pages that missed the page cache: the
// kernel read Pages pages from page Index on.
type Event struct {
	Time  time.Duration // CLOCK_MONOTONIC, as bpf_ktime_get_ns
	Nid   uint64        // the inode's nid
	Index uint64        // first page
	Pages uint32
}

// Trace is what Run recorded.
type Trace struct {
	Dev    uint64  // st_dev of the traced mount, as Open got it
	Events []Event // in the order the kernel queued them
	// Lost counts events the kernel dropped because the ring buffer was
	// full (Run did not keep up), Dropped those Run dropped beyond
	// MaxEvents. Either makes the trace incomplete.
	Lost, Dropped uint64
}
