package build

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/internal/sha256chain"
)

// chunkRef locates one chunk of a chunk-based file: a block on a device
// (0: the image itself, 1..N: external blobs), or a sparse hole.
type chunkRef struct {
	dev uint16
	blk uint32
	// front and back: blk counts in the blob's front or back scratch
	// segment until Finish relocates it.
	front, back bool
}

var sparseRef = chunkRef{blk: disk.NullAddr}

// fileData records where a regular file's bytes were put.
type fileData struct {
	flat      bool       // contiguous blocks starting at blkaddr (self-contained, no holes)
	blkaddr   uint32     // flat: first block (NullAddr when the file has no full block)
	chunks    []chunkRef // chunk-based: one per chunk
	chunkBits uint8      // chunk size = blksz << chunkBits
	tail      []byte     // flat: bytes after the last full block, to inline or write later
	z         *zinode    // compressed: the extents and their pclusters
	packed    *zloc      // a file of one chunk in a blob pack (PackSmallFiles), until Finish resolves it into chunks
}

// blockWriter appends whole blocks to a sequential output and tracks the
// next free block number. Filled buffers are written (and hashed) by a
// goroutine of its own, so reading the next input overlaps with writing.
type blockWriter struct {
	next   uint64 // next block number
	cur    []byte
	q      chan filledBuf
	free   chan []byte
	done   chan struct{}
	err    atomic.Pointer[error]
	closed bool

	// With a hash: where in cur chunks start (markChunk), and the
	// hash's state at each chunk's start by block number (complete once
	// flush returns), which the chunk states section records.
	marks  []int
	states map[uint64]sha256chain.State
}

// filledBuf is a buffer for the writer goroutine, and where in it chunks
// start.
type filledBuf struct {
	buf   []byte
	marks []int
}

const (
	writeBufSize = 1 << 20
	writeBufs    = 4
)

func newBlockWriter(w io.Writer, first uint64, h hash.Hash) *blockWriter {
	bw := &blockWriter{
		next: first,
		q:    make(chan filledBuf, writeBufs),
		free: make(chan []byte, writeBufs),
		done: make(chan struct{}),
	}
	if h != nil {
		bw.states = map[uint64]sha256chain.State{}
	}
	for range writeBufs - 1 {
		bw.free <- make([]byte, 0, writeBufSize)
	}
	bw.cur = make([]byte, 0, writeBufSize)
	go bw.loop(w, h, first*blockSize)
	return bw
}

// loop writes and hashes the filled buffers; pos is where the next one
// goes.
func (bw *blockWriter) loop(w io.Writer, h hash.Hash, pos uint64) {
	defer close(bw.done)
	for fb := range bw.q {
		buf := fb.buf
		if bw.err.Load() == nil {
			if _, err := w.Write(buf); err != nil {
				bw.err.Store(&err)
			} else if h != nil {
				bw.hashMarked(h, fb, pos)
			}
		}
		pos += uint64(len(buf))
		bw.free <- buf[:0]
	}
}

// hashMarked hashes a buffer that starts at byte pos, recording the
// state at each chunk's start.
func (bw *blockWriter) hashMarked(h hash.Hash, fb filledBuf, pos uint64) {
	done := 0
	for _, m := range fb.marks {
		h.Write(fb.buf[done:m])
		done = m
		// Chunks start at block boundaries, whole SHA-256 blocks in.
		st, err := sha256chain.Of(h)
		if err != nil {
			err = fmt.Errorf("the blob's sha256 state at byte %d: %w", pos+uint64(m), err)
			bw.err.Store(&err)
			return
		}
		bw.states[(pos+uint64(m))/blockSize] = st
	}
	h.Write(fb.buf[done:])
}

func (bw *blockWriter) failed() error {
	if e := bw.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (bw *blockWriter) append(p []byte) {
	for len(p) > 0 {
		n := copy(bw.cur[len(bw.cur):cap(bw.cur)], p)
		bw.cur = bw.cur[:len(bw.cur)+n]
		p = p[n:]
		if len(bw.cur) == cap(bw.cur) {
			bw.q <- filledBuf{bw.cur, bw.marks}
			bw.cur, bw.marks = <-bw.free, nil
		}
	}
}

// markChunk records the hash's state where the next write starts, a
// chunk's start; a writer without a hash records nothing.
func (bw *blockWriter) markChunk() {
	if bw.states != nil {
		bw.marks = append(bw.marks, len(bw.cur)) // never full between writes
	}
}

// write appends p padded with zeros to whole blocks and returns the first
// block number it occupies.
func (bw *blockWriter) write(p []byte) (uint64, error) {
	if err := bw.failed(); err != nil {
		return 0, err
	}
	start := bw.next
	blocks := uint64(disk.AlignUp(len(p), blockSize) / blockSize)
	if start+blocks > disk.NullAddr {
		return 0, fmt.Errorf("%w: more than 2^32-1 blocks", ErrTooLarge)
	}
	bw.append(p)
	if pad := disk.AlignUp(len(p), blockSize) - len(p); pad > 0 {
		bw.append(zeroBlock[:pad])
	}
	bw.next += blocks
	return start, nil
}

// flush writes out everything and stops the writer goroutine; the
// blockWriter cannot be written to afterwards. Safe to call twice.
func (bw *blockWriter) flush() error {
	if !bw.closed {
		bw.closed = true
		if len(bw.cur) > 0 {
			bw.q <- filledBuf{bw.cur, bw.marks}
		}
		close(bw.q)
		<-bw.done
	}
	return bw.failed()
}

var zeroBlock = make([]byte, blockSize)

// blob is a content-addressed file receiving chunk data in blob mode.
//
// With a start set (Options.PrefetchList), chunks go to one of two
// scratch segments first: the chunks a workload reads first to the front,
// the others to the back. Finish writes the front's chunks in list order
// (a tar adds files in its own order), then the back, and the chunk
// references are relocated: front ones through frontMap, back ones by the
// front's size. Without a start set chunks are written in place.
type blob struct {
	dir    string
	f      *os.File
	bw     *blockWriter
	sha    hash.Hash
	table  []disk.ChunkEntry
	device uint16
	layer  int    // the AddLayer call that started it (0: not from a layer)
	digest string // set by finish
	size   int64

	front, back segment
	frontChunks []frontChunk      // in the order they came
	frontMap    map[uint32]uint32 // set by finish: front scratch block → blob block
	frontBlocks uint32            // set by finish: where the back segment starts
	// extraStart are start-set chunks found stored in the back already
	// (deduplicated), by back-segment block.
	extraStart map[uint32]extraStart
}

// segment is a scratch file of whole blocks.
type segment struct {
	f     *os.File // nil until the first chunk
	bw    *blockWriter
	table []disk.ChunkEntry
}

// frontChunk is a start-set chunk in the front scratch segment.
type frontChunk struct {
	blk    uint32 // in the scratch segment
	length uint32
	digest [32]byte
	rank   int
}

// Segments of put.
const (
	inPlace = iota // no start set
	inFront
	inBack
)

// frontRank is the smallest start-set rank of the front's chunks.
func (b *blob) frontRank() int {
	r := b.frontChunks[0].rank
	for _, c := range b.frontChunks[1:] {
		r = min(r, c.rank)
	}
	return r
}

// extraStart is a start-set chunk in a blob's back segment.
type extraStart struct {
	blocks uint32
	rank   int
}

func (b *blob) addExtraStart(blk, blocks uint32, rank int) {
	if b.extraStart == nil {
		b.extraStart = map[uint32]extraStart{}
	}
	if e, ok := b.extraStart[blk]; !ok || rank < e.rank {
		b.extraStart[blk] = extraStart{blocks: blocks, rank: rank}
	}
}

type chunkKey struct {
	digest [32]byte
	length uint32
}

func newBlob(dir string, device uint16, layer int) (*blob, error) {
	f, err := os.CreateTemp(dir, ".blob-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("creating blob in %s: %w", dir, err)
	}
	h := sha256.New()
	return &blob{dir: dir, f: f, sha: h, bw: newBlockWriter(f, 0, h), device: device, layer: layer}, nil
}

// put stores one chunk in place or in a scratch segment (inFront with
// its start-set rank, inBack) and returns its start block there.
func (b *blob) put(p []byte, digest [32]byte, seg, rank int) (uint32, error) {
	bw, table := b.bw, &b.table
	if seg != inPlace {
		sg := &b.back
		if seg == inFront {
			sg = &b.front
		}
		if sg.f == nil {
			f, err := os.CreateTemp(b.dir, ".blob-part-*.tmp")
			if err != nil {
				return 0, fmt.Errorf("creating blob in %s: %w", b.dir, err)
			}
			sg.f, sg.bw = f, newBlockWriter(f, 0, nil)
		}
		bw, table = sg.bw, &sg.table
	}
	bw.markChunk()
	blk, err := bw.write(p)
	if err != nil {
		return 0, fmt.Errorf("writing blob: %w", err)
	}
	if seg == inFront {
		b.frontChunks = append(b.frontChunks, frontChunk{blk: uint32(blk), length: uint32(len(p)), digest: digest, rank: rank})
		return uint32(blk), nil
	}
	*table = append(*table, disk.ChunkEntry{DeviceID: b.device, BlkAddr: uint32(blk), Length: uint32(len(p)), Digest: digest})
	return uint32(blk), nil
}

// assemble writes the scratch segments into the blob: the front's chunks
// by rank (stable: a chunk's place among equals is the order it came),
// then the back whole, and relocates their table entries.
func (b *blob) assemble() error {
	var buf []byte // copyBlocks's, reused
	if b.front.f != nil {
		if err := b.front.bw.flush(); err != nil {
			return fmt.Errorf("writing blob: %w", err)
		}
		order := slices.Clone(b.frontChunks)
		slices.SortStableFunc(order, func(x, y frontChunk) int { return cmp.Compare(x.rank, y.rank) })
		b.frontMap = make(map[uint32]uint32, len(order))
		for _, c := range order {
			b.bw.markChunk()
			blk, err := copyBlocks(b.bw, b.front.f, int64(c.blk)*blockSize, int64(disk.AlignUp(int(c.length), blockSize)), &buf)
			if err != nil {
				return err
			}
			b.frontMap[c.blk] = uint32(blk)
			b.table = append(b.table, disk.ChunkEntry{DeviceID: b.device, BlkAddr: uint32(blk), Length: c.length, Digest: c.digest})
		}
	}
	b.frontBlocks = uint32(b.bw.next)
	if b.back.f != nil {
		if err := b.back.bw.flush(); err != nil {
			return fmt.Errorf("writing blob: %w", err)
		}
		// Chunk by chunk, so that the state before each is recorded.
		var from uint64
		for i := range b.back.table {
			b.bw.markChunk()
			end := b.back.bw.next
			if i+1 < len(b.back.table) {
				end = uint64(b.back.table[i+1].BlkAddr)
			}
			if _, err := copyBlocks(b.bw, b.back.f, int64(from)*blockSize, int64(end-from)*blockSize, &buf); err != nil {
				return err
			}
			from = end
		}
		for _, e := range b.back.table {
			e.BlkAddr += b.frontBlocks
			b.table = append(b.table, e)
		}
	}
	b.closeSegments()
	return nil
}

// copyBlocks appends n bytes (whole blocks) of f from off to bw and
// returns the first block they occupy.
func copyBlocks(bw *blockWriter, f *os.File, off, n int64, bufp *[]byte) (uint64, error) {
	first := bw.next
	if first+uint64(n/blockSize) > disk.NullAddr {
		return 0, fmt.Errorf("%w: more than 2^32-1 blocks", ErrTooLarge)
	}
	if int64(len(*bufp)) < min(n, writeBufSize) {
		*bufp = make([]byte, min(n, writeBufSize))
	}
	buf := *bufp
	for n > 0 {
		k, err := f.ReadAt(buf[:min(n, int64(len(buf)))], off)
		if k > 0 {
			if _, werr := bw.write(buf[:k]); werr != nil {
				return 0, fmt.Errorf("writing blob: %w", werr)
			}
			off, n = off+int64(k), n-int64(k)
		}
		if n > 0 && err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("reading a scratch segment of the blob: %w", err)
		}
	}
	return first, nil
}

func (b *blob) closeSegments() {
	for _, sg := range []*segment{&b.front, &b.back} {
		if sg.f != nil {
			sg.bw.flush()
			name := sg.f.Name()
			sg.f.Close()
			os.Remove(name)
			sg.f = nil
		}
	}
}

// finish flushes the blob and renames it to its sha256 hex digest.
func (b *blob) finish() (digest string, size int64, err error) {
	if err := b.assemble(); err != nil {
		return "", 0, err
	}
	if err := b.bw.flush(); err != nil {
		return "", 0, fmt.Errorf("writing blob: %w", err)
	}
	digest = hex.EncodeToString(b.sha.Sum(nil))
	size = int64(b.bw.next) * blockSize
	b.digest, b.size = digest, size
	tmp := b.f.Name()
	if err := b.f.Close(); err != nil {
		return "", 0, err
	}
	b.f = nil
	if err := os.Chmod(tmp, 0o644); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, filepath.Join(b.dir, digest)); err != nil {
		return "", 0, fmt.Errorf("naming blob: %w", err)
	}
	return digest, size, nil
}

// abort removes an unfinished blob.
func (b *blob) abort() {
	b.closeSegments()
	b.bw.flush()
	if b.f != nil {
		name := b.f.Name()
		b.f.Close()
		os.Remove(name)
		b.f = nil
	}
}

// holeFunc reports whether [off, off+n) of a source file is known to be a
// hole, so that it need not be read.
type holeFunc func(off, n int64) bool

var errShortFile = errors.New("file is shorter than its recorded size")

// isZero reports whether p is all zero bytes.
func isZero(p []byte) bool {
	for len(p) >= blockSize {
		if !bytes.Equal(p[:blockSize], zeroBlock) {
			return false
		}
		p = p[blockSize:]
	}
	return bytes.Equal(p, zeroBlock[:len(p)])
}

// dataStats accumulates figures for the build summary.
type dataStats struct {
	bytes       int64 // logical bytes of regular files
	chunks      int   // chunks referenced in blobs (incl. duplicates)
	unique      int   // chunks stored
	dedupeSaved int64 // bytes not stored thanks to dedupe
	holeBytes   int64 // bytes of zero chunks stored as holes (sparse or the zero chunk)

	zfiles       int   // files stored compressed
	zinline      int   // of them, with an inline (ztailpacking) tail pcluster
	zdedupeSaved int64 // decoded bytes of extents that share a pcluster stored before
}

// crcTable feeds the image UUID derivation in self-contained mode.
var crcTable = crc32.MakeTable(crc32.Castagnoli)
