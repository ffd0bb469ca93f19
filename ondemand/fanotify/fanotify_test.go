package fanotify

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
	"github.com/erofsd/erofsd/ondemand"
	"golang.org/x/sys/unix"
)

// lazyMount builds src into an image with blobs, serves the blobs through
// a fanotify group and mounts the image file-backed with the kernel.
type lazyMount struct {
	reg     *ondemand.Registry
	srv     *Server
	mnt     string
	blobDir string
	watches []*Watch
	objs    []*ondemand.Object // the sources of watches, in order
}

// lazyFlushEvery, if set, is how often newLazyMount's server saves its
// presence maps.
var lazyFlushEvery time.Duration

func newLazyMount(t *testing.T, src string, chunkSize int64, corrupt bool) *lazyMount {
	t.Helper()
	return newLazyMountWith(t, src, chunkSize, corrupt, false)
}

// newLazyMountWith is newLazyMount of an image without chunk states if
// dropStates: its chunks are checked by their digests alone.
func newLazyMountWith(t *testing.T, src string, chunkSize int64, corrupt, dropStates bool) *lazyMount {
	t.Helper()
	cache := t.TempDir()
	require.Host(t, require.FileBackedErofs, func() error { return Supported(cache) })
	blobDir := t.TempDir()
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: chunkSize})
	if dropStates {
		testimage.DropChunkStates(t, img)
	}
	if corrupt {
		p := blobs[0]
		data, _ := os.ReadFile(p)
		data[len(data)/2] ^= 0xFF
		os.WriteFile(p, data, 0o644)
	}
	store, _ := blobstore.NewLocal(blobDir)
	m := &lazyMount{reg: ondemand.NewRegistry(), blobDir: blobDir}
	t.Cleanup(func() { m.reg.Close() })
	im, err := m.reg.Register(ondemand.ImageSpec{FSID: "lazy", Bootstrap: img, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if m.srv, err = New(Config{}); err != nil {
		t.Fatal(err)
	}
	m.srv.flushEvery = lazyFlushEvery
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- m.srv.Serve(ctx) }()
	var devices []string
	for _, bl := range im.Blobs {
		obj, err := m.reg.Resolve(im.VolumeKey(), bl.Name)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(cache, bl.Name)
		w, err := m.srv.Watch(p, bl.Size, bl.Digest.Sum(), obj)
		if err != nil {
			t.Fatal(err)
		}
		m.watches = append(m.watches, w)
		m.objs = append(m.objs, obj)
		devices = append(devices, p)
		t.Cleanup(obj.Release)
	}
	m.mnt = t.TempDir()
	unmount, err := testmount.FileBacked(img, devices, m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmount()
		for _, w := range m.watches {
			w.Close()
		}
		cancel()
		<-served
		m.srv.Release()
	})
	return m
}

func TestLazyTree(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	man, err := testtree.Generate(src, testtree.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var one string
	for _, e := range man.Entries {
		if e.Type.IsRegular() && e.Size == 100000 {
			one = e.Path
		}
	}
	if one == "" {
		t.Fatal("the test tree has no 100000-byte file")
	}
	m := newLazyMount(t, src, 64<<10, false)

	// A metadata-only walk fetches no blob data.
	filepathWalk(t, m.mnt)
	if got := m.reg.Stats.FetchedBytes.Load(); got != 0 {
		t.Fatalf("a metadata walk fetched %d bytes of blob data", got)
	}
	// Reading one small file fetches its chunk only.
	data, err := os.ReadFile(filepath.Join(m.mnt, one))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.reg.Stats.FetchedBytes.Load(); got < int64(len(data)) || got > int64(len(data))+64<<10 {
		t.Fatalf("reading a %d-byte file fetched %d bytes", len(data), got)
	}

	treecmp.Expect(t, src, m.mnt, treecmp.Options{})
	for _, w := range m.watches {
		if !w.Complete() {
			t.Error("blob not complete after reading every file")
		}
	}
	if m.srv.Stats.Denied.Load() != 0 {
		t.Errorf("%d reads denied", m.srv.Stats.Denied.Load())
	}
}

func filepathWalk(t *testing.T, root string) {
	t.Helper()
	n := 0
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		n++
		return err
	})
	if err != nil || n < 100 {
		t.Fatalf("walk: %d entries, %v", n, err)
	}
}

func TestLazyConcurrentReaders(t *testing.T) {
	src := t.TempDir()
	want := make([]byte, 64<<20)
	rand.Read(want)
	os.WriteFile(filepath.Join(src, "big"), want, 0o644)
	m := newLazyMount(t, src, 1<<20, false)
	var wg sync.WaitGroup
	for r := 0; r < 8; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			f, err := os.Open(filepath.Join(m.mnt, "big"))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			buf := make([]byte, 300000)
			for i := 0; i < 100; i++ {
				off := int64((r*7919 + i*104729) % (len(want) - len(buf)))
				if i%2 == 0 {
					off = int64(i) * int64(len(want)/100)
				}
				n, err := f.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					t.Errorf("reader %d at %d: %v", r, off, err)
					return
				}
				if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("reader %d: wrong bytes at %d", r, off)
					return
				}
			}
		}(r)
	}
	wg.Wait()
	if got := m.reg.Stats.Fetches.Load(); got > 64 {
		t.Errorf("%d chunk fetches for a 64-chunk blob", got)
	}
}

func TestCorruptChunkGivesEIO(t *testing.T) {
	src := t.TempDir()
	data := make([]byte, 4<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "f"), data, 0o644)
	m := newLazyMount(t, src, 1<<20, true)
	_, err := os.ReadFile(filepath.Join(m.mnt, "f"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading a file with a corrupt chunk: %v, want EIO", err)
	}
	if m.reg.Stats.DigestFailures.Load() == 0 {
		t.Fatal("no digest failure counted")
	}
	// The chunks before the corrupt one still read correctly.
	f, _ := os.Open(filepath.Join(m.mnt, "f"))
	defer f.Close()
	buf := make([]byte, 1<<20)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:1<<20]) {
		t.Fatalf("first chunk: %v", err)
	}
}

// TestReplayAfterCrash plays a daemon that read an event and died before
// answering it: a new server on the same group (as a supervisor hands it
// over) replays the journaled event, and the blocked reader gets the
// right bytes. In the second case the daemon died before it could even
// journal the event (the batch is still open): the new server fills the
// whole file and answers the unknown event by sweeping fd numbers.
func TestReplayAfterCrash(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(fmt.Sprintf("lost=%v", lost), func(t *testing.T) { testReplay(t, lost) })
	}
}

func testReplay(t *testing.T, lost bool) {
	cache := t.TempDir()
	require.Host(t, require.FileBackedErofs, func() error { return Supported(cache) })
	src := t.TempDir()
	want := make([]byte, 2<<20)
	rand.Read(want)
	os.WriteFile(filepath.Join(src, "f"), want, 0o644)
	blobDir := t.TempDir()
	img, _, res := testimage.Build(t, src, build.Options{BlobDir: blobDir})
	store, _ := blobstore.NewLocal(blobDir)
	reg := ondemand.NewRegistry()
	defer reg.Close()
	im, _ := reg.Register(ondemand.ImageSpec{FSID: "r", Bootstrap: img, Store: store})
	obj, _ := reg.Resolve(im.VolumeKey(), im.Blobs[0].Name)
	defer obj.Release()

	// The first daemon: a group and a watch, but it never answers.
	old, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	cachePath := filepath.Join(cache, "blob")
	if _, err := old.Watch(cachePath, res.Blobs[0].Size, im.Blobs[0].Digest.Sum(), obj); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	unmount, err := testmount.FileBacked(img, []string{cachePath}, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer unmount()
	got := make(chan []byte, 1)
	go func() {
		data, err := os.ReadFile(filepath.Join(mnt, "f"))
		if err != nil {
			t.Error(err)
		}
		got <- data
	}()
	// Read one event as the first daemon would, and "crash" before the
	// answer: keep only what the journal and the supervisor would hold.
	buf := make([]byte, 4096)
	var ev abiEvent
	for {
		n, err := unix.Read(old.fd, buf)
		if err == unix.EAGAIN {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev, err = decodeFirst(buf[:n]); err != nil {
			t.Fatal(err)
		}
		break
	}
	var st unix.Stat_t
	unix.Fstat(int(ev.Fd), &st)
	writer, _ := unix.FcntlInt(uintptr(ev.Fd), unix.F_DUPFD_CLOEXEC, 0) // held by the supervisor
	unix.Close(int(ev.Fd))                                              // the dead daemon's fd table is gone
	journal := map[string]string{strconv.Itoa(int(ev.Fd)): fmt.Sprintf("%d %d %d %d", st.Dev, st.Ino, ev.Offset, ev.Count)}
	if lost {
		journal = map[string]string{batchKey: "open"}
	}
	select {
	case <-got:
		t.Fatal("the reader went on without an answer")
	case <-time.After(100 * time.Millisecond):
	}

	// The new daemon on the same group.
	srv, err := FromFD(old.fd, Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv.AdoptWriters(map[string]int{cachePath: writer})
	w, err := srv.Watch(cachePath, res.Blobs[0].Size, im.Blobs[0].Digest.Sum(), obj)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv.Replay(context.Background(), journal)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	select {
	case data := <-got:
		if !bytes.Equal(data, want) {
			t.Fatal("the reader got wrong bytes")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader is still blocked after the replay")
	}
	cancel()
	<-done
	srv.Release()
}

// TestPresenceMapAfterData: the presence map on disk claims blocks only
// once their data is durable: reading a file marks its blocks in memory
// at once, and on disk at the next flush.
func TestPresenceMapAfterData(t *testing.T) {
	lazyFlushEvery = time.Hour
	defer func() { lazyFlushEvery = 0 }()
	src := t.TempDir()
	data := make([]byte, 300<<10)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, "a"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	other := make([]byte, 300<<10)
	rand.Read(other)
	if err := os.WriteFile(filepath.Join(src, "b"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	m := newLazyMount(t, src, 64<<10, false)
	// Only "a": the blob stays incomplete, so nothing flushes on its own.
	got, err := os.ReadFile(filepath.Join(m.mnt, "a"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read: %v", err)
	}
	w := m.watches[0]
	claimed := func() int {
		b, err := os.ReadFile(w.Path + ".present")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, x := range b {
			n += bits.OnesCount8(x)
		}
		return n
	}
	if w.Complete() {
		t.Fatal("reading one file completed the blob: the test tests nothing")
	}
	if n := claimed(); n != 0 {
		t.Fatalf("the map on disk claims %d blocks before any flush", n)
	}
	if err := w.flushMap(); err != nil {
		t.Fatal(err)
	}
	if n := claimed(); n < (300<<10)/4096 {
		t.Fatalf("after a flush the map on disk claims %d blocks, want at least the file's %d", n, (300<<10)/4096)
	}
}
