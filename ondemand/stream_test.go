package ondemand

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// uniformImage builds an image of one 2 MiB random file in 64 KiB
// chunks: 32 chunks, back to back from the start of the blob.
func uniformImage(t *testing.T) (ImageSpec, []byte) {
	t.Helper()
	return randomFileImage(t, 2<<20, 64<<10, 5)
}

// serveReadahead registers spec in a registry of its own with a readahead
// window of window bytes (and Registry.ReadaheadAcrossFiles) and
// resolves its first blob.
func serveReadahead(t *testing.T, spec ImageSpec, window int64, acrossFiles bool) *Object {
	t.Helper()
	reg := NewRegistry()
	t.Cleanup(func() { reg.Close() })
	reg.ReadaheadWindow, reg.ReadaheadAcrossFiles = window, acrossFiles
	im, err := reg.Register(spec)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := reg.Resolve(im.VolumeKey(), im.Blobs[0].Digest.Hex())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(obj.Release)
	return obj
}

// randomFileImage builds a blob-mode image of one file, "f", of size
// random bytes (from seed) in chunks of chunkSize, served from a local
// store as "img1"; it returns its spec and its blob's bytes.
func randomFileImage(t testing.TB, size int, chunkSize int64, seed int64) (ImageSpec, []byte) {
	t.Helper()
	src := t.TempDir()
	data := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(data)
	if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	blobDir := t.TempDir()
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: chunkSize})
	store, err := blobstore.NewLocal(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := os.ReadFile(blobs[0])
	if err != nil {
		t.Fatal(err)
	}
	return ImageSpec{FSID: "img1", Bootstrap: img, Store: store}, blob
}

// streamStore serves blobs that stream ranges; the first stream breaks
// after breakAfter bytes.
type streamStore struct {
	blobstore.Store
	breakAfter     int64
	zeros          bool // streams deliver zeros (a bad mirror); ReadAt stays right
	streams, reads atomic.Int64
	streamed       atomic.Int64 // bytes asked of streams
}

func (s *streamStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := s.Store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return &streamBlob{Blob: b, s: s}, nil
}

type streamBlob struct {
	blobstore.Blob
	s *streamStore
}

func (b *streamBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	b.s.reads.Add(1)
	return b.Blob.ReadAt(ctx, p, off)
}

func (b *streamBlob) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.s.streamed.Add(n)
	if b.s.zeros {
		b.s.streams.Add(1)
		return io.NopCloser(io.LimitReader(zeroReader{}, n)), nil
	}
	limit := n
	if b.s.streams.Add(1) == 1 && b.s.breakAfter > 0 {
		limit = b.s.breakAfter
	}
	r := io.NewSectionReader(readerAt{ctx, b.Blob}, off, limit)
	return io.NopCloser(io.MultiReader(r, errReader{io.ErrUnexpectedEOF})), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestStreamedRun: a run of chunks is read as one stream and each chunk
// is verified and written as it arrives; when the stream breaks, the
// chunks it did not deliver are fetched one by one (a store whose runs
// fail must not be asked for a run per chunk), and the result is the
// blob's bytes.
func TestStreamedRun(t *testing.T) {
	spec, blob := uniformImage(t)
	store := &streamStore{Store: spec.Store, breakAfter: 300 << 10}
	spec.Store = store
	_, _, obj := serveBlob(t, spec)
	m := newMemObject(t, obj.Size())
	if err := obj.Fill(context.Background(), 0, 1<<20, m); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.data[:1<<20], blob[:1<<20]) {
		t.Fatal("content differs")
	}
	// 300 KiB delivered 4 whole chunks; the other 12 came one by one.
	if store.streams.Load() != 1 || store.reads.Load() != 12 {
		t.Errorf("%d streams and %d single reads; want 1 and 12", store.streams.Load(), store.reads.Load())
	}
}

// TestStreamedRunCorruptChunk: a corrupt chunk in a stream is not
// written; the chunks after it still are, and the corrupt one fails on
// its own (the store keeps serving it corrupt).
func TestStreamedRunCorruptChunk(t *testing.T) {
	spec, blob := uniformImage(t)
	dir := t.TempDir()
	bad := bytes.Clone(blob)
	bad[3*64<<10+7] ^= 0xff // chunk 3
	digest := blobstore.DigestOf(sha256Sum(blob))
	if err := os.WriteFile(filepath.Join(dir, digest.Hex()), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	local, err := blobstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	store := &streamStore{Store: local}
	spec.Store = store
	reg, _, obj := serveBlob(t, spec)
	m := newMemObject(t, obj.Size())
	err = obj.Fill(context.Background(), 0, 8*64<<10, m)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("fill over a corrupt chunk: %v, want ErrDigestMismatch", err)
	}
	for c := 0; c < 8; c++ {
		written := m.seen[c*16]
		if written != (c != 3) {
			t.Errorf("chunk %d written: %v", c, written)
		}
		if written && !bytes.Equal(m.data[c*64<<10:(c+1)*64<<10], blob[c*64<<10:(c+1)*64<<10]) {
			t.Errorf("chunk %d differs", c)
		}
	}
	if reg.Stats.DigestFailures.Load() < 2 {
		t.Errorf("%d digest failures, want the streamed one and the retry", reg.Stats.DigestFailures.Load())
	}
}

// TestReadaheadWindow: with a window, readahead of a sequential reader
// asks for the first run of missing chunks within the window after the
// range, the window twice what the stream has read so far, up to its
// size; without one, only for the next chunk.
func TestReadaheadWindow(t *testing.T) {
	spec, _ := uniformImage(t)
	spec.Store = &streamStore{Store: spec.Store} // the window is for stores that stream
	const k = 64 << 10
	for _, tc := range []struct {
		window  int64
		stream  int64      // the reader read [0, stream) in two accesses (default k)
		written [][2]int64 // fills before asking
		want    [2]int64
	}{
		{0, 0, [][2]int64{{0, k}}, [2]int64{k, k}},
		{0, 0, [][2]int64{{0, 3 * k}}, [2]int64{}},                          // only the next chunk counts
		{0, 0, [][2]int64{{0, k}, {k, k}}, [2]int64{}},                      // the next chunk is there: nothing
		{4 * k, 0, [][2]int64{{0, k}}, [2]int64{k, 2 * k}},                  // a stream of k: a window of 2k
		{4 * k, 0, [][2]int64{{0, k}, {k, 2 * k}}, [2]int64{}},              // the window is full
		{4 * k, 0, [][2]int64{{0, k}, {2 * k, k}}, [2]int64{k, k}},          // a gap, then a present chunk
		{4 * k, 4 * k, [][2]int64{{0, 4 * k}}, [2]int64{4 * k, 4 * k}},      // a longer stream: the whole window
		{64 * k, 16 * k, [][2]int64{{0, 16 * k}}, [2]int64{16 * k, 16 * k}}, // to the end of the blob
	} {
		obj := serveReadahead(t, spec, tc.window, false)
		m := newMemObject(t, obj.Size())
		for _, f := range tc.written {
			if err := obj.Fill(context.Background(), f[0], f[1], m); err != nil {
				t.Fatal(err)
			}
		}
		// Two accesses in a row, the second where the first ended: a
		// sequential reader, which gets the window.
		stream := max(tc.stream, k)
		obj.Readahead(0, stream-k/2)
		off, n := obj.Readahead(stream-k/2, k/2)
		if [2]int64{off, n} != tc.want {
			t.Errorf("window %d after fills %v: readahead %d+%d, want %d+%d", tc.window, tc.written, off, n, tc.want[0], tc.want[1])
		}
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// TestReadaheadRandomNoWindow: accesses that jump around (small files
// read here and there, random reads) get no readahead at all: one round
// trip and their own chunk each.
func TestReadaheadRandomNoWindow(t *testing.T) {
	spec, _ := uniformImage(t)
	spec.Store = &streamStore{Store: spec.Store}
	const k = 64 << 10
	obj := serveReadahead(t, spec, 16*k, false)
	// A fill opens the blob (and shows it streams).
	if err := obj.Fill(context.Background(), 31*k, k, newMemObject(t, obj.Size())); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ off, want int64 }{
		{0, 0},             // the first access: no stream yet
		{24 * k, 0},        // a jump: not sequential
		{5 * k, 0},         // backwards
		{5*k + k/2, 2 * k}, // continues the last: the window, twice the stream
	} {
		if _, n := obj.Readahead(tc.off, k/2); n != tc.want {
			t.Errorf("access at %d: readahead of %d bytes, want %d", tc.off, n, tc.want)
		}
	}
}

// panicOnce panics on its first write, then writes like memObject.
type panicOnce struct {
	*memObject
	panicked atomic.Bool
}

func (p *panicOnce) WriteBlocks(b []byte, off int64) error {
	if p.panicked.CompareAndSwap(false, true) {
		panic("writer fault")
	}
	return p.memObject.WriteBlocks(b, off)
}

// TestRunPanicLeavesNoClaims: a writer that panics in the middle of a
// run (a coalesced read, streamed or not) leaves no chunk claimed
// forever: the fill fails, and the next fill of the range completes.
func TestRunPanicLeavesNoClaims(t *testing.T) {
	for _, streamed := range []bool{false, true} {
		spec, blob := uniformImage(t)
		if streamed {
			spec.Store = &streamStore{Store: spec.Store}
		}
		_, _, obj := serveBlob(t, spec)
		w := &panicOnce{memObject: newMemObject(t, obj.Size())}
		func() {
			defer func() { recover() }() // as a front end's handler does
			obj.Fill(context.Background(), 0, 8*64<<10, w)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := obj.Fill(ctx, 0, 8*64<<10, w)
		cancel()
		if err != nil {
			t.Fatalf("streamed %v: the fill after a panic: %v", streamed, err)
		}
		if !bytes.Equal(w.data[:8*64<<10], blob[:8*64<<10]) {
			t.Fatalf("streamed %v: content differs", streamed)
		}
	}
}

// TestBufferClasses: a buffer comes from the smallest class that fits,
// aligned, and goes back to it.
func TestBufferClasses(t *testing.T) {
	p := newBufferPool(1 << 20)
	for _, tc := range []struct{ n, want int }{
		{4096, 1 << 20}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {3 << 20, 4 << 20}, {MaxRun, MaxRun}, {MaxRun + 1, MaxRun + 4096},
	} {
		b := p.getSize(tc.n)
		if len(b) < tc.n || cap(b) != tc.want || uintptr(unsafe.Pointer(&b[0]))%BlockSize != 0 {
			t.Errorf("getSize(%d): len %d cap %d aligned %v; want cap %d", tc.n, len(b), cap(b), uintptr(unsafe.Pointer(&b[0]))%BlockSize == 0, tc.want)
		}
		p.put(b)
	}
}

// TestReadaheadStaysInFile: files laid out side by side in the blob, read
// one after the other, look like one sequential reader; readahead still
// never goes past the end of the file an access read, while a large file
// read in order gets its window.
func TestReadaheadStaysInFile(t *testing.T) {
	const k = 64 << 10
	src := t.TempDir()
	sizes := map[string]int{"a": 3 * k, "b": 2*k + 100, "c": k, "d": 40 * k}
	rng := rand.New(rand.NewSource(9))
	for name, size := range sizes {
		data := make([]byte, size)
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	blobDir := t.TempDir()
	img, _, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: k})
	store, err := blobstore.NewLocal(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	// serve resolves the image's blob in a registry of its own.
	serve := func(acrossFiles bool) *Object {
		return serveReadahead(t, ImageSpec{FSID: "img1", Bootstrap: img, Store: &streamStore{Store: store}}, 16*k, acrossFiles)
	}
	obj := serve(false)
	if err := obj.Fill(context.Background(), 0, k, newMemObject(t, obj.Size())); err != nil {
		t.Fatal(err)
	}
	// Files are laid out in name order, each chunk taking whole blocks:
	// a [0, 3k), b [3k, 5k+4096) (its last chunk 100 bytes), c [5k+4096,
	// 6k+4096), d from 6k+4096, 40 chunks.
	const b, c, d = 3 * k, 5*k + 4096, 6*k + 4096
	for _, tc := range []struct {
		off, n int64
		want   [2]int64
	}{
		{0, k / 2, [2]int64{}},                         // a's first read: no stream yet
		{k / 2, k / 2, [2]int64{k, 2 * k}},             // sequential in a: the rest of a, not b
		{3*k - 4096, 4096, [2]int64{}},                 // a's last block: nothing of b
		{b, 4096, [2]int64{}},                          // b after a: not one stream
		{b + 4096, k - 4096, [2]int64{b + k, k + 100}}, // sequential in b: b's own rest only
		{c - 4096, 4096, [2]int64{}},                   // b's end
		{c, 4096, [2]int64{}},                          // c, one chunk: nothing of d
		{d, k, [2]int64{}},                             // d's start: no stream yet
		{d + k, k, [2]int64{d + 2*k, 4 * k}},           // d read in order: the window, twice the stream
		{d + 37*k, k, [2]int64{}},                      // a jump in d
		{d + 38*k, k, [2]int64{d + 39*k, k}},           // near d's end, streaming: up to its end, no further
	} {
		off, n := obj.Readahead(tc.off, tc.n)
		if [2]int64{off, n} != tc.want {
			t.Errorf("access %d+%d: readahead %d+%d, want %d+%d", tc.off, tc.n, off, n, tc.want[0], tc.want[1])
		}
	}

	// With ReadaheadAcrossFiles, the old way: a's end, then b's next
	// chunk, are one stream, and readahead runs on into b and c.
	obj2 := serve(true)
	obj2.Readahead(0, 3*k)
	if off, n := obj2.Readahead(3*k, 4096); off != 4*k || off+n <= c {
		t.Errorf("across files: readahead %d+%d, want from %d past c at %d", off, n, 4*k, c)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestBadStreamsNotRepeated: a store whose streams deliver wrong bytes
// (every chunk fails its digest) gets one stream per fill, the chunks
// then come one by one: not a stream of the rest after every chunk,
// which was the square of the fill in bytes.
func TestBadStreamsNotRepeated(t *testing.T) {
	spec, blob := uniformImage(t)
	store := &streamStore{Store: spec.Store, zeros: true}
	spec.Store = store
	_, _, obj := serveBlob(t, spec)
	m := newMemObject(t, obj.Size())
	if err := obj.Fill(context.Background(), 0, 2<<20, m); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.data[:2<<20], blob[:2<<20]) {
		t.Fatal("content differs")
	}
	if n := store.streamed.Load(); n > 2<<20 {
		t.Errorf("a 2 MiB fill asked streams for %d bytes (%d streams)", n, store.streams.Load())
	}
}

// TestSingleChunkStreamed: a fill of one chunk from a store that streams
// reads it with one stream, hashed as it arrives; when streams deliver
// wrong bytes the chunk is read again with ReadAt and comes out right,
// and the next single chunk is not streamed at all.
func TestSingleChunkStreamed(t *testing.T) {
	for _, zeros := range []bool{false, true} {
		spec, blob := uniformImage(t)
		store := &streamStore{Store: spec.Store, zeros: zeros}
		spec.Store = store
		_, _, obj := serveBlob(t, spec)
		m := newMemObject(t, obj.Size())
		const chunk = 64 << 10
		if err := obj.Fill(context.Background(), 5*chunk, BlockSize, m); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.data[5*chunk:6*chunk], blob[5*chunk:6*chunk]) {
			t.Fatalf("zeros=%v: content differs", zeros)
		}
		switch {
		case !zeros && (store.streams.Load() != 1 || store.reads.Load() != 0):
			t.Errorf("%d streams and %d reads for one chunk; want 1 and 0", store.streams.Load(), store.reads.Load())
		case zeros && (store.streams.Load() != 1 || store.reads.Load() == 0):
			t.Errorf("bad streams: %d streams and %d reads for one chunk; want 1 and the reads that made it right", store.streams.Load(), store.reads.Load())
		}
		if err := obj.Fill(context.Background(), 9*chunk, BlockSize, m); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.data[9*chunk:10*chunk], blob[9*chunk:10*chunk]) {
			t.Fatalf("zeros=%v: second chunk differs", zeros)
		}
		if want := int64(map[bool]int{false: 2, true: 1}[zeros]); store.streams.Load() != want {
			t.Errorf("zeros=%v: %d streams after two single chunks, want %d", zeros, store.streams.Load(), want)
		}
	}
}

// TestReadaheadBoundsInFlight follows a sequential reader through a blob
// in 4 MiB accesses (a mount's readahead), each run handed out (by
// Readahead, then ReadaheadMore while it hands out more, as the front
// ends' pool does) taken as in flight until the reader has passed its
// chunks (streams deliver in order): what is on its way from the reader
// on never passes the window, the run the reader waits in included; and
// the window fills from the stream's start, not a run per access.
func TestReadaheadBoundsInFlight(t *testing.T) {
	const size = 64 << 20
	spec, _ := randomFileImage(t, size, 1<<20, 7)
	const window = 32 << 20
	obj := serveReadahead(t, spec, window, false)
	s := obj.blob
	const step = 4 << 20
	first := s.chunks[0].off
	var handedOut int64
	s.mu.Lock()
	s.inflight, s.written = map[int64]*fetch{}, map[int64]bool{}
	s.mu.Unlock()
	for pos := first; pos < first+size; pos += step {
		var runs [][2]int64
		for off, n := s.Readahead(pos, step); n > 0 && len(runs) < 16; off, n = s.ReadaheadMore() {
			runs = append(runs, [2]int64{off, n})
		}
		s.mu.Lock()
		var ahead int64
		for _, c := range s.chunks {
			for _, r := range runs {
				if c.off >= r[0] && c.off < r[0]+r[1] {
					s.inflight[c.off] = &fetch{}
					handedOut += alignUp(c.length)
				}
			}
			if s.inflight[c.off] != nil && c.off+alignUp(c.length) > pos {
				ahead += alignUp(c.length)
			}
		}
		// The reader passes this access: its chunks are in.
		for _, c := range s.chunks {
			if c.off+alignUp(c.length) <= pos+step && s.inflight[c.off] != nil {
				delete(s.inflight, c.off)
				s.written[c.off] = true
			}
		}
		s.mu.Unlock()
		if ahead > window {
			t.Fatalf("reading [%d, %d) MiB: %d MiB in flight from the reader on, window %d MiB", pos>>20, (pos+step)>>20, ahead>>20, window>>20)
		}
		// By the fourth access (16 MiB read: a full 32 MiB window), the
		// window is handed out whole, not a run per access.
		if pos == first+3*step && ahead < window-MaxRun {
			t.Errorf("after 16 MiB read: %d MiB in flight, want the window's %d MiB but a run", ahead>>20, window>>20)
		}
	}
	if handedOut < size/2 {
		t.Fatalf("readahead handed out %d MiB of a %d MiB sequential read", handedOut>>20, size>>20)
	}
}

// TestPoolReadaheadLeavesWorkers: readahead takes a worker only if a
// quarter of the pool stays idle for requests.
func TestPoolReadaheadLeavesWorkers(t *testing.T) {
	for busy := 0; busy <= 8; busy++ {
		p := NewPool(8)
		for range busy {
			p.Acquire(context.Background())
		}
		ran := make(chan struct{}, 1)
		src := fixedReadahead{off: 0, n: 4096}
		_, n := p.Readahead(src, 0, 4096, nil, func() bool { return true }, func(int64, int64) { ran <- struct{}{} })
		want := 8-busy-1 >= 2
		if got := n > 0; got != want {
			t.Errorf("%d of 8 workers busy: readahead started %v, want %v", busy, got, want)
		}
		if n > 0 {
			<-ran
		}
		p.Wait()
	}
}

// fixedReadahead is a Source whose readahead is always one range.
type fixedReadahead struct {
	Source
	off, n int64
}

func (f fixedReadahead) Readahead(off, n int64) (int64, int64) { return f.off, f.n }

// memStager is a memObject that also takes staged writes
// (StagedWriter): pieces land in a buffer of the range and reach the
// object only if fill vouches for them.
type memStager struct {
	*memObject
	refuse          bool
	pieces, commits int
	drops, direct   int
}

func (m *memStager) WriteBlocks(p []byte, off int64) error {
	m.direct++
	return m.memObject.WriteBlocks(p, off)
}

func (m *memStager) WriteStaged(ctx context.Context, off, n int64, fill func(write func(p []byte, at int64) error) (bool, error)) error {
	if m.refuse {
		return fmt.Errorf("refused: %w", ErrNotCopied)
	}
	staged := make([]byte, n)
	ok, err := fill(func(p []byte, at int64) error {
		if at < off || at+int64(len(p)) > off+n || at%BlockSize != 0 || len(p)%BlockSize != 0 {
			return fmt.Errorf("staged piece [%d, %d) outside [%d, %d) or unaligned", at, at+int64(len(p)), off, off+n)
		}
		m.pieces++
		copy(staged[at-off:], p)
		return nil
	})
	if err != nil || !ok {
		m.drops++
		return err
	}
	m.commits++
	return m.memObject.WriteBlocks(staged, off)
}

// TestStreamChunkStaged: a chunk streamed alone goes to a StagedWriter
// piece by piece as it arrives and is committed once its digest matches;
// a stream that lies is dropped, never committed, and the chunk is read
// again and written whole; a writer that refuses staging gets the chunk
// written whole.
func TestStreamChunkStaged(t *testing.T) {
	spec, blobPath := buildImage(t, 1<<20)
	blob, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		zeros, refuse bool
	}{
		{"good", false, false},
		{"lying stream", true, false},
		{"refused", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := spec
			spec.Store = &streamStore{Store: spec.Store, zeros: tc.zeros}
			_, im, obj := serveBlob(t, spec)
			// The largest chunk: several pieces.
			var c chunk
			for _, x := range im.blobs[0].chunks {
				if x.length > c.length && !x.zero {
					c = x
				}
			}
			if c.length <= streamPiece {
				t.Fatalf("largest chunk %d bytes: want more than one piece", c.length)
			}
			m := &memStager{memObject: newMemObject(t, obj.Size()), refuse: tc.refuse}
			if err := obj.Fill(context.Background(), c.off, BlockSize, m); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.data[c.off:c.off+c.length], blob[c.off:c.off+c.length]) {
				t.Fatal("chunk differs from the blob")
			}
			switch {
			case tc.refuse && (m.pieces != 0 || m.direct != 1):
				t.Errorf("refused: %d staged pieces, %d whole writes; want 0 and 1", m.pieces, m.direct)
			case tc.zeros && (m.commits != 0 || m.drops != 1 || m.direct != 1):
				t.Errorf("lying stream: %d commits, %d drops, %d whole writes; want 0, 1, 1", m.commits, m.drops, m.direct)
			case !tc.refuse && !tc.zeros && (m.commits != 1 || m.direct != 0 || m.pieces != int((c.length+streamPiece-1)/streamPiece)):
				t.Errorf("good: %d commits, %d whole writes, %d pieces; want 1, 0, %d", m.commits, m.direct, m.pieces, (c.length+streamPiece-1)/streamPiece)
			}
		})
	}
}

// TestReadaheadRunCap: a stream's readahead run takes what its window
// leaves, up to MaxStreamRun from a store that streams ranges at a pace
// that delivers that in streamRunTime, and MaxRun from one read into
// memory, one whose streams failed or a slow one; a run of either is
// fetched with one request. Runs start once the window has room for half
// of it.
func TestReadaheadRunCap(t *testing.T) {
	const m = 1 << 20
	spec, blob := randomFileImage(t, 80*m, m, 7)
	local := spec.Store
	// The pace is set rather than left as measured: a loaded machine
	// must not make the case.
	fast := func(s *blobSource) { s.streamPace.Store(1 << 30) }
	for _, tc := range []struct {
		name    string
		streams bool
		window  int64
		stream  int64 // a sequential reader read [0, stream)
		after   func(s *blobSource)
		want    int64 // the run after it
	}{
		{"streamed, the window", true, 32 * m, 16 * m, fast, 32 * m},
		{"streamed, capped", true, 128 * m, 32 * m, fast, MaxStreamRun},
		{"streamed, slow", true, 32 * m, 16 * m, func(s *blobSource) { s.streamPace.Store(MaxStreamRun/int64(streamRunTime/time.Second) - 1) }, 31 * m},
		{"streamed, crawling", true, 32 * m, 16 * m, func(s *blobSource) { s.streamPace.Store(1 << 20) }, MaxRun},
		{"streams failed", true, 32 * m, 16 * m, func(s *blobSource) { s.badStreams.Store(true) }, MaxRun},
		{"read into memory", false, 32 * m, 16 * m, nil, MaxRun},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &streamStore{Store: local}
			spec.Store = store
			if !tc.streams {
				spec.Store = &readAtStore{Store: local, reads: &store.reads}
			}
			obj := serveReadahead(t, spec, tc.window, false)
			mem := newMemObject(t, obj.Size())
			ctx := context.Background()
			if err := obj.Fill(ctx, 0, tc.stream, mem); err != nil { // opens the blob, streams
				t.Fatal(err)
			}
			if pace := obj.blob.streamPace.Load(); tc.streams != (pace > 0) {
				t.Fatalf("stream pace %d after streaming %v", pace, tc.streams)
			}
			if tc.after != nil {
				tc.after(obj.blob)
			}
			obj.Readahead(0, tc.stream/2)
			off, n := obj.Readahead(tc.stream/2, tc.stream/2)
			if off != tc.stream || n != tc.want {
				t.Fatalf("readahead %d+%d, want %d+%d", off, n, tc.stream, tc.want)
			}
			requests := store.streams.Load() + store.reads.Load()
			if err := obj.Fill(ctx, off, n, mem); err != nil {
				t.Fatal(err)
			}
			if got := store.streams.Load() + store.reads.Load() - requests; got != 1 {
				t.Errorf("the run took %d requests, want 1", got)
			}
			if !bytes.Equal(mem.data[off:off+n], blob[off:off+n]) {
				t.Error("the run's bytes are not the blob's")
			}
			// The reader goes on by 8 MiB: what was handed out and is
			// not read yet leaves the window too little room for a run
			// of half of it.
			if n == 32*m && tc.window == 32*m {
				if off, n := obj.Readahead(tc.stream, 8*m); n != 0 {
					t.Errorf("readahead %d+%d with 8 MiB of room, want none until there is 16", off, n)
				}
			}
		})
	}
}

// TestFillLongerThanRun: a range longer than a run (handed out before
// the blob's streams failed and its runs became shorter) is still fetched
// in runs, not chunk by chunk (once a run fails, chunk by chunk:
// TestStreamedRun).
func TestFillLongerThanRun(t *testing.T) {
	const m = 1 << 20
	spec, blob := randomFileImage(t, 32*m, 256<<10, 8)
	store := &readAtStore{Store: spec.Store, reads: new(atomic.Int64)}
	spec.Store = store
	obj := serveReadahead(t, spec, 0, false)
	mem := newMemObject(t, obj.Size())
	if err := obj.Fill(context.Background(), 0, 32*m, mem); err != nil {
		t.Fatal(err)
	}
	if got := store.reads.Load(); got != 32*m/MaxRun {
		t.Errorf("%d reads for %d MiB, want %d runs", got, 32, 32*m/MaxRun)
	}
	if !bytes.Equal(mem.data[:len(blob)], blob) {
		t.Error("the object's bytes are not the blob's")
	}
}

// readAtStore serves blobs that are read with ReadAt only (no streams,
// no local file), counting the reads.
type readAtStore struct {
	blobstore.Store
	reads *atomic.Int64
}

func (s *readAtStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := s.Store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return readAtOnly{b, s.reads}, nil
}

type readAtOnly struct {
	b     blobstore.Blob
	reads *atomic.Int64
}

func (r readAtOnly) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	r.reads.Add(1)
	return r.b.ReadAt(ctx, p, off)
}
func (r readAtOnly) Size() int64  { return r.b.Size() }
func (r readAtOnly) Close() error { return r.b.Close() }

// TestStreamPace: a streamed run's pace counts for runCap only from
// minPaceSpan on (a short run may ride a burst), and a stream that fails
// makes the pace unknown again.
func TestStreamPace(t *testing.T) {
	const m = 1 << 20
	spec, _ := randomFileImage(t, 16*m, 64<<10, 9)
	local := spec.Store
	ctx := context.Background()

	spec.Store = &streamStore{Store: local}
	obj := serveReadahead(t, spec, 0, false)
	if err := obj.Fill(ctx, 0, 128<<10, newMemObject(t, obj.Size())); err != nil {
		t.Fatal(err)
	}
	if pace := obj.blob.streamPace.Load(); pace != 0 {
		t.Errorf("a pace of %d from a 128 KiB run, want none", pace)
	}
	if err := obj.Fill(ctx, m, minPaceSpan, newMemObject(t, obj.Size())); err != nil {
		t.Fatal(err)
	}
	if obj.blob.streamPace.Load() == 0 {
		t.Errorf("no pace from a run of %d bytes", minPaceSpan)
	}

	spec.Store = &streamStore{Store: local, breakAfter: 100 << 10}
	obj = serveReadahead(t, spec, 0, false)
	obj.blob.streamPace.Store(1 << 30)
	if err := obj.Fill(ctx, 0, m, newMemObject(t, obj.Size())); err != nil {
		t.Fatal(err)
	}
	if pace := obj.blob.streamPace.Load(); pace != 0 {
		t.Errorf("a pace of %d after a stream broke, want none", pace)
	}
}

// flakyStreamStore serves blobs whose streams, at random (seeded), break
// part way or flip a byte; ReadAt stays honest.
type flakyStreamStore struct {
	blobstore.Store
	mu  sync.Mutex
	rnd *rand.Rand
}

func (s *flakyStreamStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := s.Store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return &flakyBlob{Blob: b, s: s}, nil
}

type flakyBlob struct {
	blobstore.Blob
	s *flakyStreamStore
}

func (b *flakyBlob) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.s.mu.Lock()
	fate, at := b.s.rnd.Intn(4), b.s.rnd.Int63n(n)
	b.s.mu.Unlock()
	p := make([]byte, n)
	if _, err := b.ReadAt(ctx, p, off); err != nil {
		return nil, err
	}
	switch fate {
	case 0: // breaks
		return io.NopCloser(io.MultiReader(bytes.NewReader(p[:at]), errReader{io.ErrUnexpectedEOF})), nil
	case 1: // lies
		p[at] ^= 0x5a
	}
	return io.NopCloser(bytes.NewReader(p)), nil
}

// TestFlakyStreamsConcurrentReaders: readers of one object going forward
// with readahead and a whole prefetch all at once, from a store whose
// streams break or lie half of the time: every fill ends in bounded time,
// every byte written is the blob's, and the fills that did not fail leave
// their ranges complete.
func TestFlakyStreamsConcurrentReaders(t *testing.T) {
	const m = 1 << 20
	spec, blob := randomFileImage(t, 40*m, 256<<10, 13)
	spec.Store = &flakyStreamStore{Store: spec.Store, rnd: rand.New(rand.NewSource(5))}
	obj := serveReadahead(t, spec, 32*m, false)
	tg := &memTarget{m: newMemObject(t, obj.Size())}
	obj.Attach(tg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			for off := int64(r) * m; off < int64(len(blob)); off += 4 * m {
				n := min(4*m, int64(len(blob))-off)
				if err := obj.Fill(ctx, off, n, tg.m); err != nil && !errors.Is(err, ErrDigestMismatch) {
					t.Errorf("fill %d+%d: %v", off, n, err)
					return
				}
				if ra, rn := obj.Readahead(off, n); rn > 0 {
					obj.Fill(ctx, ra, rn, tg.m)
				}
			}
		})
	}
	wg.Go(func() {
		obj.reg.Prefetch(ctx, obj.Image, PrefetchOptions{Whole: true, Quiet: time.Millisecond})
	})
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("the fills did not end within a minute")
	}
	tg.m.mu.Lock()
	defer tg.m.mu.Unlock()
	for blk, seen := range tg.m.seen {
		off := blk * BlockSize
		if seen && off < len(blob) && !bytes.Equal(tg.m.data[off:min(off+BlockSize, len(blob))], blob[off:min(off+BlockSize, len(blob))]) {
			t.Fatalf("block %d written with bytes not the blob's", blk)
		}
	}
	// Every chunk ends up written: ReadAt is honest, so what a lying or
	// broken stream did not deliver came chunk by chunk.
	if err := obj.Fill(ctx, 0, int64(len(blob)), tg.m); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tg.m.data[:len(blob)], blob) {
		t.Fatal("the object is not the blob")
	}
}
