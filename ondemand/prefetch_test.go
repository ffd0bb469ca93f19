package ondemand

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/prefetchlist"
)

// memTarget attaches a memObject for prefetch.
type memTarget struct {
	m       *memObject
	present func(off, n int64) bool // nil: nothing present beforehand
}

func (t *memTarget) Write(ctx context.Context, off, n int64, fn func(BlockWriter) error) error {
	return fn(t.m)
}

func (t *memTarget) Present(off, n int64) bool { return t.present != nil && t.present(off, n) }

// recStore records every read that reaches the backend, in order; a read
// at gateOff waits for gate to close, and every read takes delay, plus
// perMiB for each MiB it reads (a slow link).
type recStore struct {
	blobstore.Store
	mu      sync.Mutex
	reads   []span
	gateOff int64
	gate    chan struct{}
	delay   time.Duration
	perMiB  time.Duration

	active, maxActive int
}

type span struct{ off, n int64 }

// concurrency returns the most reads that were in flight at once.
func (s *recStore) concurrency() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxActive
}

func (s *recStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := s.Store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return recBlob{b, s}, nil
}

func (s *recStore) log() []span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reads)
}

type recBlob struct {
	blobstore.Blob
	s *recStore
}

func (b recBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	b.s.mu.Lock()
	b.s.reads = append(b.s.reads, span{off, int64(len(p))})
	b.s.active++
	b.s.maxActive = max(b.s.maxActive, b.s.active)
	b.s.mu.Unlock()
	defer func() {
		b.s.mu.Lock()
		b.s.active--
		b.s.mu.Unlock()
	}()
	if b.s.gate != nil && off == b.s.gateOff {
		select {
		case <-b.s.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if d := b.s.delay + b.s.perMiB*time.Duration(len(p))/(1<<20); d > 0 {
		if err := sleep(ctx, d); err != nil {
			return 0, err
		}
	}
	return b.Blob.ReadAt(ctx, p, off)
}

// prefetchSetup registers an image of 64 KiB chunks read through a
// recording store and attaches a memory object to its blob.
func prefetchSetup(t *testing.T, rs *recStore) (*Registry, *Image, *Object, *memTarget, []byte) {
	t.Helper()
	spec, blobPath := buildImage(t, 64<<10)
	rs.Store = spec.Store
	spec.Store = rs
	reg, im, obj := serveBlob(t, spec)
	tg := &memTarget{m: newMemObject(t, obj.Size())}
	obj.Attach(tg)
	blob, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	return reg, im, obj, tg, blob
}

func chunkBytes(im *Image) int64 {
	var n int64
	for _, c := range im.blobs[0].chunks {
		n += c.length
	}
	return n
}

func TestPrefetchWhole(t *testing.T) {
	rs := &recStore{}
	reg, im, _, tg, blob := prefetchSetup(t, rs)
	res, err := reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true, Quiet: time.Millisecond, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tg.m.data, blob) {
		t.Fatal("prefetched object differs from the blob")
	}
	want := chunkBytes(im)
	if res.Planned != want || res.Done != want || res.Fetched != want || res.Failed != 0 {
		t.Fatalf("result %+v, want %d bytes planned, done and fetched", res, want)
	}
	if d, l := reg.Stats.PrefetchBytesDone.Load(), reg.Stats.PrefetchBytesLeft.Load(); d != want || l != 0 {
		t.Fatalf("stats: done %d left %d, want %d and 0", d, l, want)
	}
	if f := reg.Stats.Fetches.Load(); f != int64(im.Blobs[0].Chunks) {
		t.Fatalf("%d chunk fetches for %d chunks", f, im.Blobs[0].Chunks)
	}
	// Adjacent chunks came in fills of up to a run read into memory, in
	// blob order.
	reads := rs.log()
	for i, r := range reads {
		if r.n > MaxRun || i > 0 && r.off <= reads[i-1].off {
			t.Fatalf("read %d: %+v after %+v", i, r, reads[max(i-1, 0)])
		}
	}
	// Again: everything is written, nothing is fetched.
	res, err = reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true})
	if err != nil || res.Fetched != 0 || res.Done != want || len(rs.log()) != len(reads) {
		t.Fatalf("second prefetch: %+v %v, %d more reads", res, err, len(rs.log())-len(reads))
	}
}

// TestPrefetchSlowLink: on a link too slow for a fill of MaxFetch within
// FillTimeout, prefetch halves its fills after the first that times out
// and completes, instead of failing every fill and giving up.
func TestPrefetchSlowLink(t *testing.T) {
	rs := &recStore{perMiB: 400 * time.Millisecond} // 1 MiB: 400 ms; 512 KiB: 200 ms
	reg, im, _, tg, blob := prefetchSetup(t, rs)
	res, err := reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true, Quiet: time.Millisecond, Parallel: 1, MaxFetch: 1 << 20, FillTimeout: 300 * time.Millisecond})
	if err != nil || res.Done != res.Planned {
		t.Fatalf("prefetch over a slow link: %v %+v", err, res)
	}
	if !bytes.Equal(tg.m.data, blob) {
		t.Fatal("prefetched object differs from the blob")
	}
	reads := rs.log()
	if len(reads) == 0 || reads[0].n <= 512<<10 {
		t.Fatalf("reads %v: want a first fill over 512 KiB (it times out)", reads)
	}
	for _, r := range reads[1:] {
		if r.n > 512<<10 {
			t.Fatalf("reads %v: a fill over 512 KiB after one timed out", reads)
		}
	}
}

// TestPrefetchSlowLinkPaced: a fill that ran out of time is fetched
// again in halves, and what is fetched again is paced like any fill:
// --prefetch-rate bounds all a prefetch fetches (found by review).
func TestPrefetchSlowLinkPaced(t *testing.T) {
	const rate = 2 << 20
	rs := &recStore{perMiB: 100 * time.Millisecond} // 2 MiB: 200 ms; 1 MiB: 100 ms
	reg, im, _, tg, blob := prefetchSetup(t, rs)
	start := time.Now()
	res, err := reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true, Quiet: time.Millisecond, Parallel: 1, MaxFetch: 2 << 20, FillTimeout: 150 * time.Millisecond, Limiter: NewLimiter(rate)})
	elapsed := time.Since(start)
	if err != nil || res.Done != res.Planned || !bytes.Equal(tg.m.data, blob) {
		t.Fatalf("prefetch over a slow link: %v %+v", err, res)
	}
	reads := rs.log()
	var fetched int64
	for _, r := range reads {
		fetched += r.n
	}
	if reads[0].n <= 1<<20 || fetched < res.Planned+reads[0].n {
		t.Fatalf("reads %v: want a first fill over 1 MiB that times out and is fetched again", reads)
	}
	// Every fetch but the last waits for the bytes before it.
	if min := time.Duration(float64(fetched-reads[len(reads)-1].n) / rate * float64(time.Second)); elapsed < min {
		t.Fatalf("%d bytes fetched in %v: faster than the rate allows (%v)", fetched, elapsed, min)
	}
}

// TestPrefetchParallel: up to Parallel fills run at once (hiding a
// slow store's latency), never more, and the result is complete.
func TestPrefetchParallel(t *testing.T) {
	rs := &recStore{delay: 20 * time.Millisecond}
	reg, im, _, tg, blob := prefetchSetup(t, rs)
	res, err := reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true, MaxFetch: 64 << 10, Quiet: time.Millisecond, Parallel: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c := rs.concurrency(); c < 2 || c > 3 {
		t.Fatalf("%d store reads at once with Parallel 3", c)
	}
	if !bytes.Equal(tg.m.data, blob) || res.Done != res.Planned || res.Fetched != res.Planned {
		t.Fatalf("parallel prefetch: %+v, content equal %v", res, bytes.Equal(tg.m.data, blob))
	}
}

// TestPrefetchListOrder: the listed files' chunks come first, in list
// order, then the rest of the blob; missing paths are reported.
func TestPrefetchListOrder(t *testing.T) {
	rs := &recStore{}
	reg, im, _, tg, blob := prefetchSetup(t, rs)
	f, err := os.Open(im.Spec.Bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	var wantOffs []int64 // first chunk offset of each listed file, in order
	for _, name := range []string{"ff", "fe"} {
		fcs, err := img.Chunks(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, fc := range fcs {
			wantOffs = append(wantOffs, int64(fc.BlkAddr)*BlockSize)
		}
	}
	// fe is 300000 bytes, after ff's 3 MiB in the list but before it in
	// the blob: order shows the list wins.
	res, err := reg.Prefetch(context.Background(), im, PrefetchOptions{
		Files: prefetchlist.Files("/ff", "nope", "fe"), Whole: true, MaxFetch: 64 << 10, Quiet: time.Millisecond, Parallel: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Missing, []string{"nope"}) {
		t.Fatalf("missing: %q", res.Missing)
	}
	reads := rs.log()
	if len(reads) < len(wantOffs) {
		t.Fatalf("%d reads", len(reads))
	}
	for i, off := range wantOffs {
		if reads[i].off != off {
			t.Fatalf("read %d at %d, want %d (listed files first, in order); reads %v", i, reads[i].off, off, reads[:len(wantOffs)])
		}
	}
	if wantOffs[len(wantOffs)-1] > wantOffs[0] {
		t.Fatal("test setup: fe should precede ff in the blob")
	}
	if !bytes.Equal(tg.m.data, blob) {
		t.Fatal("prefetched object differs from the blob")
	}

	// Only the list: exactly those chunks.
	reg2, im2, _, tg2, _ := prefetchSetup(t, &recStore{})
	res, err = reg2.Prefetch(context.Background(), im2, PrefetchOptions{Files: prefetchlist.Files("fe")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Planned != 300000 || res.Done != 300000 {
		t.Fatalf("list of one 300000-byte file: %+v", res)
	}
	for b, ok := range tg2.m.seen {
		off := int64(b) * BlockSize
		if inList := off >= wantOffs[len(wantOffs)-5] && off < wantOffs[len(wantOffs)-5]+alignUp(300000); ok != inList {
			t.Fatalf("block %d written %v", b, ok)
		}
	}
}

// TestPrefetchSkipsWritten: chunks a kernel read filled, or that the
// target reports present, are not fetched again.
func TestPrefetchSkipsWritten(t *testing.T) {
	rs := &recStore{}
	reg, im, obj, tg, blob := prefetchSetup(t, rs)
	ctx := context.Background()
	if err := obj.Fill(ctx, 0, 1<<20, tg.m); err != nil {
		t.Fatal(err)
	}
	before := len(rs.log())
	// The target also has [1 MiB, 2 MiB) from an earlier run.
	copy(tg.m.data[1<<20:2<<20], blob[1<<20:2<<20])
	tg.present = func(off, n int64) bool { return off >= 1<<20 && off+n <= 2<<20 }
	res, err := reg.Prefetch(ctx, im, PrefetchOptions{Whole: true, Quiet: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Chunks ending by 2 MiB were all there: the read of [0, 1 MiB)
	// filled the chunk across 1 MiB.
	var there int64
	for _, c := range im.blobs[0].chunks {
		if e := c.off + alignUp(c.length); e <= 2<<20 {
			there = e
		}
	}
	for _, r := range rs.log()[before:] {
		if r.off < there {
			t.Fatalf("prefetch read %+v, which was there (up to %d)", r, there)
		}
	}
	want := chunkBytes(im)
	if res.Done != want || res.Fetched > want-(2<<20)+64<<10 || res.Fetched < want-(2<<20)-64<<10 {
		t.Fatalf("result %+v of %d", res, want)
	}
	if !bytes.Equal(tg.m.data, blob) {
		t.Fatal("object differs from the blob")
	}
}

// TestPrefetchRate: the achieved rate stays under the limit (plus the
// first fill, which starts at once).
func TestPrefetchRate(t *testing.T) {
	rs := &recStore{}
	reg, im, _, _, _ := prefetchSetup(t, rs)
	const rate = 1 << 20
	const maxFetch = 128 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := reg.Prefetch(ctx, im, PrefetchOptions{Whole: true, Limiter: NewLimiter(rate), MaxFetch: maxFetch, Quiet: time.Millisecond})
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("prefetch of %d bytes at %d B/s ended early: %v %+v", chunkBytes(im), rate, err, res)
	}
	limit := int64(float64(rate)*elapsed.Seconds()) + maxFetch
	if res.Fetched > limit+limit/10 || res.Fetched < maxFetch {
		t.Fatalf("fetched %d bytes in %v at %d B/s: want at most %d", res.Fetched, elapsed, rate, limit)
	}
	t.Logf("fetched %d bytes in %v (limit %d B/s + one %d-byte fill)", res.Fetched, elapsed, rate, maxFetch)
	if l := reg.Stats.PrefetchBytesLeft.Load(); l != 0 {
		t.Fatalf("bytes left after the prefetch ended: %d", l)
	}
}

// TestPrefetchYields: while a kernel read is in flight, prefetch does
// not fetch; it carries on once the read is done.
func TestPrefetchYields(t *testing.T) {
	rs := &recStore{}
	reg, im, obj, tg, blob := prefetchSetup(t, rs)
	rs.gateOff, rs.gate = im.blobs[0].chunksIn(2<<20, 1)[0].off, make(chan struct{})
	ctx := context.Background()
	read := make(chan error, 1)
	go func() { read <- obj.Fill(ctx, 2<<20, 1, tg.m) }()
	for i := 0; len(rs.log()) == 0; i++ {
		if i > 1000 {
			t.Fatal("the read never reached the store")
		}
		time.Sleep(time.Millisecond)
	}
	pf := make(chan error, 1)
	var res PrefetchResult
	go func() {
		var err error
		res, err = reg.Prefetch(ctx, im, PrefetchOptions{Whole: true, Quiet: time.Millisecond})
		pf <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if n := len(rs.log()); n != 1 {
		t.Fatalf("%d store reads while a kernel read was in flight: prefetch did not yield", n)
	}
	close(rs.gate)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pf:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("prefetch did not finish")
	}
	if !bytes.Equal(tg.m.data, blob) {
		t.Fatal("object differs from the blob")
	}
	if want := chunkBytes(im); res.Done != want {
		t.Fatalf("done %d of %d", res.Done, want)
	}
}

// TestPrefetchStops: cancelling stops a prefetch promptly; so does
// releasing the object (no target) and unregistering the image.
func TestPrefetchStops(t *testing.T) {
	rs := &recStore{delay: 50 * time.Millisecond}
	reg, im, obj, _, _ := prefetchSetup(t, rs)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(120*time.Millisecond, cancel)
	start := time.Now()
	res, err := reg.Prefetch(ctx, im, PrefetchOptions{Whole: true, MaxFetch: 64 << 10, Quiet: time.Millisecond})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("cancelled prefetch: %v after %v", err, time.Since(start))
	}
	if res.Done == 0 || res.Done >= res.Planned {
		t.Fatalf("cancelled prefetch: %+v", res)
	}
	if l := reg.Stats.PrefetchBytesLeft.Load(); l != 0 {
		t.Fatalf("bytes left after the prefetch ended: %d", l)
	}

	// Released object: no target to fill.
	obj.Release()
	_, err = reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true, TargetWait: 50 * time.Millisecond})
	if !errors.Is(err, ErrNoTarget) {
		t.Fatalf("prefetch without a target: %v", err)
	}
	obj.Image.open.Add(1) // the test's cleanup releases it again

	// Unregistered image.
	reg2, im2, obj2, _, _ := prefetchSetup(t, &recStore{})
	obj2.Release()
	if err := reg2.Unregister(im2.Spec.FSID, ""); err != nil {
		t.Fatal(err)
	}
	obj2.Image.open.Add(1)
	_, err = reg2.Prefetch(context.Background(), im2, PrefetchOptions{Whole: true})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("prefetch of an unregistered image: %v", err)
	}
}

// TestLimiterGivesBackCancelled: a reservation whose wait is cancelled
// does not delay the limiter's next users.
func TestLimiterGivesBackCancelled(t *testing.T) {
	l := NewLimiter(1 << 20)
	ctx := context.Background()
	if err := l.Wait(ctx, 256<<10); err != nil { // at once
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Wait(cancelled, 100<<20); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	// The next wait starts after the first 256 KiB (0.25 s), not 100 s.
	bounded, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	start := time.Now()
	if err := l.Wait(bounded, 1); err != nil {
		t.Fatalf("wait after a cancelled reservation: %v after %v", err, time.Since(start))
	}
	if NewLimiter(0) != nil || (*Limiter)(nil).Wait(ctx, 1<<40) != nil {
		t.Fatal("a zero rate must not limit")
	}
}

// loopFS is a tree whose directory "a/again" is "a" itself, as a corrupt
// image can have it: a walk that does not track directories never ends.
type loopFS struct{}

type loopEntry struct {
	name string
	dir  bool
	nid  uint64
}

func (e loopEntry) Name() string               { return e.name }
func (e loopEntry) IsDir() bool                { return e.dir }
func (e loopEntry) Type() fs.FileMode          { return e.Mode().Type() }
func (e loopEntry) Info() (fs.FileInfo, error) { return e, nil }
func (e loopEntry) Size() int64                { return 0 }
func (e loopEntry) ModTime() time.Time         { return time.Time{} }
func (e loopEntry) Sys() any                   { return &erofs.Stat{Nid: e.nid} }
func (e loopEntry) Mode() fs.FileMode {
	if e.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}

// entry resolves a path: "." is nid 1, every "a" (however deep, via
// "again") is nid 2, "f" in it is a file.
func (loopFS) entry(name string) (loopEntry, bool) {
	if name == "." {
		return loopEntry{".", true, 1}, true
	}
	parts := strings.Split(name, "/")
	if parts[0] != "a" {
		return loopEntry{}, false
	}
	for i, p := range parts[1:] {
		switch {
		case p == "again":
		case p == "f" && i == len(parts)-2:
			return loopEntry{"f", false, 3}, true
		default:
			return loopEntry{}, false
		}
	}
	return loopEntry{parts[len(parts)-1], true, 2}, true
}

func (l loopFS) Open(name string) (fs.File, error) {
	e, ok := l.entry(name)
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return loopFile{e}, nil
}

func (l loopFS) ReadDir(name string) ([]fs.DirEntry, error) {
	e, ok := l.entry(name)
	if !ok || !e.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	if e.nid == 1 {
		return []fs.DirEntry{loopEntry{"a", true, 2}}, nil
	}
	return []fs.DirEntry{loopEntry{"again", true, 2}, loopEntry{"f", false, 3}}, nil
}

type loopFile struct{ e loopEntry }

func (f loopFile) Stat() (fs.FileInfo, error) { return f.e, nil }
func (f loopFile) Read([]byte) (int, error)   { return 0, io.EOF }
func (f loopFile) Close() error               { return nil }

// TestPrefetchListDirectoryLoop: a prefetch list naming a directory of
// an image with a directory loop ends, each directory walked once.
func TestPrefetchListDirectoryLoop(t *testing.T) {
	done := make(chan struct{})
	var files []string
	var err error
	go func() {
		files, err = filesUnder(loopFS{}, "/")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("walking a directory loop did not end")
	}
	if err != nil || len(files) != 1 || files[0] != "a/f" {
		t.Fatalf("files %q, %v; want a/f once", files, err)
	}
}

// recStreamBlob is a recBlob that also streams ranges, each recorded and
// delayed like a read.
type recStreamBlob struct{ recBlob }

func (b recStreamBlob) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	p := make([]byte, n)
	if _, err := b.ReadAt(ctx, p, off); err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(p)), nil
}

// streamingRecStore is a recStore whose blobs stream ranges.
type streamingRecStore struct{ *recStore }

func (s streamingRecStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := s.recStore.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return recStreamBlob{b.(recBlob)}, nil
}

// TestPrefetchFollowsPace: without MaxFetch, fills grow on a link whose
// round trips cost more than its bytes (fewer, larger requests, up to a
// streamed run) and shrink on one whose bytes are slow, towards what it
// delivers in FillTarget; with MaxFetch they keep its size. The cases
// that grow take a FillTarget of 2 s, so that this machine's own work
// (slow under -race) does not set the pace instead of the link's round
// trips.
func TestPrefetchFollowsPace(t *testing.T) {
	const m = 1 << 20
	for _, tc := range []struct {
		name     string
		size     int
		chunk    int64
		stream   bool
		delay    time.Duration // per request
		perMiB   time.Duration
		parallel int
		maxFetch int64
		target   time.Duration
		check    func(t *testing.T, reads []span)
	}{
		{"round trips, streamed", 96 * m, m, true, 20 * time.Millisecond, 0, 4, 0, 2 * time.Second, func(t *testing.T, reads []span) {
			if biggest := slices.MaxFunc(reads, func(a, b span) int { return int(a.n - b.n) }).n; len(reads) >= 96/4 || biggest <= MaxRun || biggest > MaxStreamRun {
				t.Errorf("%d requests, the largest %d bytes; want fewer than %d, over %d and up to %d", len(reads), biggest, 96/4, MaxRun, MaxStreamRun)
			}
		}},
		{"round trips, read into memory", 48 * m, m, false, 20 * time.Millisecond, 0, 4, 0, 2 * time.Second, func(t *testing.T, reads []span) {
			if biggest := slices.MaxFunc(reads, func(a, b span) int { return int(a.n - b.n) }).n; len(reads) >= 48/4 || biggest != MaxRun {
				t.Errorf("%d requests, the largest %d bytes; want fewer than %d and up to %d", len(reads), biggest, 48/4, MaxRun)
			}
		}},
		{"slow bytes", 12 * m, 256 << 10, true, 0, 100 * time.Millisecond, 1, 0, 0, func(t *testing.T, reads []span) {
			// 10 MiB/s: 2.5 MiB in DefaultFillTarget, less if this
			// machine is slow, not less than minAdaptiveFetch.
			if first, last := reads[0].n, reads[len(reads)-1].n; first != DefaultMaxFetch || last > 2*m+m/2 || last < m {
				t.Errorf("fills of %d bytes first, %d last; want %d, then about 2.5 MiB", first, last, DefaultMaxFetch)
			}
		}},
		{"fixed size", 48 * m, m, true, 20 * time.Millisecond, 0, 4, 2 * m, 2 * time.Second, func(t *testing.T, reads []span) {
			for _, r := range reads {
				if r.n > 2*m {
					t.Fatalf("a fill of %d bytes, want at most MaxFetch", r.n)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, blob := randomFileImage(t, tc.size, tc.chunk, 3)
			rs := &recStore{Store: spec.Store, delay: tc.delay, perMiB: tc.perMiB}
			spec.Store = rs
			if tc.stream {
				spec.Store = streamingRecStore{rs}
			}
			reg, im, obj := serveBlob(t, spec)
			tg := &memTarget{m: newMemObject(t, obj.Size())}
			obj.Attach(tg)
			res, err := reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true, Quiet: time.Millisecond, Parallel: tc.parallel, MaxFetch: tc.maxFetch, FillTarget: tc.target})
			if err != nil || res.Failed != 0 {
				t.Fatalf("prefetch: %+v, %v", res, err)
			}
			if !bytes.Equal(tg.m.data[:len(blob)], blob) {
				t.Fatal("prefetched object differs from the blob")
			}
			reads := rs.log()
			t.Logf("%d requests: %v", len(reads), reads)
			tc.check(t, reads)
		})
	}
}

// TestPrefetchAdapt: how one fill resizes the next ones: to what the
// store delivered in the fill target, by at most double or half, within
// minAdaptiveFetch and the cap; a fill that wrote less than half of a
// full one (at most half of minAdaptiveFetch asked) counts for nothing,
// so that sizes halved below it by timeouts can grow again.
func TestPrefetchAdapt(t *testing.T) {
	const m = 1 << 20
	for _, tc := range []struct {
		name          string
		cur, fetchCap int64
		n             int64
		d             time.Duration
		want          int64
	}{
		{"fast: doubles", 4 * m, 32 * m, 4 * m, 10 * time.Millisecond, 8 * m},
		{"fast: capped", 16 * m, 16 * m, 16 * m, 10 * time.Millisecond, 16 * m},
		{"on pace: kept", 4 * m, 32 * m, 4 * m, 250 * time.Millisecond, 4 * m},
		{"a bit slow: follows", 4 * m, 32 * m, 4 * m, 400 * time.Millisecond, 5 * m / 2},
		{"slow: halves", 8 * m, 32 * m, 8 * m, 10 * time.Second, 4 * m},
		{"slow: not under the floor", 1 * m, 32 * m, 1 * m, 10 * time.Second, m},
		{"wrote little: no change", 8 * m, 32 * m, 64 << 10, time.Second, 8 * m},
		{"halved small by timeouts: grows", 256 << 10, 32 * m, 256 << 10, time.Millisecond, 512 << 10},
		{"nothing written", 4 * m, 32 * m, 0, time.Second, 4 * m},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &prefetch{adaptive: true, fetchCap: tc.fetchCap, fillTarget: DefaultFillTarget}
			p.maxFetch.Store(tc.cur)
			p.adapt(tc.n, tc.d)
			if got := p.maxFetch.Load(); got != tc.want {
				t.Errorf("after %d bytes in %v from %d: %d, want %d", tc.n, tc.d, tc.cur, got, tc.want)
			}
		})
	}
}

// TestPrefetchPacedFillsShort: under --prefetch-rate, fills that follow
// the store's pace stay within what the rate allows in the fill target:
// a fill is a burst at the link's speed that kernel reads wait behind.
func TestPrefetchPacedFillsShort(t *testing.T) {
	const m = 1 << 20
	spec, blob := randomFileImage(t, 12*m, 256<<10, 4)
	rs := &recStore{Store: spec.Store, delay: 10 * time.Millisecond}
	spec.Store = streamingRecStore{rs}
	reg, im, obj := serveBlob(t, spec)
	tg := &memTarget{m: newMemObject(t, obj.Size())}
	obj.Attach(tg)
	const rate = 8 * m // 2 MiB in DefaultFillTarget
	res, err := reg.Prefetch(context.Background(), im, PrefetchOptions{Whole: true, Quiet: time.Millisecond, Limiter: NewLimiter(rate)})
	if err != nil || res.Failed != 0 || !bytes.Equal(tg.m.data[:len(blob)], blob) {
		t.Fatalf("prefetch: %+v, %v", res, err)
	}
	for _, r := range rs.log() {
		if r.n > 2*m {
			t.Fatalf("a fill of %d bytes under a rate of %d/s, want at most %d", r.n, rate, 2*m)
		}
	}
}
