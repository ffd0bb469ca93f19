package erofstrace_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"golang.org/x/sys/unix"
)

// needLatency needs OpenLatency to work here: BTF tracepoints, task
// storage, the kernel's BTF and the privilege.
func needLatency() error {
	m, err := erofstrace.OpenLatency(nil)
	if err != nil {
		return err
	}
	return m.Close()
}

// readSlack is how many more calls than made a histogram may count: a
// call that a signal interrupts and the kernel restarts counts twice.
// None are expected; the tests log the counts.
const readSlack = 2

// readKinds is how many system calls readCalls makes per round.
const readKinds = 5

// readCalls makes n rounds of read system calls on the file at p, one
// each of read, pread64, readv, preadv and preadv2, of a page within the
// file's first 64 KiB (none at its end), and returns how many it made
// and the time spent in them as seen from here, summed call by call.
func readCalls(t *testing.T, p string, n int) (int, time.Duration) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	iov := [][]byte{buf[:1024], buf[1024:]}
	var calls int
	var spent time.Duration
	call := func(name string, f func() (int, error)) {
		t.Helper()
		start := time.Now()
		got, err := f()
		spent += time.Since(start)
		calls++
		if err != nil || got != len(buf) {
			t.Fatalf("%s %s: %d bytes, %v", name, p, got, err)
		}
	}
	for i := range n {
		off := int64(i%16) * 4096
		if _, err := unix.Seek(fd, off, 0); err != nil {
			t.Fatal(err)
		}
		call("read", func() (int, error) { return unix.Read(fd, buf) })
		call("pread64", func() (int, error) { return unix.Pread(fd, buf, off) })
		if _, err := unix.Seek(fd, off, 0); err != nil {
			t.Fatal(err)
		}
		call("readv", func() (int, error) { return unix.Readv(fd, iov) })
		call("preadv", func() (int, error) { return unix.Preadv(fd, iov, off) })
		call("preadv2", func() (int, error) { return unix.Preadv2(fd, iov, off, 0) })
	}
	return calls, spent
}

// otherCalls makes system calls on the file at p that are not reads:
// open, fstat, lseek, pwrite (failing: read-only), mmap and touching the
// mapping (page faults), a listing of its directory, close.
func otherCalls(t *testing.T, p string) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Seek(fd, 4096, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, []byte{1}, 0); err == nil {
		t.Fatalf("pwrite to read-only %s succeeded", p)
	}
	mem, err := unix.Mmap(fd, 0, 8192, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if mem[0] == 0 && mem[4096] == 0 {
		t.Logf("%s: zeros mapped", p)
	}
	unix.Munmap(mem)
	if _, err := os.ReadDir(filepath.Dir(p)); err != nil {
		t.Fatal(err)
	}
}

// latencySnapshot returns m's snapshot, checking that each histogram is
// well formed.
func latencySnapshot(t *testing.T, m *erofstrace.LatencyMonitor) map[uint64]erofstrace.DevLatency {
	t.Helper()
	s, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for dev, l := range s {
		if err := erofstrace.CheckHistogram(l.Read); err != nil {
			t.Errorf("device %d:%d: %v", unix.Major(dev), unix.Minor(dev), err)
		}
	}
	return s
}

// checkReads checks that h counted from what it was before (prev) the
// calls made, within the slack, in no more time than the caller saw
// them take.
func checkReads(t *testing.T, what string, prev, h erofstrace.Histogram, calls int, spent time.Duration) {
	t.Helper()
	got := h.Count - prev.Count
	sum := h.Sum - prev.Sum
	t.Logf("%s: %d calls made, %d counted, %.1f µs in the kernel's count, %.1f µs seen by the caller",
		what, calls, got, sum*1e6, spent.Seconds()*1e6)
	if got < uint64(calls) || got > uint64(calls+readSlack) {
		t.Errorf("%s: %d calls counted after %d made", what, got, calls)
	}
	if sum <= 0 || sum > spent.Seconds() {
		t.Errorf("%s: %gs counted, the calls took %gs as seen by the caller", what, sum, spent.Seconds())
	}
}

func devOf(t *testing.T, mnt string) uint64 {
	t.Helper()
	m, err := erofstrace.StatMount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return m.Dev
}

// TestLatency times read calls on a real mount: nothing is counted for
// calls on files elsewhere (the temporary directory's filesystem, a
// second EROFS mount not added) nor for calls on its files that are not
// reads; each read call on its files counts once, in the kernel's time
// no longer than the caller saw; each superblock counts its own, from
// threads at once too; RemoveDev stops the counting.
func TestLatency(t *testing.T) {
	require.Host(t, require.Root, require.FileBackedErofs, needLatency)
	mntA, mntB := mountImage(t), mountImage(t)
	devA, devB := devOf(t, mntA), devOf(t, mntB)
	if devA == devB {
		t.Fatalf("two mounts on one device %#x", devA)
	}
	m, err := erofstrace.OpenLatency(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Logf("mechanism %s", m.Mechanism())
	if s := latencySnapshot(t, m); len(s) != 0 {
		t.Fatalf("snapshot %+v before AddDev", s)
	}
	if err := m.AddDev(devA); err != nil {
		t.Fatal(err)
	}
	if err := m.AddDev(devA); err != nil {
		t.Fatalf("second AddDev: %v", err)
	}

	// Elsewhere, and not reads.
	other := filepath.Join(t.TempDir(), "other.bin")
	if err := os.WriteFile(other, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for _, p := range []string{other, filepath.Join(mntB, "a.bin")} {
		readCalls(t, p, n)
	}
	otherCalls(t, filepath.Join(mntA, "a.bin"))
	otherCalls(t, filepath.Join(mntA, "big.bin"))
	s := latencySnapshot(t, m)
	if l, ok := s[devA]; !ok || l.Read.Count != 0 {
		t.Fatalf("device A: %+v (present %v) after reading files elsewhere only, want nothing counted", l, ok)
	}
	if _, ok := s[devB]; ok || len(s) != 1 {
		t.Fatalf("snapshot of %d devices, device B (not added) present: %v", len(s), ok)
	}

	calls, spent := readCalls(t, filepath.Join(mntA, "a.bin"), n)
	s = latencySnapshot(t, m)
	a := s[devA].Read
	checkReads(t, "device A", erofstrace.Histogram{}, a, calls, spent)
	if _, ok := s[devB]; ok {
		t.Error("device B in the snapshot, not added")
	}

	// B from now on: its own counts, none of them A's, from threads
	// reading both at once.
	if err := m.AddDev(devB); err != nil {
		t.Fatal(err)
	}
	if b := latencySnapshot(t, m)[devB]; b.Read.Count != 0 {
		t.Errorf("device B: %+v when added, want nothing counted", b)
	}
	const threads = 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := map[string]int{}
	took := map[string]time.Duration{}
	for i := range threads {
		mnt := map[bool]string{true: mntA, false: mntB}[i%2 == 0]
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			c, d := readCalls(t, filepath.Join(mnt, "sub/c.bin"), n)
			mu.Lock()
			made[mnt] += c
			took[mnt] += d
			mu.Unlock()
		})
	}
	wg.Wait()
	s = latencySnapshot(t, m)
	checkReads(t, "device A, threads", a, s[devA].Read, made[mntA], took[mntA])
	checkReads(t, "device B, threads", erofstrace.Histogram{}, s[devB].Read, made[mntB], took[mntB])
	a, b := s[devA].Read, s[devB].Read

	// A removed: its reads count nowhere; B's still count.
	if err := m.RemoveDev(devA); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveDev(devA); err != nil {
		t.Fatalf("second RemoveDev: %v", err)
	}
	readCalls(t, filepath.Join(mntA, "a.bin"), n)
	s = latencySnapshot(t, m)
	if _, ok := s[devA]; ok || len(s) != 1 {
		t.Errorf("device A in the snapshot after RemoveDev (%d devices)", len(s))
	}
	if got := s[devB].Read; got.Count != b.Count {
		t.Errorf("device B: %d reads after reads of A only, was %d", got.Count, b.Count)
	}
	// Added again: from zero.
	if err := m.AddDev(devA); err != nil {
		t.Fatal(err)
	}
	if got := latencySnapshot(t, m)[devA].Read; got.Count != 0 {
		t.Errorf("device A: %d reads when added again, want 0", got.Count)
	}
	calls, spent = readCalls(t, filepath.Join(mntA, "big.bin"), n)
	checkReads(t, "device A, added again", erofstrace.Histogram{}, latencySnapshot(t, m)[devA].Read, calls, spent)

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
	if err := m.AddDev(devA); !errors.Is(err, os.ErrClosed) {
		t.Errorf("AddDev after Close: %v", err)
	}
	if err := m.RemoveDev(devA); !errors.Is(err, os.ErrClosed) {
		t.Errorf("RemoveDev after Close: %v", err)
	}
	if got := m.Missed(); got != 0 {
		t.Errorf("Missed after Close: %d", got)
	}
}

// TestLatencyOverlay times read calls on files of an overlayfs whose
// lower layer is an EROFS mount, as containers read their images: with
// stacked reads timed (the default where the kernel has the
// mm_filemap_get_pages tracepoint), each read of a lower file counts for
// the EROFS superblock; reads of a file in the upper layer and reads at
// the end of a lower file (no page cache read) do not. Without, nothing
// through overlayfs counts.
func TestLatencyOverlay(t *testing.T) {
	require.Host(t, require.Root, require.FileBackedErofs, needLatency)
	lower := mountImage(t)
	dev := devOf(t, lower)
	merged, upper, work := t.TempDir(), t.TempDir(), t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Skipf("overlayfs not available: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Error(err)
		}
	})
	if err := os.WriteFile(filepath.Join(merged, "new.bin"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, stacked := range []bool{true, false} {
		t.Run(map[bool]string{true: "stacked", false: "unstacked"}[stacked], func(t *testing.T) {
			var o erofstrace.LatencyOptions
			if !stacked {
				erofstrace.SetLatencyNoStacked(&o)
			}
			m, err := erofstrace.OpenLatency(&o)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			mech := m.Mechanism()
			t.Logf("mechanism %s", mech)
			if got := strings.Contains(mech, "mm_filemap_get_pages"); got != stacked {
				if stacked {
					t.Skipf("mechanism %s: the kernel has no mm_filemap_get_pages tracepoint", mech)
				}
				t.Fatalf("mechanism %s with stacked reads off", mech)
			}
			if err := m.AddDev(dev); err != nil {
				t.Fatal(err)
			}
			const n = 20
			// The upper layer's file; the end of a lower file.
			readCalls(t, filepath.Join(merged, "new.bin"), n)
			f, err := os.Open(filepath.Join(merged, "a.bin"))
			if err != nil {
				t.Fatal(err)
			}
			for range n {
				if got, err := unix.Pread(int(f.Fd()), make([]byte, 10), int64(testFiles["a.bin"])); got != 0 || err != nil {
					t.Fatalf("pread at the end: %d, %v", got, err)
				}
			}
			f.Close()
			if got := latencySnapshot(t, m)[dev].Read; got.Count != 0 {
				t.Fatalf("%d reads counted after reads of the upper layer and at the end of a lower file", got.Count)
			}

			calls, spent := readCalls(t, filepath.Join(merged, "a.bin"), n)
			h := latencySnapshot(t, m)[dev].Read
			if stacked {
				checkReads(t, "through overlayfs", erofstrace.Histogram{}, h, calls, spent)
			} else if h.Count != 0 {
				t.Errorf("%d reads through overlayfs counted with stacked reads off", h.Count)
			}
			// The lower file directly: counted either way.
			calls, spent = readCalls(t, filepath.Join(lower, "a.bin"), n)
			checkReads(t, "directly", h, latencySnapshot(t, m)[dev].Read, calls, spent)
			if got := m.Missed(); got != 0 {
				t.Errorf("missed %d", got)
			}
		})
	}
}

// BenchmarkLatencyOverhead measures what an open LatencyMonitor costs the
// machine's other system calls: one that is not a read (getppid), and a
// read of a cached file on a superblock not timed (pread).
func BenchmarkLatencyOverhead(b *testing.B) {
	require.Host(b, require.Root, needLatency)
	p := filepath.Join(b.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 64)
	calls := map[string]func(){
		"getppid": func() { unix.Getppid() },
		"pread":   func() { unix.Pread(fd, buf, 0) },
	}
	for _, name := range []string{"getppid", "pread"} {
		for _, on := range []bool{false, true} {
			b.Run(name+map[bool]string{false: "/off", true: "/on"}[on], func(b *testing.B) {
				if on {
					m, err := erofstrace.OpenLatency(nil)
					if err != nil {
						b.Fatal(err)
					}
					defer m.Close()
				}
				for b.Loop() {
					calls[name]()
				}
			})
		}
	}
}

func TestOpenLatencyOptions(t *testing.T) {
	for _, n := range []int{-1, 1<<20 + 1} {
		if _, err := erofstrace.OpenLatency(&erofstrace.LatencyOptions{MaxDevs: n}); err == nil || errors.Is(err, erofstrace.ErrUnsupported) {
			t.Errorf("MaxDevs %d: %v", n, err)
		}
	}
}
