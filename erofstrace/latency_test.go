package erofstrace_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"golang.org/x/sys/unix"
)

// needLatency needs OpenLatency to work here: BPF trampolines (fentry),
// the kernel's BTF and the privilege.
func needLatency() error {
	m, err := erofstrace.OpenLatency(nil)
	if err != nil {
		return err
	}
	return m.Close()
}

// TestLatency times reads and faults on a real mount, with the read
// function OpenLatency picks and with filemap_read: nothing is counted
// for reads and faults of files elsewhere (a file on the temporary
// directory's filesystem, a second EROFS mount not added), at least one
// read per pread and one fault per page touched in a mapping of a cold
// file, and each superblock counts its own.
func TestLatency(t *testing.T) {
	require.Host(t, require.Root, require.FileBackedErofs, needLatency)
	for _, fn := range []string{"", "filemap_read"} {
		name := fn
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			var o erofstrace.LatencyOptions
			if fn != "" {
				erofstrace.SetLatencyReadFunc(&o, fn)
			}
			testLatency(t, &o)
		})
	}
}

func testLatency(t *testing.T, o *erofstrace.LatencyOptions) {
	mntA, mntB := mountImage(t), mountImage(t)
	devOf := func(mnt string) uint64 {
		m, err := erofstrace.StatMount(mnt)
		if err != nil {
			t.Fatal(err)
		}
		return m.Dev
	}
	devA, devB := devOf(mntA), devOf(mntB)
	if devA == devB {
		t.Fatalf("two mounts on one device %#x", devA)
	}
	m, err := erofstrace.OpenLatency(o)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Logf("reads timed in %s", m.ReadFunc())
	if err := m.AddDev(devA); err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[uint64]erofstrace.DevLatency {
		t.Helper()
		s, err := m.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		for dev, l := range s {
			for kind, h := range map[string]erofstrace.Histogram{"read": l.Read, "fault": l.Fault} {
				if err := erofstrace.CheckHistogram(h); err != nil {
					t.Errorf("device %#x, %s: %v", dev, kind, err)
				}
			}
		}
		return s
	}

	// Elsewhere: a file on the temporary directory's filesystem, and
	// the mount not added.
	other := filepath.Join(t.TempDir(), "other.bin")
	if err := os.WriteFile(other, bytes.Repeat([]byte{1}, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{other, filepath.Join(mntB, "big.bin")} {
		preads(t, p, 16)
		touch(t, p, 16)
	}
	s := snapshot()
	if l, ok := s[devA]; !ok || l.Read.Count != 0 || l.Fault.Count != 0 {
		t.Fatalf("device A: %+v (present %v) after reading files elsewhere only, want nothing counted", l, ok)
	}
	if _, ok := s[devB]; ok || len(s) != 1 {
		t.Fatalf("snapshot of %d devices, device B (not added) present: %v", len(s), ok)
	}

	const n = 16
	preads(t, filepath.Join(mntA, "a.bin"), n)
	touch(t, filepath.Join(mntA, "big.bin"), n)
	s = snapshot()
	a := s[devA]
	t.Logf("device A: reads %d (%.6fs), faults %d (%.6fs)", a.Read.Count, a.Read.Sum, a.Fault.Count, a.Fault.Sum)
	if a.Read.Count < n || a.Fault.Count < n {
		t.Errorf("device A: %d reads and %d faults counted after %d preads and %d pages touched", a.Read.Count, a.Fault.Count, n, n)
	}

	// B from now on: its own counts, none of them A's.
	if err := m.AddDev(devB); err != nil {
		t.Fatal(err)
	}
	if b := snapshot()[devB]; b.Read.Count != 0 || b.Fault.Count != 0 {
		t.Errorf("device B: %+v when added, want nothing counted", b)
	}
	preads(t, filepath.Join(mntB, "a.bin"), 5)
	s = snapshot()
	if b := s[devB]; b.Read.Count < 5 || b.Fault.Count != 0 {
		t.Errorf("device B: %d reads and %d faults counted after 5 preads", b.Read.Count, b.Fault.Count)
	}
	if a2 := s[devA]; a2.Read.Count != a.Read.Count || a2.Fault.Count != a.Fault.Count {
		t.Errorf("device A: %d reads, %d faults after reads of B, was %d, %d", a2.Read.Count, a2.Fault.Count, a.Read.Count, a.Fault.Count)
	}

	if err := m.RemoveDev(devA); err != nil {
		t.Fatal(err)
	}
	if _, ok := snapshot()[devA]; ok {
		t.Error("device A in the snapshot after RemoveDev")
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
}

// preads reads n pages of the file at p, one pread each.
func preads(t *testing.T, p string, n int) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for i := range n {
		if _, err := f.ReadAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
}

// touch maps the file at p and reads a byte of n pages 128 KiB apart,
// after dropping its cached pages and with random access advised (no
// read-around), so that each touch finds its page missing and faults
// into filemap_fault: the fault-around of one touch maps only pages
// already cached, within 64 KiB.
func touch(t *testing.T, p string, n int) {
	t.Helper()
	const stride = 128 << 10
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, n*stride, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := unix.Madvise(mem, unix.MADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	var nonzero int // the file's data: random bytes, none zero
	for i := range n {
		if mem[i*stride] != 0 {
			nonzero++
		}
	}
	if nonzero != n {
		t.Fatalf("%s: %d of %d bytes touched were zero", p, n-nonzero, n)
	}
}

func TestOpenLatencyOptions(t *testing.T) {
	for _, n := range []int{-1, 1<<20 + 1} {
		if _, err := erofstrace.OpenLatency(&erofstrace.LatencyOptions{MaxDevs: n}); err == nil || errors.Is(err, erofstrace.ErrUnsupported) {
			t.Errorf("MaxDevs %d: %v", n, err)
		}
	}
}
