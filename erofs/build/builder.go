// Package build writes EROFS images from directory trees and tar streams.
//
// Images are uncompressed, use 4096-byte blocks and only the features a
// Linux 6.1 kernel accepts, so they mount in fscache (on-demand) mode as
// well as file-backed or from a loop device on current kernels. File data
// either stays inside the image (flat layouts with tail packing, chunk
// maps for sparse files) or goes, chunk by chunk and deduplicated, into an
// external blob named by its sha256 digest; the image then records every
// chunk's digest in a table the kernel ignores, so a daemon can verify
// data fetched from an untrusted store.
//
// The builder streams file data straight to its destination: data blocks
// come first in the image, metadata after them, so memory grows with the
// number of files, not with their size.
package build

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"time"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/prefetchlist"
)

const (
	blockSize     = 4096
	blockSizeBits = 12
	// DefaultChunkSize is the chunk size used when Options.ChunkSize is 0.
	DefaultChunkSize = 1 << 20
	// MaxChunkSize is the largest chunk the format describes (4 KiB << 31
	// would overflow the 32-bit chunk length of our digest table).
	MaxChunkSize = 1 << 30
)

// Options control a build.
type Options struct {
	// ChunkSize is the chunk size of chunk-based files (a power of two,
	// 4 KiB..1 GiB). In blob mode every file is cut into chunks of this
	// size; in self-contained mode it is the granularity at which runs
	// of zeros become holes. Default 1 MiB.
	ChunkSize int64
	// BlobDir, when set, sends file data into blob files written in
	// this directory and named by their sha256 hex digest: one blob for
	// the build, or one per layer with AddLayer. Chunks are stored
	// once across all of them.
	BlobDir string
	// BuildTime is the image's build time (the mtime compact inodes
	// inherit). Zero means the newest mtime found in the source, which
	// keeps builds reproducible.
	BuildTime time.Time
	// AllRoot makes every file owned by uid 0, gid 0.
	AllRoot bool
	// UUID overrides the image UUID; by default it is derived from the
	// image contents.
	UUID *[16]byte
	// Label is the volume name (at most 15 bytes).
	Label string
	// Holes says how chunks of zeros are stored; see HolePolicy.
	Holes HolePolicy
	// PrefetchList, in blob mode, names the files (and byte ranges of
	// them) a workload reads first: their chunks go to the front of
	// their blobs, and the image records those fronts as its start set
	// (Image.StartSet) for erofsd to fetch ahead at mount. The front is
	// in list order whatever order files are added in; a directory build
	// also adds the listed files first.
	PrefetchList *prefetchlist.List
	// Compression, if set, compresses regular files with an algorithm
	// and level spelled as mkfs.erofs's -z takes them: "lz4",
	// "lz4hc[,LEVEL]", "lzma[,LEVEL]", "deflate[,LEVEL]",
	// "zstd[,LEVEL]". A file is stored compressed only if that takes
	// less space (data blocks, and the inline tail and index in the
	// inode area) than storing it as is. Linux before 6.9 cannot read
	// compressed files in fscache (on-demand) mode, and 6.1 knows only
	// lz4 and lzma.
	Compression string
	// PclusterSize is the largest compressed physical cluster in bytes:
	// a multiple of 4096 up to 1 MiB (and at most ChunkSize in blob
	// mode). Default 4096, as mkfs.erofs; larger ones compress better
	// and need Linux 5.13.
	PclusterSize int
	// PackSmallFiles, in blob mode, stores files smaller than a chunk in
	// packs of up to a chunk, each one digest table entry, instead of
	// giving each file an entry of its own (compressed files are always
	// packed so). A cold read of many small files then costs a fetch and
	// a verification per pack rather than per file, at the price of
	// fetching a whole pack for any file in it.
	PackSmallFiles bool
	// Progress, if set, is called from the building goroutine as entries
	// are added and data is written.
	Progress func(Progress)
}

// HolePolicy says how a chunk that holds only zeros is stored.
type HolePolicy int

const (
	// HolesAuto is HolesZeroChunk in blob mode and HolesSparse for
	// self-contained images: images meant for lazy serving read right on
	// every kernel, images that carry their data stay as small as they
	// can be.
	HolesAuto HolePolicy = iota
	// HolesSparse stores a null chunk reference: no space at all. Linux
	// before 6.2 reads such a hole wrongly in fscache mode: it zero-fills
	// the rest of the readahead window, data after the hole included
	// (erofs_fscache_data_read's "count = len", fixed upstream in 6.2).
	// Such images are refused by erofsd's cachefiles front end there.
	HolesSparse
	// HolesZeroChunk points every hole at one all-zero chunk stored once
	// (in the blob, or in the image when self-contained), so every chunk
	// is mapped and no kernel's hole handling is involved. It costs one
	// chunk of space; erofsd recognises the chunk by its digest and
	// writes zeros without fetching it.
	HolesZeroChunk
)

// String names the policy as the command line spells it.
func (p HolePolicy) String() string {
	switch p {
	case HolesAuto:
		return "auto"
	case HolesSparse:
		return "sparse"
	case HolesZeroChunk:
		return "zero-chunk"
	}
	return fmt.Sprintf("HolePolicy(%d)", int(p))
}

// ParseHolePolicy parses "auto", "sparse" or "zero-chunk".
func ParseHolePolicy(s string) (HolePolicy, error) {
	for _, p := range []HolePolicy{HolesAuto, HolesSparse, HolesZeroChunk} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("hole policy %q: want auto, sparse or zero-chunk", s)
}

// Progress reports how far a build is.
type Progress struct {
	Entries int
	Bytes   int64
	Path    string
}

// BlobInfo describes a blob written in blob mode.
type BlobInfo struct {
	Digest string // sha256 hex, also the file name and the device tag
	Size   int64
	// Layer is the 1-based AddLayer call whose new data the blob holds
	// (a layer that adds no new chunk has no blob); 0 for other sources.
	Layer int
}

// Result summarises a finished build.
type Result struct {
	Inodes      int
	Dirs        int
	Files       int
	Symlinks    int
	Others      int
	DataBytes   int64 // logical size of all regular files
	ImageSize   int64
	Blobs       []BlobInfo // in device table order (device 1, 2, ...)
	Chunks      int        // chunk references to blobs (0 when self-contained)
	UniqueChunk int        // chunks stored in blobs
	DedupeSaved int64      // bytes not stored thanks to chunk dedupe
	HoleBytes   int64      // bytes of zeros stored as holes
	// Compression figures: files stored compressed, of them with an
	// inline tail pcluster, and decoded bytes of extents that share a
	// pcluster stored for an identical extent before.
	CompressedFiles   int
	InlineTails       int
	ExtentDedupeSaved int64
	UUID              [16]byte
	BuildTime         time.Time
}

// Builder accumulates a tree and writes an image. Add sources with
// AddDir or AddTar, then call Finish once. A Builder is not safe for
// concurrent use.
type Builder struct {
	out        io.WriterAt
	opts       Options
	tree       *tree
	chunkSize  int64
	chunkBits  uint8
	headBlocks uint64
	data       *blockWriter // self-contained file data
	dataCRC    uint32
	blobs      []*blob // finished and current, device i+1 = blobs[i]
	blob       *blob   // receiving chunks now; nil until the first chunk of a layer
	dedupe     map[chunkKey]chunkRef
	layer      int // layers added by AddLayer so far
	buf        []byte
	zeroRef    *chunkRef // the stored all-zero chunk (HolesZeroChunk), once written
	start      *startSet // from Options.PrefetchList in blob mode; nil: no start set
	stats      dataStats
	entries    int
	finished   bool
	err        error

	// Compression (nil z: none).
	z       *zconfig
	zpipe   *zpipe
	zdedupe map[zkey]zloc
	// packDedupe finds small files stored in packs before
	// (PackSmallFiles), by content.
	packDedupe map[chunkKey]zloc
	zpack      *zpack   // blob mode: the pack receiving pclusters
	zpacks     []*zpack // blob mode: stored packs
	zscratch   []byte   // a pcluster, or a small file for a pack, being assembled
}

// New prepares a build writing the image to out.
func New(out io.WriterAt, opts Options) (*Builder, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	cs := opts.ChunkSize
	if cs < blockSize || cs > MaxChunkSize || cs&(cs-1) != 0 {
		return nil, fmt.Errorf("chunk size %d: must be a power of two from 4 KiB to 1 GiB", cs)
	}
	if len(opts.Label) > 15 {
		return nil, fmt.Errorf("label %q: longer than 15 bytes", opts.Label)
	}
	switch opts.Holes {
	case HolesAuto:
		opts.Holes = HolesSparse
		if opts.BlobDir != "" {
			opts.Holes = HolesZeroChunk
		}
	case HolesSparse, HolesZeroChunk:
	default:
		return nil, fmt.Errorf("unknown hole policy %d", int(opts.Holes))
	}
	var z *zconfig
	if opts.Compression != "" {
		var err error
		if z, err = newZconfig(opts.Compression, opts.PclusterSize); err != nil {
			return nil, err
		}
		if opts.BlobDir != "" && int64(z.pcluster) > cs {
			return nil, fmt.Errorf("pcluster size %d: larger than the chunk size %d", z.pcluster, cs)
		}
	} else if opts.PclusterSize != 0 {
		return nil, fmt.Errorf("pcluster size %d without compression", opts.PclusterSize)
	}
	b := &Builder{
		z:         z,
		out:       out,
		opts:      opts,
		tree:      newTree(),
		chunkSize: cs,
		chunkBits: uint8(bits.TrailingZeros64(uint64(cs)) - blockSizeBits),
		buf:       make([]byte, cs),
	}
	// Self-contained images have no device table: file data starts in
	// block 1. Blob-mode images hold no file data; their head (superblock
	// and device table) is sized in Finish, when the blobs are known.
	b.headBlocks = 1
	b.data = newBlockWriter(io.NewOffsetWriter(out, int64(b.headBlocks)*blockSize), b.headBlocks, nil)
	if opts.BlobDir != "" {
		b.dedupe = map[chunkKey]chunkRef{}
		b.packDedupe = map[chunkKey]zloc{}
		b.start = newStartSet(opts.PrefetchList)
	}
	if z != nil {
		b.zpipe = newZpipe(z)
		b.zdedupe = map[zkey]zloc{}
	}
	return b, nil
}

func (b *Builder) blobMode() bool { return b.opts.BlobDir != "" }

// putChunk stores a chunk in the current blob unless an identical chunk
// is stored already (in any blob of this build): in the blob's front if it
// is a start-set chunk of the given rank (or there is no start set), else
// in its back.
func (b *Builder) putChunk(p []byte, start bool, rank int) (chunkRef, bool, error) {
	digest := sha256.Sum256(p)
	key := chunkKey{digest, uint32(len(p))}
	if ref, ok := b.dedupe[key]; ok {
		if b.start != nil && start && ref.back {
			// A listed chunk stored earlier for an unlisted file: the
			// start set names it where it is.
			b.blobs[ref.dev-1].addExtraStart(ref.blk, uint32(disk.AlignUp(len(p), blockSize)/blockSize), rank)
		}
		return ref, true, nil
	}
	if b.blob == nil {
		if len(b.blobs) >= maxBlobs {
			return chunkRef{}, false, fmt.Errorf("%w: more than %d blobs", ErrTooLarge, maxBlobs)
		}
		bl, err := newBlob(b.opts.BlobDir, uint16(len(b.blobs)+1), b.layer)
		if err != nil {
			return chunkRef{}, false, err
		}
		b.blobs = append(b.blobs, bl)
		b.blob = bl
	}
	seg := inPlace
	switch {
	case b.start != nil && start:
		seg = inFront
	case b.start != nil:
		seg = inBack
	}
	blk, err := b.blob.put(p, digest, seg, rank)
	if err != nil {
		return chunkRef{}, false, err
	}
	ref := chunkRef{dev: b.blob.device, blk: blk, front: seg == inFront, back: seg == inBack}
	b.dedupe[key] = ref
	return ref, false, nil
}

// maxBlobs keeps the device table inside the 8 MiB that devt_slotoff can
// address, with room to spare.
const maxBlobs = 4096

// Abort discards a build that will not be finished (removing a partial
// blob). It is safe to call after Finish.
func (b *Builder) Abort() {
	if b.zpipe != nil {
		b.zpipe.abort()
	}
	b.data.flush()
	if !b.finished {
		for _, bl := range b.blobs {
			bl.abort()
		}
	}
}

func (b *Builder) progress(path string) {
	b.entries++
	if b.opts.Progress != nil {
		b.opts.Progress(Progress{Entries: b.entries, Bytes: b.stats.bytes, Path: path})
	}
}

// fileSource is the content of one regular file being added.
type fileSource struct {
	r     io.Reader
	holes holeFunc                 // optional: ranges known to be holes
	skip  func(off, n int64) error // required with holes: advance r past a hole
}

// ingest streams a regular file's content to its destination and records
// where it went in n.data. n.size must be set.
func (b *Builder) ingest(ctx context.Context, name string, n *node, src fileSource) error {
	b.stats.bytes += int64(n.size)
	if b.z != nil && n.size > 0 {
		return b.ingestCompressed(ctx, name, n, src)
	}
	return b.ingestData(ctx, name, n, src)
}

// ingestData stores a regular file's content uncompressed: in flat
// blocks, or in chunks (self-contained with holes, or in a blob).
func (b *Builder) ingestData(ctx context.Context, name string, n *node, src fileSource) error {
	size := int64(n.size)
	d := &n.data
	d.chunkBits = b.chunkBits
	if size == 0 {
		d.flat, d.blkaddr = true, disk.NullAddr
		return nil
	}
	// A tail can be inlined if even the largest inode header and every
	// xattr stored inline leave room for it in one block.
	tail := int(size % blockSize)
	canInline := !b.blobMode() && tail != 0 &&
		disk.ExtendedInodeSize+inlineXattrWorstCase(n.xattr)+tail <= blockSize
	var (
		refs    []chunkRef
		hadHole bool
		first   uint64 = disk.NullAddr
	)
	for off := int64(0); off < size; off += b.chunkSize {
		if err := ctx.Err(); err != nil {
			return err
		}
		cn := min(b.chunkSize, size-off)
		hole := src.holes != nil && src.holes(off, cn)
		if hole {
			if err := src.skip(off, cn); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		} else {
			buf := b.buf[:cn]
			if _, err := io.ReadFull(src.r, buf); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					err = errShortFile
				}
				return fmt.Errorf("%s: reading at %d: %w", name, off, err)
			}
			hole = isZero(buf)
		}
		if hole {
			ref, err := b.holeRef()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			refs = append(refs, ref)
			hadHole = true
			b.stats.holeBytes += cn
			continue
		}
		buf := b.buf[:cn]
		if b.blobMode() {
			rank, start := b.start.chunk(name, off, cn)
			if b.opts.PackSmallFiles && size < b.chunkSize {
				// The file is this one chunk: it goes into a pack, and
				// where is known once the pack is stored (Finish).
				if err := b.packFile(d, name, buf, start || b.start == nil, rank); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				return nil
			}
			ref, dup, err := b.putChunk(buf, start || b.start == nil, rank)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			b.stats.chunks++
			if dup {
				b.stats.dedupeSaved += cn
			} else {
				b.stats.unique++
			}
			refs = append(refs, ref)
			continue
		}
		if off+cn == size && !hadHole && canInline {
			full := int(cn) - tail
			d.tail = append([]byte(nil), buf[full:]...)
			buf = buf[:full]
			if full == 0 {
				break
			}
		}
		b.dataCRC = crc32.Update(b.dataCRC, crcTable, buf)
		blk, err := b.data.write(buf)
		if err != nil {
			return fmt.Errorf("%s: writing image: %w", name, err)
		}
		if first == disk.NullAddr {
			first = blk
		}
		refs = append(refs, chunkRef{blk: uint32(blk)})
	}
	if !b.blobMode() && !hadHole {
		d.flat, d.blkaddr = true, uint32(first)
		return nil
	}
	d.tail = nil
	d.chunks = refs
	return nil
}

// packFile stores a file smaller than a chunk in the open pack, or finds
// an identical file stored in one before.
func (b *Builder) packFile(d *fileData, name string, data []byte, start bool, rank int) error {
	key := chunkKey{sha256.Sum256(data), uint32(len(data))}
	blocks := uint32(disk.AlignUp(len(data), blockSize) / blockSize)
	if loc, ok := b.packDedupe[key]; ok {
		b.stats.dedupeSaved += int64(len(data))
		b.listShared(name, 0, len(data), blocks, loc)
		d.packed = &loc
		return nil
	}
	pc := b.scratch(int(blocks) * blockSize)
	clear(pc[copy(pc, data):])
	loc, err := b.zpackAdd(pc, start, rank)
	if err != nil {
		return err
	}
	b.packDedupe[key] = loc
	d.packed = &loc
	return nil
}

// holeRef returns the reference a chunk of zeros gets: a null one, or
// the all-zero chunk, stored on first use. A zero chunk is a whole chunk
// long, so a file's shorter last chunk can point at it too (the kernel
// maps only the file's own length of it).
func (b *Builder) holeRef() (chunkRef, error) {
	if b.opts.Holes == HolesSparse {
		return sparseRef, nil
	}
	if b.zeroRef != nil {
		return *b.zeroRef, nil
	}
	zeros := b.buf[:b.chunkSize]
	clear(zeros)
	var ref chunkRef
	if b.blobMode() {
		// erofsd never fetches the zero chunk: never in the start set.
		r, dup, err := b.putChunk(zeros, b.start == nil, 0)
		if err != nil {
			return chunkRef{}, err
		}
		if !dup {
			b.stats.unique++
		}
		ref = r
	} else {
		b.dataCRC = crc32.Update(b.dataCRC, crcTable, zeros)
		blk, err := b.data.write(zeros)
		if err != nil {
			return chunkRef{}, fmt.Errorf("writing image: %w", err)
		}
		ref = chunkRef{blk: uint32(blk)}
	}
	b.zeroRef = &ref
	return ref, nil
}

// inlineXattrWorstCase is the inline xattr area size if no xattr of the
// inode ends up shared.
func inlineXattrWorstCase(xs []xattr) int {
	if len(xs) == 0 {
		return 0
	}
	n := disk.XattrHeaderSize
	for _, x := range xs {
		n += xattrEntrySize(x)
	}
	return n
}
