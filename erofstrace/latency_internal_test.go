package erofstrace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"golang.org/x/sys/unix"
)

// TestHistogramOf checks the conversion of the kernel's per-slot counts
// into cumulative buckets in seconds.
func TestHistogramOf(t *testing.T) {
	bounds := make([]float64, latencyBounds)
	for i := range bounds {
		bounds[i] = float64(int(1000)<<i) / 1e9
	}
	if bounds[0] != 1e-6 || bounds[10] != 1.024e-3 || bounds[latencyBounds-1] != 16.777216 {
		t.Fatalf("bounds %v", bounds)
	}
	// want builds the expected histogram from cumulative counts per
	// bound (missing ones repeat the last).
	want := func(count uint64, sum float64, cum ...uint64) Histogram {
		h := Histogram{Count: count, Sum: sum, Buckets: make([]Bucket, latencyBounds)}
		var c uint64
		for i := range h.Buckets {
			if i < len(cum) {
				c = cum[i]
			}
			h.Buckets[i] = Bucket{UpperBound: bounds[i], Count: c}
		}
		return h
	}
	slots := func(set map[int]uint64) []uint64 {
		s := make([]uint64, 32)
		for i, n := range set {
			s[i] = n
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		sumNs uint64
		slots []uint64
		want  Histogram
	}{
		{"empty", 0, make([]uint64, 32), want(0, 0)},
		{"no slots", 0, nil, want(0, 0)},
		{"first bucket", 2500, slots(map[int]uint64{0: 3}), want(3, 2.5e-6, 3)},
		{"spread", 1_500_000_000, slots(map[int]uint64{0: 1, 3: 2, 10: 4, 24: 1}),
			want(8, 1.5, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8)},
		// Slot 25 is the kernel's overflow slot; later ones are unused
		// but would count as overflow too.
		{"overflow", 40e9, slots(map[int]uint64{2: 1, 25: 2, 31: 1}), want(4, 40, 0, 0, 1)},
		{"short slots", 3000, []uint64{1, 0, 1}, want(2, 3e-6, 1, 1, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := histogramOf(tc.sumNs, tc.slots)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("histogramOf(%d, %v)\n got %+v\nwant %+v", tc.sumNs, tc.slots, got, tc.want)
			}
		})
	}
}

// dioHooks load the programs on tracepoints instead of fentry/fexit: the
// read programs on iomap's direct I/O events, which carry the struct
// kiocb first as erofs_file_read_iter and filemap_read do, and the fault
// programs on one of them, loaded (verified) only.
var dioHooks = map[string]latencyHook{
	"read_enter":  {typ: ebpf.AttachTraceRawTp, to: "iomap_dio_rw_begin"},
	"read_exit":   {typ: ebpf.AttachTraceRawTp, to: "iomap_dio_complete"},
	"fault_enter": {typ: ebpf.AttachTraceRawTp, to: "iomap_dio_rw_begin", loadOnly: true},
	"fault_exit":  {typ: ebpf.AttachTraceRawTp, to: "iomap_dio_complete", loadOnly: true},
}

// TestLatencyOnTracepoints runs the BPF programs where fentry may be
// forbidden (as on sandboxes' kernels) but BTF tracepoints are not: the
// verifier takes all four, CO-RE finds their fields in the running
// kernel, and the read programs, timing direct reads of a file on the
// temporary directory's filesystem between iomap's begin and complete
// events, count them for its superblock once added and only then, with
// their durations in the buckets that their sum allows.
func TestLatencyOnTracepoints(t *testing.T) {
	require.Host(t, require.Root)
	dir := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if m := uint32(sfs.Type); m != unix.EXT4_SUPER_MAGIC && m != unix.XFS_SUPER_MAGIC {
		t.Skipf("%s: filesystem magic %#x, want ext4 or xfs (direct reads through iomap)", dir, m)
	}
	m, err := OpenLatency(&LatencyOptions{MaxDevs: 2, hooks: dioHooks})
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	const size = 1 << 20
	p := filepath.Join(dir, "data")
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("open %s with O_DIRECT: %v", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	dev := uint64(st.Dev)
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS) // aligned
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	reads := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := unix.Pread(fd, buf, int64(i%(size/4096))*4096); err != nil {
				t.Fatal(err)
			}
		}
	}
	snapshot := func() map[uint64]DevLatency {
		t.Helper()
		s, err := m.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	reads(4) // not timed: no superblock added
	if s := snapshot(); len(s) != 0 {
		t.Fatalf("snapshot %+v before any AddDev", s)
	}
	// The second superblock, procfs, has no direct reads.
	var proc unix.Stat_t
	if err := unix.Stat("/proc/self", &proc); err != nil {
		t.Fatal(err)
	}
	for _, d := range []uint64{dev, uint64(proc.Dev), dev} {
		if err := m.AddDev(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.AddDev(unix.Mkdev(7, 12345)); err == nil {
		t.Error("AddDev beyond MaxDevs 2 succeeded")
	}
	if s := snapshot(); len(s) != 2 || s[dev].Read.Count != 0 || s[uint64(proc.Dev)].Read.Count != 0 {
		t.Fatalf("snapshot %+v after AddDev, want two empty histograms", s)
	}

	const n = 50
	reads(n)
	s := snapshot()
	h := s[dev].Read
	t.Logf("%d direct reads: count %d, sum %.6fs, buckets %v", n, h.Count, h.Sum, h.Buckets)
	if h.Count < n {
		t.Errorf("read count %d after %d reads", h.Count, n)
	}
	if err := CheckHistogram(h); err != nil {
		t.Error(err)
	}
	if f := s[dev].Fault; f.Count != 0 {
		t.Errorf("fault count %d from programs only loaded", f.Count)
	}
	if r := s[uint64(proc.Dev)].Read; r.Count != 0 {
		t.Errorf("procfs counted %d reads", r.Count)
	}

	if err := m.RemoveDev(dev); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveDev(dev); err != nil {
		t.Fatalf("second RemoveDev: %v", err)
	}
	reads(4)
	if err := m.AddDev(dev); err != nil {
		t.Fatal(err)
	}
	if s := snapshot(); s[dev].Read.Count != 0 {
		t.Errorf("read count %d after removing and adding again", s[dev].Read.Count)
	}
	if got := m.Missed(); got != 0 {
		t.Errorf("missed %d", got)
	}

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Snapshot(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Snapshot after Close: %v", err)
	}
	if err := m.AddDev(dev); !errors.Is(err, os.ErrClosed) {
		t.Errorf("AddDev after Close: %v", err)
	}
	if err := m.RemoveDev(dev); !errors.Is(err, os.ErrClosed) {
		t.Errorf("RemoveDev after Close: %v", err)
	}
}

// TestCheckHistogram checks the tests' check: a sum that the buckets do
// not allow is caught.
func TestCheckHistogram(t *testing.T) {
	if err := CheckHistogram(histogramOf(3000+5000, []uint64{0, 0, 1, 1})); err != nil {
		t.Errorf("3 µs and 5 µs: %v", err)
	}
	if err := CheckHistogram(histogramOf(20e9, []uint64{25: 1})); err != nil {
		t.Errorf("20 s: %v", err)
	}
	short := histogramOf(0, nil)
	short.Buckets = short.Buckets[1:]
	for name, h := range map[string]Histogram{
		"sum below the bucket":   histogramOf(1500, []uint64{0, 0, 1}),
		"sum above the bucket":   histogramOf(4001, []uint64{0, 0, 1}),
		"overflow below 16.8 s":  histogramOf(16e9, []uint64{25: 1}),
		"no sum":                 histogramOf(0, []uint64{1}),
		"count below the bucket": {Buckets: histogramOf(1, []uint64{1}).Buckets, Count: 0, Sum: 1e-9},
		"missing bucket":         short,
	} {
		if err := CheckHistogram(h); err == nil {
			t.Errorf("%s: %+v passed", name, h)
		}
	}
}

// TestLatencyUnsupported checks which load and attach errors say the host
// cannot measure, keeping the error they wrap.
func TestLatencyUnsupported(t *testing.T) {
	other := errors.New("verifier says no")
	for _, tc := range []struct {
		err         error
		unsupported bool
	}{
		{unix.EPERM, true},
		{fmt.Errorf("load: %w", ebpf.ErrNotSupported), true},
		{unix.Errno(524), true}, // ENOTSUPP
		{fmt.Errorf("find target: %w", btf.ErrNotFound), true},
		{other, false},
	} {
		err := latencyUnsupported("step", tc.err)
		if errors.Is(err, ErrUnsupported) != tc.unsupported || !errors.Is(err, tc.err) {
			t.Errorf("%v: %v (unsupported %v, want %v)", tc.err, err, errors.Is(err, ErrUnsupported), tc.unsupported)
		}
	}
}
