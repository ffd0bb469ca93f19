package erofstrace_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"github.com/erofsd/erofsd/prefetchlist"
	"golang.org/x/sys/unix"
)

// needTracing needs Open to work here: BPF, tracefs, the erofs
// tracepoints and the privilege.
func needTracing() error {
	tr, err := erofstrace.Open(0, nil)
	if err != nil {
		return err
	}
	return tr.Close()
}

// testFiles are the files of the test image and their sizes; the data is
// random, since runs of zeros would become holes.
var testFiles = map[string]int{
	"a.bin":           64 << 10,
	"small.txt":       100, // inline in its inode
	"big.bin":         2 << 20,
	"sub/c.bin":       100<<10 + 5,
	"unread.bin":      64 << 10,
	"sub/unread2.bin": 8 << 10,
}

// mountImage builds a self-contained image of testFiles, mounts it
// file-backed and drops the page cache of its files, so that every read
// misses it.
func mountImage(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	rnd := rand.New(rand.NewPCG(1, 2))
	for name, size := range testFiles {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rnd.UintN(255)) + 1
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, _, _ := testimage.Build(t, src, build.Options{})
	mnt := t.TempDir()
	unmount, err := testmount.FileBacked(img, nil, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Error(err)
		}
	})
	// A fresh mount starts cold; say so anyway, file by file, rather
	// than dropping the whole machine's caches.
	for name := range testFiles {
		f, err := os.Open(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return mnt
}

// covers reports whether one range of e holds [off, off+n).
func covers(e prefetchlist.Entry, off, n int64) bool {
	for _, r := range e.Ranges {
		if r.Off <= off && off+n <= r.End() {
			return true
		}
	}
	return false
}

// TestTrace traces a workload on a real mount: the list holds the files
// it read, in the order it read them, with ranges covering what it read
// (a pread in the middle of a file gives a range there, not from 0), and
// not the files it only listed or stat'ed.
func TestTrace(t *testing.T) {
	require.Host(t, require.Root, require.FileBackedErofs, needTracing)
	mnt := mountImage(t)
	m, err := erofstrace.StatMount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if m.Root != "/" {
		t.Fatalf("mount root %q", m.Root)
	}
	tr, err := erofstrace.Open(m.Dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		trace *erofstrace.Trace
		err   error
	}
	done := make(chan result, 1)
	go func() {
		trace, err := tr.Run(ctx)
		done <- result{trace, err}
	}()

	// The workload: a listing and a stat (metadata only), three whole
	// files, then one page in the middle of big.bin.
	if _, err := os.ReadDir(filepath.Join(mnt, "sub")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "unread.bin")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sub/c.bin", "a.bin", "small.txt"} {
		if _, err := os.ReadFile(filepath.Join(mnt, name)); err != nil {
			t.Fatal(err)
		}
	}
	const preadOff = 1<<20 + 8192
	f, err := os.Open(filepath.Join(mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), preadOff); err != nil {
		t.Fatal(err)
	}
	f.Close()

	cancel()
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was done")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	list, st, err := erofstrace.Resolve(mnt, res.trace, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events, stats %+v\n%s", len(res.trace.Events), st, list.Encode())

	if want := []string{"/sub/c.bin", "/a.bin", "/small.txt", "/big.bin"}; !reflect.DeepEqual(list.Paths(), want) {
		t.Fatalf("files %q, want %q", list.Paths(), want)
	}
	for i, want := range []struct {
		off, n int64
	}{{0, int64(testFiles["sub/c.bin"])}, {0, 64 << 10}, {0, 100}, {preadOff, 4096}} {
		if e := list.Entries[i]; !covers(e, want.off, want.n) {
			t.Errorf("%s: ranges %+v do not cover %d+%d", e.Path, e.Ranges, want.off, want.n)
		}
	}
	if e := list.Entries[2]; !reflect.DeepEqual(e.Ranges, []prefetchlist.Range{{Off: 0, Len: 100}}) {
		t.Errorf("%s: ranges %+v, want the file's 100 bytes (clipped to its size)", e.Path, e.Ranges)
	}
	if e := list.Entries[3]; covers(e, 0, 4096) {
		t.Errorf("%s: ranges %+v cover its first page, which was not read", e.Path, e.Ranges)
	}
	if st.Unresolved != 0 || st.Lost != 0 || st.Dropped != 0 || st.Files != 4 || st.Events != len(res.trace.Events) {
		t.Errorf("stats %+v", st)
	}
	if !slices.IsSortedFunc(res.trace.Events, func(a, b erofstrace.Event) int { return int(a.Time - b.Time) }) {
		t.Logf("events out of time order (Resolve sorts them): %+v", res.trace.Events)
	}
}

// TestCloseUnblocksRun closes a tracer under a blocked Run, twice.
func TestCloseUnblocksRun(t *testing.T) {
	require.Host(t, require.Root, needTracing)
	tr, err := erofstrace.Open(0, &erofstrace.Options{RingSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tr.Run(context.Background())
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Run after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Run")
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := tr.Run(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}

func TestOpenOptions(t *testing.T) {
	for _, size := range []int{100, 3 << 12, 2 << 30} {
		if _, err := erofstrace.Open(0, &erofstrace.Options{RingSize: size}); err == nil || errors.Is(err, erofstrace.ErrUnsupported) {
			t.Errorf("ring size %d: %v", size, err)
		}
	}
}

// TestResolve feeds Resolve a made-up trace of a real mount: first read
// decides the order (by time, not by position), pages past a file's end
// are clipped, directories and unknown nids are counted, not listed, and
// MaxWalk ends the walk.
func TestResolve(t *testing.T) {
	require.Host(t, require.FileBackedErofs)
	mnt := mountImage(t)
	m, err := erofstrace.StatMount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	nid := func(name string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(mnt, name), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	tr := &erofstrace.Trace{Dev: m.Dev, Lost: 2, Events: []erofstrace.Event{
		{Time: 30, Nid: nid("a.bin"), Index: 0, Pages: 4},
		{Time: 10, Nid: nid("sub/c.bin"), Index: 24, Pages: 32}, // c.bin is 25 pages and 5 bytes
		{Time: 20, Nid: nid("sub"), Index: 0, Pages: 1},
		{Time: 40, Nid: 1 << 40, Index: 0, Pages: 1},
		{Time: 50, Nid: nid("a.bin"), Index: 4, Pages: 4},
		{Time: 60, Nid: nid("small.txt"), Index: 7, Pages: 1}, // past the end
	}}
	list, st, err := erofstrace.Resolve(mnt, tr, &erofstrace.ResolveOptions{PageSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	want := []prefetchlist.Entry{
		{Path: "/sub/c.bin", Ranges: []prefetchlist.Range{{Off: 24 << 12, Len: 4096 + 5}}},
		{Path: "/a.bin", Ranges: []prefetchlist.Range{{Off: 0, Len: 8 << 12}}},
	}
	if !reflect.DeepEqual(list.Entries, want) {
		t.Fatalf("list %+v, want %+v", list.Entries, want)
	}
	if want := (erofstrace.Stats{Events: 6, Files: 2, Bytes: 4096 + 5 + 8<<12, Unresolved: 1, UnresolvedEvents: 1, NotFiles: 1, Lost: 2}); st.Walked == 0 || st.WalkLimited {
		t.Errorf("stats %+v", st)
	} else if st.Walked = 0; st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}

	_, st, err = erofstrace.Resolve(mnt, tr, &erofstrace.ResolveOptions{MaxWalk: 1})
	if err != nil || !st.WalkLimited || st.Unresolved == 0 {
		t.Errorf("MaxWalk 1: %v, stats %+v", err, st)
	}
	tr.Dev++
	if _, _, err := erofstrace.Resolve(mnt, tr, nil); err == nil {
		t.Error("a trace of another device resolved")
	}
	if _, err := erofstrace.StatMount(filepath.Join(mnt, "sub")); err == nil {
		t.Error("StatMount took a directory inside the mount")
	}
}
