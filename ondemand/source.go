// Package ondemand is erofsd's serving core: it knows the registered
// images and, for each object the kernel asks for (an image's metadata
// bootstrap or one of its blobs), produces the bytes of any range as whole
// aligned blocks, fetching blob chunks from a blob store and verifying
// each against its sha256 from the image's chunk digest table before it is
// handed on. The kernel front ends (cachefiles on-demand, fanotify
// pre-content) live in subpackages and write those blocks into the
// kernel's cache files.
package ondemand

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/sha256chain"
)

// BlockSize is the unit of every write into a cache file: the kernel
// writes cache files with direct I/O on 4 KiB pages.
const BlockSize = 4096

// Errors callers can test for.
var (
	ErrDigestMismatch = errors.New("chunk digest mismatch")
	ErrUnknownObject  = errors.New("unknown object")
	ErrNoChunkTable   = errors.New("image has blobs but no chunk digest table: its data cannot be verified")
	// ErrUncovered is a read of blob bytes no entry of the image's chunk
	// digest table covers: they cannot be verified, so they are not
	// served.
	ErrUncovered = errors.New("blob range outside every verified chunk")
)

// BlockWriter receives data for a cache object. Every call writes whole
// blocks: off is a multiple of BlockSize and so is len(p). p is only valid
// during the call.
type BlockWriter interface {
	WriteBlocks(p []byte, off int64) error
}

// FileCopier is implemented by BlockWriters that can take blocks straight
// from a local file, copied in the kernel (copy_file_range) rather than
// read into memory and written back: a blob in a local store is then
// moved once and hashed where it lands, instead of moved twice.
type FileCopier interface {
	// CopyFrom copies the n bytes at off of src to the same place in
	// the object (off and n block aligned; what src lacks reads as
	// zeros), then calls check with the bytes as they now are in the
	// object (mapped read-only, valid during the call; reading them
	// faults if the object shrinks meanwhile, which check must survive:
	// debug.SetPanicOnFault). Only the [start, end) ranges check
	// returns (block aligned, within the copy) count as written;
	// nothing of the copy can be read before that, and what check does
	// not vouch for is dropped. Copying into blocks already written, or
	// being written, is refused with ErrNotCopied, as is a src the
	// object's filesystem cannot copy from: nothing was written then,
	// and the caller writes the blocks itself.
	CopyFrom(ctx context.Context, src *os.File, off, n int64, check func(data []byte) [][2]int64) error
}

// StagedWriter is implemented by BlockWriters that can take blocks
// before they are verified and make them readable only once they are:
// a streamed chunk is written while it arrives, so that its reader does
// not wait for the write of the whole chunk after its transfer.
type StagedWriter interface {
	// WriteStaged calls fill, which writes the n bytes at off (block
	// aligned) through write, in any order, and reports whether they
	// are right. Nothing of the range can be read meanwhile; it counts
	// as written only if fill reports true without error, and is
	// dropped otherwise. fill's error is returned as it is. A range
	// already written, or being written, is refused with ErrNotCopied
	// before fill is called: the caller writes it through WriteBlocks.
	WriteStaged(ctx context.Context, off, n int64, fill func(write func(p []byte, at int64) error) (bool, error)) error
}

// ErrNotCopied is a FileCopier's refusal to copy: the caller writes the
// blocks through WriteBlocks instead.
var ErrNotCopied = errors.New("blocks not copied")

// Source is one object the kernel reads: an image bootstrap or a blob.
type Source interface {
	// Size is the object's size in bytes, as reported to the kernel.
	Size() int64
	// Fill writes at least the blocks covering [off, off+n) into w.
	// Ranges past the end are filled with zero blocks up to the end of
	// the last block. On error some blocks may have been written; the
	// ones written are correct.
	Fill(ctx context.Context, off, n int64, w BlockWriter) error
	// Name identifies the source in logs and errors.
	Name() string
	// Readahead suggests the range worth filling in the background after
	// a fill of [off, off+n) (the chunk after it, for a blob read
	// sequentially); n == 0 means none.
	Readahead(off, n int64) (int64, int64)
}

func alignDown(n int64) int64 { return n &^ (BlockSize - 1) }
func alignUp(n int64) int64   { return (n + BlockSize - 1) &^ (BlockSize - 1) }

// fileSource serves a local file (a bootstrap) as is. The first fill
// writes the whole file: a bootstrap is metadata the kernel will read
// piece by piece anyway, and it is local, so one pass saves many READs.
type fileSource struct {
	name string
	f    *os.File
	size int64
	bufs *bufferPool

	mu   sync.Mutex
	done bool
}

func newFileSource(name string, f *os.File, size int64, bufs *bufferPool) *fileSource {
	return &fileSource{name: name, f: f, size: size, bufs: bufs}
}

func (s *fileSource) Size() int64  { return s.size }
func (s *fileSource) Name() string { return s.name }

// Readahead: the first fill writes the whole file; nothing is left.
func (s *fileSource) Readahead(off, n int64) (int64, int64) { return 0, 0 }

func (s *fileSource) Fill(ctx context.Context, off, n int64, w BlockWriter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	end := alignUp(s.size)
	for pos := int64(0); pos < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf := s.bufs.get()
		chunk := buf[:min(int64(len(buf)), end-pos)]
		got, err := s.f.ReadAt(chunk, pos)
		if err != nil && !errors.Is(err, io.EOF) {
			s.bufs.put(buf)
			return fmt.Errorf("%s: reading at %d: %w", s.name, pos, err)
		}
		clear(chunk[got:])
		err = w.WriteBlocks(chunk, pos)
		s.bufs.put(buf)
		if err != nil {
			return err
		}
		pos += int64(len(chunk))
	}
	s.done = true
	return nil
}

// chunk is one verified unit of a blob.
type chunk struct {
	off    int64 // byte offset in the blob (block aligned)
	length int64 // data bytes; the chunk occupies alignUp(length)
	digest [32]byte
	// zero marks the all-zero chunk a builder stores once for the holes
	// of sparse files: its digest is that of length zero bytes, so it is
	// written as zeros without being fetched.
	zero bool
}

// blobData is a blob as the images registered with it describe it: its
// digest, size and chunk table, and the stores of those images. Images
// whose description agrees (same digest, size and chunk table: the same
// Name) share one blobData, and with it one cache object or file; every
// byte written there was verified against that one table. It is shared
// by every kernel object that caches this blob.
type blobData struct {
	digest blobstore.Digest
	name   string // digest and table fingerprint: the cache object's name
	size   int64
	chunks []chunk // sorted by off, non-overlapping
	// states[i] is the image's chunk state of chunks[i] when they cover
	// the blob (coversBlob): chunks are checked as steps of its sha256,
	// so a complete cache file is the blob. nil: checked by digest.
	states []sha256chain.State
	// runEnd[i] is where the file run of chunks[i] ends (see
	// mapFileRuns); nil: unknown, readahead goes by blob offsets.
	runEnd []int64
	// startSpans are the blob's start set extents, [start, end) bytes.
	startSpans [][2]int64

	refs int // images registered with it (under Registry.mu)

	storesMu sync.Mutex
	stores   []*blobStore // the images' stores, in the order they came
}

// blobStore is one store a blob can be read from, opened on first use.
type blobStore struct {
	store blobstore.Store
	refs  int // images of the blob that named this store (under storesMu)

	// openMu serializes opens: reads racing to open the store wait for
	// one open (a HEAD to a registry, say). Closing does not take it,
	// so that an image's end never waits for a slow store: an open that
	// finishes after the close closes what it opened.
	openMu sync.Mutex
	mu     sync.Mutex // guards blob and closed
	blob   blobstore.Blob
	closed bool // the last image naming this store went: open no more
}

// errStoreClosed is an open of a store no image names any more.
var errStoreClosed = errors.New("blob store closed")

// addStore records that an image reads the blob from st.
func (d *blobData) addStore(st blobstore.Store) {
	d.storesMu.Lock()
	defer d.storesMu.Unlock()
	for _, bs := range d.stores {
		if bs.store == st {
			bs.refs++
			return
		}
	}
	d.stores = append(d.stores, &blobStore{store: st, refs: 1})
}

// dropStore forgets one image's use of st, closing the store's blob when
// no image names it any more.
func (d *blobData) dropStore(st blobstore.Store) error {
	d.storesMu.Lock()
	var gone *blobStore
	for i, bs := range d.stores {
		if bs.store == st {
			if bs.refs--; bs.refs == 0 {
				gone = bs
				d.stores = slices.Delete(d.stores, i, i+1)
			}
			break
		}
	}
	d.storesMu.Unlock()
	if gone == nil {
		return nil
	}
	return gone.close()
}

// storeList returns the stores to try, in order.
func (d *blobData) storeList() []*blobStore {
	d.storesMu.Lock()
	defer d.storesMu.Unlock()
	return slices.Clone(d.stores)
}

func (bs *blobStore) open(ctx context.Context, d *blobData) (blobstore.Blob, error) {
	bs.openMu.Lock()
	defer bs.openMu.Unlock()
	return bs.openLocked(ctx, d)
}

// openAhead opens the store's blob unless it is open or closed, without
// waiting for an open under way (a read's, which will have it).
func (bs *blobStore) openAhead(ctx context.Context, d *blobData) error {
	if !bs.openMu.TryLock() {
		return nil
	}
	defer bs.openMu.Unlock()
	_, err := bs.openLocked(ctx, d)
	return err
}

func (bs *blobStore) openLocked(ctx context.Context, d *blobData) (blobstore.Blob, error) {
	if b, err := bs.current(d); b != nil || err != nil {
		return b, err
	}
	var b blobstore.Blob
	var err error
	if so, ok := bs.store.(blobstore.SizedOpener); ok {
		b, err = so.OpenSized(ctx, d.digest, d.size)
	} else {
		b, err = bs.store.Open(ctx, d.digest)
	}
	if err != nil {
		return nil, err
	}
	if b.Size() < d.size {
		b.Close()
		return nil, fmt.Errorf("%s: blob has %d bytes, the image needs %d", d.digest, b.Size(), d.size)
	}
	bs.mu.Lock()
	closed := bs.closed
	if !closed {
		bs.blob = b
	}
	bs.mu.Unlock()
	if closed {
		// Closed while it was being opened: nothing would close it later.
		b.Close()
		return nil, fmt.Errorf("%s: %w", d.digest, errStoreClosed)
	}
	return b, nil
}

// current returns the store's open blob, or errStoreClosed, or neither.
func (bs *blobStore) current(d *blobData) (blobstore.Blob, error) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.closed {
		return nil, fmt.Errorf("%s: %w", d.digest, errStoreClosed)
	}
	return bs.blob, nil
}

// distrust tells a blob read from several hosts (mirrors) that the data
// host gave failed verification, so the retry asks another host.
func (bs *blobStore) distrust(host string) {
	if host == "" {
		return
	}
	bs.mu.Lock()
	b := bs.blob
	bs.mu.Unlock()
	if ds, ok := b.(blobstore.Distruster); ok {
		ds.Distrust(host)
	}
}

// close releases the opened blob without waiting for an open under way
// (which closes what it opens once it sees the store closed).
func (bs *blobStore) close() error {
	bs.mu.Lock()
	bs.closed = true
	b := bs.blob
	bs.blob = nil
	bs.mu.Unlock()
	if b == nil {
		return nil
	}
	return b.Close()
}

// close releases the blobs opened in every store.
func (d *blobData) close() error {
	var errs []error
	for _, bs := range d.storeList() {
		errs = append(errs, bs.close())
	}
	return errors.Join(errs...)
}

// blobSource serves one kernel object of a blob, chunk by chunk,
// verifying each chunk against the image's digest table. Concurrent fills
// of the same chunk of the object share one fetch and one write.
type blobSource struct {
	*blobData
	bufs    *bufferPool
	stats   *Stats
	latency Observer // may be nil
	// minFetch extends a fill's store read to the chunks after it.
	minFetch int64
	// window is how far ahead of a sequential reader Readahead looks
	// (0: one chunk).
	window int64
	// noCopy: the writer cannot copy from this blob's local files (see
	// FileCopier), runs are read into memory.
	noCopy atomic.Bool
	// badStreams: a streamed read of this blob failed or delivered a
	// chunk that did not match; single chunks are read with ReadAt
	// (which names the host, for mirrors) rather than streamed too, so
	// a store whose streams fail costs one stream per run, not one per
	// chunk on top of each read.
	badStreams atomic.Bool
	// streamPace is the bytes per second of the last streamed run of
	// minPaceSpan or more that delivered all its chunks, from its request
	// on; 0 after a stream failed (runCap).
	streamPace atomic.Int64
	// acrossFiles lets readahead ignore file runs and open the whole
	// window on the second access in a row, as before erofsd mapped files
	// (Registry.ReadaheadAcrossFiles).
	acrossFiles bool

	mu       sync.Mutex
	inflight map[int64]*fetch // by chunk offset
	written  map[int64]bool   // chunks already in the object: never fetched again
	lastEnd  int64            // end of the last access Readahead saw
	// streamStart is where the sequential stream lastEnd ends began.
	streamStart int64
	seen        bool  // Readahead saw an access
	lastOff     int64 // start of the last access Readahead saw
	raNext      int64 // end of the last readahead range handed out
}

type fetch struct {
	done chan struct{}
	err  error
}

func (s *blobSource) Size() int64  { return s.size }
func (s *blobSource) Name() string { return s.digest.String() }

// seqSlack is how far an access may start from where the last one ended
// and still continue a sequential stream: a front end handles one
// reader's requests in parallel, so they arrive a little out of order.
const seqSlack = 1 << 20

// Readahead returns what to fetch in the background after a fill of
// [off, off+n): the chunk that follows unless it is in the object or
// being fetched; and while the accesses go forward, one after the other,
// with a window set, the first run of chunks neither present nor being
// fetched within window bytes after the range, so that a sequential
// reader finds data fetched ahead of it. Random accesses get no window:
// it would fetch megabytes nobody reads. Either way readahead stops at
// the end of the file the access read (its run of chunks in the blob):
// files read one after the other are adjacent in the blob, and look
// like one sequential reader.
func (s *blobSource) Readahead(off, n int64) (int64, int64) {
	end := off + n
	maxRun := s.runCap()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Readahead stays in the file the access read: never another file's
	// chunks. An access continues a sequential stream only in the same
	// file: files read one after the other look sequential in the blob.
	fileEnd, sameFile := s.size, true
	if !s.acrossFiles {
		fileEnd, sameFile = s.runLimit(end-1), s.runLimit(off) == s.runLimit(s.lastEnd-1)
	}
	sequential := s.seen && off >= s.lastEnd-seqSlack && off <= s.lastEnd+seqSlack && sameFile
	if sequential {
		s.lastEnd = max(s.lastEnd, end)
	} else {
		s.lastEnd, s.raNext, s.streamStart = end, 0, off
	}
	s.seen, s.lastOff = true, off
	if !sequential && !s.acrossFiles {
		// An isolated read earns no readahead: it costs one round trip
		// and its own chunk, not the next one's too. A second read
		// where it ended starts a stream.
		return 0, 0
	}
	if s.window <= 0 || !sequential {
		i := s.chunkAfter(end)
		if i >= len(s.chunks) || s.written[s.chunks[i].off] || s.inflight[s.chunks[i].off] != nil || s.chunks[i].off >= fileEnd {
			return 0, 0
		}
		return s.chunks[i].off, s.chunks[i].length
	}
	return s.nextRunLocked(off, end, maxRun)
}

// ReadaheadMore hands out the next run of the stream Readahead last
// continued (whichever access that was), while its window has room, so
// that a front end can start the window's runs at once rather than one
// per access (through a link with a long round trip, a stream's first
// accesses otherwise each wait for one). n == 0: nothing more.
func (s *blobSource) ReadaheadMore() (int64, int64) {
	maxRun := s.runCap()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seen || s.window <= 0 || s.raNext == 0 {
		return 0, 0
	}
	return s.nextRunLocked(s.lastOff, s.lastEnd, maxRun)
}

// chunkAfter returns the index of the first chunk that starts at or
// after pos (one that pos falls inside is passed over).
func (s *blobSource) chunkAfter(pos int64) int {
	i := s.chunkEndingAfter(pos)
	if i < len(s.chunks) && s.chunks[i].off < pos {
		i++
	}
	return i
}

// nextRunLocked hands out the next run of the sequential stream whose
// last access was [off, end): the first chunks after what was handed out
// before, within the window after end, neither written nor being
// fetched, up to maxRun (runCap) and what the window leaves in flight.
// s.mu is held.
func (s *blobSource) nextRunLocked(off, end, maxRun int64) (int64, int64) {
	fileEnd := s.size
	if !s.acrossFiles {
		fileEnd = s.runLimit(end - 1)
	}
	busy := func(c chunk) bool { return s.written[c.off] || s.inflight[c.off] != nil }
	// The window grows with the stream, as the kernel's does: twice what
	// it has read, up to s.window. Two reads in a row are not yet a
	// stream worth megabytes. It also bounds what is in flight from the
	// reader on, so that a link's round trips hide behind it: with the
	// default 32 MiB, four 8 MiB runs (two, with 16 MiB, left a reader
	// waiting on two thirds of its events from a registry on loopback;
	// through a link adding 20 ms per request, 32 and 64 MiB read alike,
	// 413 and 419 MiB/s: tests/regbench_test.go, #15).
	window := s.window
	if !s.acrossFiles {
		window = min(window, 2*(end-s.streamStart))
	}
	limit := min(end+window, fileEnd)
	// What is on its way counts from the access on: the chunks being
	// fetched in the access (the run the reader waits in), then every
	// chunk not written yet up to what was handed out (a range handed
	// out is fetched by a fill that may not have started yet), then the
	// chunks being fetched after that.
	var fetching int64
	i := s.chunkEndingAfter(off) // the chunk off falls inside, if any
	for ; i < len(s.chunks) && s.chunks[i].off < end; i++ {
		if s.inflight[s.chunks[i].off] != nil {
			fetching += alignUp(s.chunks[i].length)
		}
	}
	for ; i < len(s.chunks) && s.chunks[i].off < s.raNext; i++ {
		if !s.written[s.chunks[i].off] {
			fetching += alignUp(s.chunks[i].length)
		}
	}
	for i < len(s.chunks) && s.chunks[i].off < limit && busy(s.chunks[i]) {
		if s.inflight[s.chunks[i].off] != nil {
			fetching += alignUp(s.chunks[i].length)
		}
		i++
	}
	// Enough on its way: more streams would only split the bandwidth,
	// and the chunk the reader wants next would come later.
	room := window - fetching
	if room <= 0 || i >= len(s.chunks) || s.chunks[i].off >= limit {
		return 0, 0
	}
	step := min(window/2, maxRun)
	if limit < fileEnd && limit-s.chunks[i].off < step && s.chunks[len(s.chunks)-1].off >= limit {
		// The window moved by less than a step: wait until it has
		// room for a long run rather than fetch chunk by chunk.
		return 0, 0
	}
	if room < min(step, limit-s.chunks[i].off) {
		// Likewise for what may be in flight: wait for a run to come
		// in rather than start a short one.
		return 0, 0
	}
	first := s.chunks[i]
	last := first
	for j := i + 1; j < len(s.chunks); j++ {
		c := s.chunks[j]
		if c.off >= limit || busy(c) || c.off != last.off+alignUp(last.length) || c.off+alignUp(c.length)-first.off > min(maxRun, room) {
			break
		}
		last = c
	}
	s.raNext = last.off + alignUp(last.length)
	return first.off, last.off + last.length - first.off
}

// Fill is a front end's fill (a kernel read or its readahead): while it
// runs, prefetch waits (see Registry.Prefetch).
func (s *blobSource) Fill(ctx context.Context, off, n int64, w BlockWriter) error {
	s.stats.demandStart()
	defer s.stats.demandEnd()
	return s.fill(ctx, off, n, w)
}

// countStart counts the chunks of a kernel read: start set chunks already
// written as hits (front ends that see reads of cached data: fanotify),
// start set chunks not written yet as late, others not written yet as
// misses.
func (s *blobSource) countStart(off, n int64) {
	if len(s.startSpans) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.chunksIn(alignDown(off), alignUp(off+n)-alignDown(off)) {
		if c.zero {
			continue
		}
		if s.written[c.off] {
			if s.inStart(c.off) {
				s.stats.StartSetHits.Add(1)
			}
			continue
		}
		if s.inStart(c.off) {
			s.stats.StartSetLate.Add(1)
		} else {
			s.stats.StartSetMisses.Add(1)
		}
	}
}

func (d *blobData) inStart(off int64) bool {
	i, _ := slices.BinarySearchFunc(d.startSpans, off, func(sp [2]int64, t int64) int {
		if sp[1] <= t {
			return -1
		}
		return 1
	})
	return i < len(d.startSpans) && d.startSpans[i][0] <= off
}

// fill is Fill without counting as on-demand work.
func (s *blobSource) fill(ctx context.Context, off, n int64, w BlockWriter) error {
	start, end := alignDown(off), alignUp(off+n)
	i := s.chunkEndingAfter(start)
	// Adjacent chunks the range needs are fetched with one request
	// (fewer round trips to remote stores); what that does not cover is
	// then filled chunk by chunk below.
	runs, tried := s.fillRun(ctx, i, end, max(end, start+s.minFetch), w), i
	for pos := start; pos < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		next := end
		if i < len(s.chunks) {
			next = min(s.chunks[i].off, end)
		}
		if next > pos {
			// No chunk covers [pos, next). Past the blob's end nothing
			// exists and zeros are right; inside it those bytes are
			// nothing the image vouches for (a builder leaves no
			// gaps), so they are not made up.
			if pos < s.size {
				return fmt.Errorf("%w: %s bytes [%d, %d)", ErrUncovered, s.digest, pos, min(next, s.size))
			}
			if err := writeZeros(w, pos, next, s.bufs); err != nil {
				return err
			}
			pos = next
			continue
		}
		c := s.chunks[i]
		if runs && i != tried && !s.busy(c) {
			// Past a run (at most runCap, and the range may be longer)
			// or past chunks another fill is fetching: what follows is
			// still fetched with one request, as long as runs deliver:
			// a store whose runs fail must not cost a run per chunk.
			// (Not again where the last run was tried: a single chunk
			// read, the common random read, asks once.)
			runs, tried = s.fillRun(ctx, i, end, end, w), i
		}
		if err := s.fillChunk(ctx, c, w); err != nil {
			return err
		}
		pos = c.off + alignUp(c.length)
		i++
	}
	return nil
}

// busy reports whether chunk c is written or being fetched.
func (s *blobSource) busy(c chunk) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written[c.off] || s.inflight[c.off] != nil
}

// MaxRun bounds the bytes one coalesced fetch asks for, but for a
// stream (MaxStreamRun).
const MaxRun = 8 << 20

// MaxStreamRun bounds a run streamed from a remote store (a
// blobstore.RangeOpener), which needs no buffer of the run's size. Each
// request costs a registry more than its bytes: docker-registry spends
// about 4 ms of CPU on a range request here, as much as on sending 6 MiB,
// so that a sequential read in 8 MiB runs cost it 1.1 s/GiB against
// 0.65 for the whole blob in one request. Through the default 32 MiB
// window a stream's runs are 16 to 32 MiB on a link fast enough (runCap;
// tests/regbench_test.go: 35 requests for 256 MiB become 19, and the
// machine's CPU per GiB read falls by about 0.3 s).
const MaxStreamRun = 32 << 20

// streamRunTime is the longest a run streamed past MaxRun should take
// at the pace of the blob's last streamed run: runs grow past MaxRun only
// on links that deliver them in this time (8 MiB/s for MaxStreamRun), so
// that a reader that needs a chunk at a run's end does not wait long
// behind it, and a readahead run stays far within its fill's timeout.
const streamRunTime = 4 * time.Second

// minPaceSpan is the least a streamed run must span for its pace to
// count: a short one may come from a burst (a shaper's bucket, the first
// TCP window) that a long run would not see.
const minPaceSpan = MaxRun / 2

// runCap is the longest run of this blob: while its first store's open
// blob streams ranges and its streams have not failed, what the last
// streamed run's pace delivers in streamRunTime, between MaxRun and
// MaxStreamRun; MaxRun otherwise (before the first open and the first
// streamed run too).
func (s *blobSource) runCap() int64 {
	stores := s.storeList()
	if len(stores) == 0 || s.badStreams.Load() {
		return MaxRun
	}
	b, _ := stores[0].current(s.blobData)
	if _, ok := b.(blobstore.RangeOpener); ok {
		return min(max(s.streamPace.Load()*int64(streamRunTime/time.Second), MaxRun), MaxStreamRun)
	}
	return MaxRun
}

// fillRun fetches the chunks from the first one before need that is
// neither written nor being fetched (from index i on) that start before
// end, are adjacent in the blob and neither written nor being fetched,
// with one read; each is verified on its own and written if it matches. Chunks it
// leaves unwritten (a mismatch, an error) are for the per-chunk path. It
// reports false if it fetched a run and left some of it unwritten.
func (s *blobSource) fillRun(ctx context.Context, i int, need, end int64, w BlockWriter) bool {
	run, fetches := s.claimRun(i, need, end)
	if len(run) == 0 {
		return true
	}
	run = s.fetchRun(ctx, run, fetches, w)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range run {
		if !s.written[c.off] {
			return false
		}
	}
	return true
}

// claimRun claims the run fillRun fetches (see there), up to runCap:
// none unless it has two chunks or more.
func (s *blobSource) claimRun(i int, need, end int64) ([]chunk, []*fetch) {
	maxRun := s.runCap()
	s.mu.Lock()
	var run []chunk
	var fetches []*fetch
	// Chunks at the start already written or being fetched are skipped:
	// the run starts at the first chunk the fill needs.
	for i < len(s.chunks) && s.chunks[i].off < need && (s.written[s.chunks[i].off] || s.inflight[s.chunks[i].off] != nil) {
		i++
	}
	if i >= len(s.chunks) || s.chunks[i].off >= need {
		s.mu.Unlock()
		return nil, nil
	}
	for j := i; j < len(s.chunks) && s.chunks[j].off < end; j++ {
		c := s.chunks[j]
		if c.zero || s.written[c.off] || s.inflight[c.off] != nil {
			break
		}
		if n := len(run); n > 0 && (run[n-1].off+alignUp(run[n-1].length) != c.off || c.off+alignUp(c.length)-run[0].off > maxRun) {
			break
		}
		run = append(run, c)
	}
	if len(run) < 2 {
		s.mu.Unlock()
		return nil, nil
	}
	if s.inflight == nil {
		s.inflight = map[int64]*fetch{}
	}
	for _, c := range run {
		f := &fetch{done: make(chan struct{}), err: errRunMiss}
		s.inflight[c.off] = f
		fetches = append(fetches, f)
	}
	s.mu.Unlock()
	return run, fetches
}

// fetchRun fetches a claimed run with one read and finishes every chunk
// of it; it returns the chunks it fetched (the run, or the part of it
// read into memory, see below).
func (s *blobSource) fetchRun(ctx context.Context, run []chunk, fetches []*fetch, w BlockWriter) []chunk {
	span := run[len(run)-1].off + alignUp(run[len(run)-1].length) - run[0].off
	s.stats.CoalescedFetches.Add(1)
	// A run is read from the first store; what it does not deliver is
	// fetched chunk by chunk, from every store in turn.
	var first *blobStore
	if stores := s.storeList(); len(stores) > 0 {
		first = stores[0]
	}
	if first == nil {
		s.finishRest(run, fetches, make([]atomic.Bool, len(run)))
		return run
	}
	if b, err := first.open(ctx, s.blobData); err == nil {
		if fb, ok := b.(blobstore.FileBacked); ok {
			if fc, ok := w.(FileCopier); ok && !s.noCopy.Load() && s.copyRun(ctx, fc, fb, run, fetches) {
				return run
			}
		}
		if ro, ok := b.(blobstore.RangeOpener); ok {
			s.streamRun(ctx, ro, run, fetches, span, w)
			return run
		}
	}
	if span > MaxRun {
		// Claimed for a stream (runCap) but read into memory after all
		// (the stores changed, the open failed): buffers are pooled up
		// to MaxRun, so the rest is left to the per-chunk path.
		k := 1
		for k < len(run) && run[k].off+alignUp(run[k].length)-run[0].off <= MaxRun {
			k++
		}
		s.finishRest(run[k:], fetches[k:], make([]atomic.Bool, len(run)-k))
		run, fetches = run[:k], fetches[:k]
		span = run[k-1].off + alignUp(run[k-1].length) - run[0].off
	}
	buf := s.bufs.getSize(int(span))
	defer s.bufs.put(buf)
	_, err := s.timedRead(ctx, first, buf[:span], chunk{off: run[0].off, length: span})
	// The chunks are verified and written on two goroutines: hashing is
	// most of a fill's work, and the machine has more than one core.
	var next atomic.Int32
	finished := make([]atomic.Bool, len(run))
	work := func() {
		defer func() {
			// A panic (a writer's) must not leave chunks claimed: the
			// ones not finished are finished below, for others to fetch.
			recover()
		}()
		for k := int(next.Add(1) - 1); k < len(run); k = int(next.Add(1) - 1) {
			c, f := run[k], fetches[k]
			if err == nil {
				rel := c.off - run[0].off
				if werr := s.verifyAndWrite(buf[rel:rel+alignUp(c.length)], c, w); !errors.Is(werr, ErrDigestMismatch) {
					f.err = werr
				}
			}
			finished[k].Store(true)
			s.finish(c, f)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); work() }()
	work()
	wg.Wait()
	s.finishRest(run, fetches, finished)
	return run
}

// minKernelCopy is the least a fill copies in the kernel (FileCopier):
// smaller ones, the chunks of small files, are read through a buffer,
// as mapping and unmapping the copy to check it costs more than copying
// a few blocks twice (tests/zbench, every file of the Go toolchain read
// cold: 47 MiB/s and 15.2 CPU s/GiB with the kernel copy, 58 MiB/s and
// 12.0 through a buffer).
const minKernelCopy = 128 << 10

// copyRun fetches a run from a local blob file by copying it in the
// kernel into the object and verifying each chunk where it landed (see
// FileCopier): one copy of the data instead of a read into memory and a
// write back out. Chunks that do not match, or whose padding is not
// zeros, are left to the per-chunk path (errRunMiss), which writes them
// zero padded from memory. The run is copied in pieces of up to
// copyPiece, each finished as soon as it is checked: a reader waiting
// for the first chunk does not wait for the whole run. It returns false,
// having finished nothing, when the writer refused to copy the first
// piece: the caller fetches the run itself.
func (s *blobSource) copyRun(ctx context.Context, fc FileCopier, fb blobstore.FileBacked, run []chunk, fetches []*fetch) bool {
	finished := make([]atomic.Bool, len(run))
	end := func(k int) int64 { return run[k].off + alignUp(run[k].length) }
	for i := 0; i < len(run); {
		// Up to copyPiece, but never a piece under minKernelCopy where
		// the run goes on (a short file's tail before a big chunk), nor
		// such a remainder after it: those are not copied in the kernel.
		j := i + 1
		for j < len(run) && (end(j)-run[i].off <= copyPiece || end(j-1)-run[i].off < minKernelCopy) {
			j++
		}
		if j < len(run) && end(len(run)-1)-run[j].off < minKernelCopy {
			j = len(run)
		}
		verified, err := s.copyVerify(ctx, fc, fb, run[i:j])
		if errors.Is(err, ErrNotCopied) {
			if i == 0 {
				return false
			}
			break // the rest goes to the per-chunk path
		}
		for k := i; k < j; k++ {
			f := fetches[k]
			switch {
			case err == nil && verified[k-i]:
				f.err = nil
			case err == nil:
				s.stats.DigestFailures.Add(1)
			}
			finished[k].Store(true)
			s.finish(run[k], f)
		}
		if err != nil {
			break
		}
		i = j
	}
	s.finishRest(run, fetches, finished)
	return true
}

// copyPiece bounds one kernel copy of a run (tests/fanbench: 2 MiB pieces
// of 8 MiB runs, 866-925 MiB/s against 788-894 copying whole runs, in 3
// alternated runs).
const copyPiece = 2 << 20

// copyVerify copies adjacent chunks (from the first one's offset to the
// last one's padded end) from a local blob file into the object and
// reports which matched their digest where they landed; those are
// written. An ErrNotCopied error (also for spans under minKernelCopy)
// wrote nothing: the caller reads the chunks itself.
func (s *blobSource) copyVerify(ctx context.Context, fc FileCopier, fb blobstore.FileBacked, run []chunk) ([]bool, error) {
	last := run[len(run)-1]
	span := last.off + alignUp(last.length) - run[0].off
	if span < minKernelCopy {
		return nil, ErrNotCopied
	}
	start := time.Now()
	verified := make([]bool, len(run))
	err := fc.CopyFrom(ctx, fb.File(), run[0].off, span, func(data []byte) [][2]int64 {
		fb.Copied(int64(len(data)))
		// Hashing is most of the work: two goroutines when there are
		// several chunks, as the machine has more than one core.
		var next atomic.Int32
		work := func() {
			// data maps a file: a fault reading it (the file shrank
			// under the mapping) leaves the chunks not yet checked
			// unverified instead of killing the daemon.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() { recover() }()
			for k := int(next.Add(1) - 1); k < len(run); k = int(next.Add(1) - 1) {
				c := run[k]
				rel := c.off - run[0].off
				verified[k] = s.matches(&c, data[rel:rel+c.length]) && allZero(data[rel+c.length:rel+alignUp(c.length)])
			}
		}
		var wg sync.WaitGroup
		if len(run) > 1 {
			wg.Go(work)
		}
		work()
		wg.Wait()
		var good [][2]int64
		for k, c := range run {
			if verified[k] {
				good = append(good, [2]int64{c.off, c.off + alignUp(c.length)})
			}
		}
		return good
	})
	if errors.Is(err, ErrNotCopied) {
		if errors.Is(err, errors.ErrUnsupported) {
			// This store's files cannot be copied into the cache's
			// filesystem (another filesystem, say): not worth trying
			// again for every run.
			s.noCopy.Store(true)
		}
		return nil, err
	}
	if s.latency != nil {
		s.latency.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		return nil, err
	}
	for k, c := range run {
		if verified[k] {
			s.stats.Fetches.Add(1)
			s.stats.FetchedBytes.Add(c.length)
			s.stats.CopiedBytes.Add(c.length)
		}
	}
	return verified, nil
}

// allZero reports whether p holds only zero bytes.
func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// finishRest finishes the fetches of a run that were not finished (a
// panic cut the run short), as not delivered: whoever waits fetches them.
func (s *blobSource) finishRest(run []chunk, fetches []*fetch, finished []atomic.Bool) {
	for k := range run {
		if !finished[k].Load() {
			fetches[k].err = errRunMiss
			s.finish(run[k], fetches[k])
		}
	}
}

// streamRun fetches a run of adjacent chunks with one streamed read and
// verifies and writes each chunk as soon as its bytes are in, waking
// whoever waits for it: a reader of the first chunk does not wait for
// the last. Chunks the stream does not deliver are left to the per-chunk
// path (errRunMiss).
func (s *blobSource) streamRun(ctx context.Context, ro blobstore.RangeOpener, run []chunk, fetches []*fetch, span int64, w BlockWriter) {
	start := time.Now()
	rc, err := ro.OpenRange(ctx, run[0].off, span)
	if err == nil {
		defer rc.Close()
	}
	// Two stages: a goroutine receives the next chunk while two others
	// (this one and a helper) verify and write the ones before, so the
	// network and the hashing overlap.
	type piece struct {
		k   int
		buf []byte
		err error
	}
	received := make(chan piece, 1)
	quit := make(chan struct{})
	go func() {
		defer close(received)
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic reading a stream: %v", p)
			}
		}()
		for k, c := range run {
			var p []byte
			if err == nil {
				p = s.bufs.getSize(int(alignUp(c.length)))
				_, err = io.ReadFull(rc, p)
				switch {
				case err == nil && k == len(run)-1 && span >= minPaceSpan:
					s.streamPace.Store(int64(float64(span) / max(time.Since(start).Seconds(), 1e-6)))
				case err != nil && ctx.Err() == nil:
					s.streamPace.Store(0) // its pace is unknown again
				}
			}
			select {
			case received <- piece{k, p, err}:
			case <-quit:
				s.bufs.put(p)
				return
			}
		}
	}()
	finished := make([]atomic.Bool, len(run))
	var wg sync.WaitGroup
	defer func() {
		// Whatever happened (a panic in a writer), the receiver stops,
		// the helper is done, and every chunk of the run is finished.
		close(quit)
		for p := range received {
			s.bufs.put(p.buf)
		}
		wg.Wait()
		s.finishRest(run, fetches, finished)
	}()
	consume := func() {
		for p := range received {
			c, f := run[p.k], fetches[p.k]
			if p.err == nil {
				if werr := s.verifyAndWrite(p.buf, c, w); !errors.Is(werr, ErrDigestMismatch) {
					f.err = werr
				} else {
					s.badStreams.Store(true)
				}
			} else if ctx.Err() == nil {
				s.badStreams.Store(true)
			}
			if p.buf != nil {
				s.bufs.put(p.buf)
			}
			finished[p.k].Store(true)
			s.finish(c, f)
		}
	}
	// Chunks are verified and written on two goroutines, as they come:
	// hashing is most of the work, slower than loopback or a fast link
	// deliver, and the machine has more than one core.
	if len(run) > 1 {
		wg.Go(func() {
			defer func() {
				// A writer's panic: the chunk it held is finished by
				// finishRest, the other goroutine carries on.
				recover()
			}()
			consume()
		})
	}
	consume()
	wg.Wait()
	if s.latency != nil {
		s.latency.Observe(time.Since(start).Seconds())
	}
}

// finish ends a fetch of chunk c: the chunk counts as written if it
// succeeded, and whoever waits for it is woken.
func (s *blobSource) finish(c chunk, f *fetch) {
	s.mu.Lock()
	delete(s.inflight, c.off)
	if f.err == nil {
		if s.written == nil {
			s.written = map[int64]bool{}
		}
		s.written[c.off] = true
	}
	s.mu.Unlock()
	close(f.done)
}

// verifyAndWrite checks chunk c's data at the start of buf (its padded
// size) against the digest table and writes it, zero padded, if it
// matches: the padding read from the blob is not trusted.
func (s *blobSource) verifyAndWrite(buf []byte, c chunk, w BlockWriter) error {
	if !s.matches(&c, buf[:c.length]) {
		s.stats.DigestFailures.Add(1)
		return fmt.Errorf("%w: %s chunk at %d (%d bytes)", ErrDigestMismatch, s.digest, c.off, c.length)
	}
	clear(buf[c.length:])
	s.stats.Fetches.Add(1)
	s.stats.FetchedBytes.Add(c.length)
	return w.WriteBlocks(buf, c.off)
}

// timedRead reads a chunk (or a run of chunks) from one store and
// observes the latency.
func (s *blobSource) timedRead(ctx context.Context, bs *blobStore, data []byte, c chunk) (string, error) {
	start := time.Now()
	host, err := s.readChunk(ctx, bs, data, c)
	if s.latency != nil {
		s.latency.Observe(time.Since(start).Seconds())
	}
	return host, err
}

// errRunMiss marks a chunk a coalesced fetch did not deliver; whoever
// waits for it fetches it alone.
var errRunMiss = errors.New("chunk not delivered by a coalesced fetch")

// fillChunk fetches, verifies and writes one chunk. A concurrent caller
// asking for the same chunk waits for the first one instead of fetching
// again: both write into the same object, so one write serves both.
func (s *blobSource) fillChunk(ctx context.Context, c chunk, w BlockWriter) error {
	for {
		s.mu.Lock()
		if s.written[c.off] {
			s.mu.Unlock()
			return nil
		}
		f, busy := s.inflight[c.off]
		if !busy {
			f = &fetch{done: make(chan struct{})}
			if s.inflight == nil {
				s.inflight = map[int64]*fetch{}
			}
			s.inflight[c.off] = f
			s.mu.Unlock()
			return s.fetchOwned(ctx, c, f, w)
		}
		s.mu.Unlock()
		s.stats.Coalesced.Add(1)
		select {
		case <-f.done:
			if f.err == nil {
				return nil
			}
			// The other fill failed (its context may have ended, or
			// the store failed): try again ourselves.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fetchOwned fetches chunk c for f, the fetch this fill claimed, and
// finishes it, also when fetching panics (the front end recovers it): a
// chunk left claimed would hold every later read of it until its
// timeout. Waiters then fetch it themselves.
func (s *blobSource) fetchOwned(ctx context.Context, c chunk, f *fetch, w BlockWriter) error {
	f.err = errRunMiss
	defer s.finish(c, f)
	f.err = s.fetchChunk(ctx, c, w)
	return f.err
}

// fetchChunk fetches chunk c, verifies it and writes it. The image's
// stores are tried in turn: a store that fails or serves data that does
// not match (twice: a mirror that served it is distrusted in between)
// passes the chunk on to the next, so that an image sharing this blob
// with a broken or lying store still reads from its own. The all-zero
// chunk is written without fetching.
func (s *blobSource) fetchChunk(ctx context.Context, c chunk, w BlockWriter) error {
	padded := alignUp(c.length)
	if c.zero {
		if !s.matchesZeros(&c) {
			s.stats.DigestFailures.Add(1)
			return fmt.Errorf("%w: %s all-zero chunk at %d (%d bytes): not its step of the blob's sha256", ErrDigestMismatch, s.digest, c.off, c.length)
		}
		s.stats.ZeroChunks.Add(1)
		return writeZeros(w, c.off, c.off+padded, s.bufs)
	}
	stores := s.storeList()
	if len(stores) == 0 {
		return fmt.Errorf("%s: no blob store to fetch from", s.digest)
	}
	if fc, ok := w.(FileCopier); ok && !s.noCopy.Load() {
		// From a local blob file: copied in the kernel and checked
		// where it lands. If that does not write it (a mismatch, a
		// refusal), the stores are read as below.
		if b, err := stores[0].open(ctx, s.blobData); err == nil {
			if fb, ok := b.(blobstore.FileBacked); ok {
				if verified, err := s.copyVerify(ctx, fc, fb, []chunk{c}); err == nil && verified[0] {
					return nil
				} else if err == nil {
					s.stats.DigestFailures.Add(1)
				}
			}
		}
	}
	buf := s.bufs.getSize(int(padded))
	defer s.bufs.put(buf)
	if b, err := stores[0].open(ctx, s.blobData); err == nil {
		if ro, ok := b.(blobstore.RangeOpener); ok && !s.badStreams.Load() {
			// From a remote store: hashed as it arrives, so that a
			// reader waiting for this chunk waits for the transfer
			// and the hash of its last piece, not for both in turn.
			// If that does not write it, the stores are read below
			// (which names and distrusts a mirror that lied).
			err := s.streamChunk(ctx, ro, c, buf[:padded], w)
			if err == nil || ctx.Err() != nil {
				return err
			}
			if !errors.Is(err, ErrDigestMismatch) && !isStoreError(err) {
				return err // the cache write failed: another read cannot help
			}
			s.badStreams.Store(true)
		}
	}
	var errs []error
	for _, bs := range stores {
		var err error
		for attempt := 0; attempt < 2; attempt++ {
			var host string
			if host, err = s.timedRead(ctx, bs, buf[:c.length], c); err != nil {
				continue
			}
			if err = s.verifyAndWrite(buf[:padded], c, w); !errors.Is(err, ErrDigestMismatch) {
				break
			}
			bs.distrust(host)
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !errors.Is(err, ErrDigestMismatch) && !isStoreError(err) {
			return err // the cache write failed: another store cannot help
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// streamPiece is how much of a streamed chunk is received before it is
// hashed: small enough that the hash of the last piece is all a reader
// waits for after the transfer, large enough that the hashing runs
// in long strides.
const streamPiece = 128 << 10

// streamChunk fetches chunk c into buf (its padded size) with one
// streamed range read, hashing each piece as it arrives, and writes it,
// zero padded, if it matches. A StagedWriter gets each piece as it is
// in, unverified: what the reader then waits for after the transfer is
// the hash of the last piece, not a write of the whole chunk too. Store
// failures come back as storeErrors.
func (s *blobSource) streamChunk(ctx context.Context, ro blobstore.RangeOpener, c chunk, buf []byte, w BlockWriter) error {
	start := time.Now()
	rc, err := ro.OpenRange(ctx, c.off, c.length)
	if err != nil {
		return &storeError{fmt.Errorf("%s: reading chunk at %d: %w", s.digest, c.off, err)}
	}
	defer rc.Close()
	// receive reads the chunk into buf, hands each piece (the last with
	// the zero padding) to write unless it is nil, and reports whether
	// the chunk matched its digest.
	receive := func(write func(p []byte, at int64) error) (bool, error) {
		h := s.newCheck(&c)
		for pos := int64(0); pos < c.length; {
			n := min(streamPiece, c.length-pos)
			if _, err := io.ReadFull(rc, buf[pos:pos+n]); err != nil {
				return false, &storeError{fmt.Errorf("%s: reading chunk at %d: %w", s.digest, c.off, err)}
			}
			h.Write(buf[pos : pos+n])
			end := pos + n
			if end == c.length {
				clear(buf[c.length:])
				end = int64(len(buf))
			}
			if write != nil {
				if err := write(buf[pos:end], c.off+pos); err != nil {
					return false, err
				}
			}
			pos += n
		}
		if s.latency != nil {
			s.latency.Observe(time.Since(start).Seconds())
		}
		if !h.matches() {
			s.stats.DigestFailures.Add(1)
			return false, nil
		}
		return true, nil
	}
	var ok, staged bool
	if sw, isStaged := w.(StagedWriter); isStaged {
		err = sw.WriteStaged(ctx, c.off, int64(len(buf)), func(write func(p []byte, at int64) error) (bool, error) {
			var err error
			ok, err = receive(write)
			return ok, err
		})
		// Refused before anything was received: written below instead.
		staged = !errors.Is(err, ErrNotCopied)
	}
	if !staged {
		ok, err = receive(nil)
	}
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s chunk at %d (%d bytes)", ErrDigestMismatch, s.digest, c.off, c.length)
	}
	s.stats.Fetches.Add(1)
	s.stats.FetchedBytes.Add(c.length)
	if staged {
		return nil
	}
	return w.WriteBlocks(buf, c.off)
}

// readChunk reads a chunk (or a run) from one store and, from a blob
// with several hosts, names the one that answered.
func (s *blobSource) readChunk(ctx context.Context, bs *blobStore, data []byte, c chunk) (string, error) {
	b, err := bs.open(ctx, s.blobData)
	if err != nil {
		return "", &storeError{err}
	}
	var n int
	var host string
	if ds, ok := b.(blobstore.Distruster); ok {
		n, host, err = ds.ReadAtFrom(ctx, data, c.off)
	} else {
		n, err = b.ReadAt(ctx, data, c.off)
	}
	if n == len(data) {
		return host, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return host, &storeError{fmt.Errorf("%s: reading chunk at %d: %w", s.digest, c.off, err)}
}

// storeError marks an error of a blob store (as opposed to one writing
// the cache), after which another store may be tried.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func isStoreError(err error) bool {
	var se *storeError
	return errors.As(err, &se)
}

func writeZeros(w BlockWriter, from, to int64, bufs *bufferPool) error {
	if from >= to {
		return nil
	}
	buf := bufs.get()
	defer bufs.put(buf)
	clear(buf)
	for pos := from; pos < to; {
		n := min(int64(len(buf)), to-pos)
		if err := w.WriteBlocks(buf[:n], pos); err != nil {
			return err
		}
		pos += n
	}
	return nil
}

// chunksOf returns device dev's chunks from an image's digest table,
// marking the all-zero ones, and their states if the image records them
// (states: one per table entry, or nil).
func chunksOf(table []erofs.ChunkDigest, states []sha256chain.State, dev int, zeros zeroDigests) ([]chunk, []sha256chain.State) {
	var out []chunk
	var outStates []sha256chain.State
	for i, e := range table {
		if int(e.Device) == dev {
			out = append(out, chunk{off: int64(e.BlkAddr) * BlockSize, length: int64(e.Length), digest: e.Digest, zero: zeros.is(e.Length, e.Digest)})
			if states != nil {
				outStates = append(outStates, states[i])
			}
		}
	}
	return out, outStates
}

// zeroDigests recognises the digests of all-zero chunks. Builders store
// one zero chunk a whole chunk long, a power of two, for the holes of
// sparse files; only those lengths are considered, each hashed once.
type zeroDigests map[uint32][32]byte

func (z zeroDigests) is(length uint32, digest [32]byte) bool {
	if length < BlockSize || length&(length-1) != 0 {
		return false
	}
	d, ok := z[length]
	if !ok {
		d = zeroDigest(length)
		z[length] = d
	}
	return d == digest
}

// zeroDigest returns the sha256 of length zero bytes.
func zeroDigest(length uint32) [32]byte {
	h := sha256.New()
	block := make([]byte, min(length, 1<<20))
	for left := length; left > 0; {
		n := min(left, uint32(len(block)))
		h.Write(block[:n])
		left -= n
	}
	return [32]byte(h.Sum(nil))
}
