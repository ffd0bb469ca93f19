package build

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// chunkRef locates one chunk of a chunk-based file: a block on a device
// (0: the image itself, 1..N: external blobs), or a sparse hole.
type chunkRef struct {
	dev  uint16
	blk  uint32
	back bool // blk counts from the start of the blob's back segment until Finish relocates it
}

var sparseRef = chunkRef{blk: disk.NullAddr}

// fileData records where a regular file's bytes were put.
type fileData struct {
	flat      bool       // contiguous blocks starting at blkaddr (self-contained, no holes)
	blkaddr   uint32     // flat: first block (NullAddr when the file has no full block)
	chunks    []chunkRef // chunk-based: one per chunk
	chunkBits uint8      // chunk size = blksz << chunkBits
	tail      []byte     // flat: bytes after the last full block, to inline or write later
}

// blockWriter appends whole blocks to a sequential output and tracks the
// next free block number. Filled buffers are written (and hashed) by a
// goroutine of its own, so reading the next input overlaps with writing.
type blockWriter struct {
	next   uint64 // next block number
	cur    []byte
	q      chan []byte
	free   chan []byte
	done   chan struct{}
	err    atomic.Pointer[error]
	closed bool
}

const (
	writeBufSize = 1 << 20
	writeBufs    = 4
)

func newBlockWriter(w io.Writer, first uint64, h hash.Hash) *blockWriter {
	bw := &blockWriter{
		next: first,
		q:    make(chan []byte, writeBufs),
		free: make(chan []byte, writeBufs),
		done: make(chan struct{}),
	}
	for range writeBufs - 1 {
		bw.free <- make([]byte, 0, writeBufSize)
	}
	bw.cur = make([]byte, 0, writeBufSize)
	go bw.loop(w, h)
	return bw
}

func (bw *blockWriter) loop(w io.Writer, h hash.Hash) {
	defer close(bw.done)
	for buf := range bw.q {
		if bw.err.Load() == nil {
			if _, err := w.Write(buf); err != nil {
				bw.err.Store(&err)
			} else if h != nil {
				h.Write(buf)
			}
		}
		bw.free <- buf[:0]
	}
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
			bw.q <- bw.cur
			bw.cur = <-bw.free
		}
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
			bw.q <- bw.cur
		}
		close(bw.q)
		<-bw.done
	}
	return bw.failed()
}

var zeroBlock = make([]byte, blockSize)

// blob is a content-addressed file receiving chunk data in blob mode.
//
// With a start set (Options.PrefetchList), a blob has two segments: the
// chunks a workload reads first go to the front (f), the others to a back
// file, appended to the front when the blob is finished. Back chunks' block
// numbers count from the back segment's start until then.
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

	backF       *os.File // nil until the first back chunk
	backBW      *blockWriter
	backTable   []disk.ChunkEntry
	frontChunks int    // chunks put in the front as start-set chunks
	rank        int    // smallest start-set rank of those chunks
	frontBlocks uint32 // set by finish: where the back segment starts
	// extraStart are start-set chunks found stored in the back already
	// (deduplicated), by back-segment block.
	extraStart map[uint32]extraStart
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

// put stores one chunk in the front segment, or with back in the back
// one, and returns its start block there.
func (b *blob) put(p []byte, digest [32]byte, back bool) (uint32, error) {
	bw, table := b.bw, &b.table
	if back {
		if b.backF == nil {
			f, err := os.CreateTemp(b.dir, ".blob-back-*.tmp")
			if err != nil {
				return 0, fmt.Errorf("creating blob in %s: %w", b.dir, err)
			}
			b.backF, b.backBW = f, newBlockWriter(f, 0, nil)
		}
		bw, table = b.backBW, &b.backTable
	}
	blk, err := bw.write(p)
	if err != nil {
		return 0, fmt.Errorf("writing blob: %w", err)
	}
	*table = append(*table, disk.ChunkEntry{DeviceID: b.device, BlkAddr: uint32(blk), Length: uint32(len(p)), Digest: digest})
	return uint32(blk), nil
}

// appendBack appends the back segment to the front one and relocates the
// back chunks' table entries.
func (b *blob) appendBack() error {
	b.frontBlocks = uint32(b.bw.next)
	if b.backF == nil {
		return nil
	}
	if err := b.backBW.flush(); err != nil {
		return fmt.Errorf("writing blob: %w", err)
	}
	if b.bw.next+b.backBW.next > disk.NullAddr {
		return fmt.Errorf("%w: more than 2^32-1 blocks", ErrTooLarge)
	}
	buf := make([]byte, writeBufSize)
	for off := int64(0); ; {
		n, err := b.backF.ReadAt(buf, off)
		if n > 0 {
			if _, werr := b.bw.write(buf[:n]); werr != nil {
				return fmt.Errorf("writing blob: %w", werr)
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading back segment of blob: %w", err)
		}
	}
	for _, e := range b.backTable {
		e.BlkAddr += b.frontBlocks
		b.table = append(b.table, e)
	}
	b.backTable = nil
	b.closeBack()
	return nil
}

func (b *blob) closeBack() {
	if b.backF != nil {
		b.backBW.flush()
		name := b.backF.Name()
		b.backF.Close()
		os.Remove(name)
		b.backF = nil
	}
}

// finish flushes the blob and renames it to its sha256 hex digest.
func (b *blob) finish() (digest string, size int64, err error) {
	if err := b.appendBack(); err != nil {
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
	b.closeBack()
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
}

// crcTable feeds the image UUID derivation in self-contained mode.
var crcTable = crc32.MakeTable(crc32.Castagnoli)
