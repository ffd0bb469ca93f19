package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// zfile is a regular file being stored compressed.
type zfile struct {
	n      *node
	name   string
	size   int64
	z      *zinode
	allRaw bool   // every segment so far went raw (a large file may end up flat)
	first  uint32 // self-contained: the image block of a raw first segment
}

// zinode is where a compressed file's extents went; the inode's index is
// encoded from it.
type zinode struct {
	size   uint64
	exts   []zextent
	locs   []zloc // pcluster of each extent (unused for the inline one)
	inline []byte // ztailpacking: the last extent's pcluster, stored after the index

	// Set by Finish before layout: where each pcluster is.
	devs []uint16
	blks []uint32 // block on its device
	// Set by planInode.
	compact bool
}

// zloc is where a pcluster was stored: an image block, or a block of a
// pack that goes into a blob as one digest table entry.
type zloc struct {
	pack *zpack // nil: blk is an image block
	blk  uint32
}

// zkey identifies an extent by what it decodes to, for dedupe: a plain
// extent by its bytes, a compressed one by its stream and length (a
// stream decodes to one thing only).
type zkey struct {
	sum    [32]byte
	length int
	plain  bool
}

// zpack gathers consecutive pclusters (whole blocks) for a blob, so that
// one digest table entry covers up to a chunk of them and none is split
// across two entries.
type zpack struct {
	buf   []byte
	start bool // goes to the blob's front (start set)
	rank  int
	ref   chunkRef // where the pack went, once stored
	// listed are pclusters of a back pack that listed files share
	// (dedupe), to name in the start set once the pack is stored.
	listed []packStart
}

// packStart is a listed pcluster inside a pack.
type packStart struct {
	blk, blocks uint32 // in the pack
	rank        int
}

// ingestCompressed reads a regular file in segments and queues them for
// compression.
func (b *Builder) ingestCompressed(ctx context.Context, name string, n *node, src fileSource) error {
	size := int64(n.size)
	f := &zfile{n: n, name: name, size: size, allRaw: true}
	for off := int64(0); off < size; off += segmentSize {
		if err := ctx.Err(); err != nil {
			return err
		}
		cn := min(segmentSize, size-off)
		buf := make([]byte, cn)
		if src.holes != nil && src.holes(off, cn) {
			if err := src.skip(off, cn); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		} else if _, err := io.ReadFull(src.r, buf); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errShortFile
			}
			return fmt.Errorf("%s: reading at %d: %w", name, off, err)
		}
		j := &zjob{file: f, off: off, data: buf, eof: off+cn == size}
		if err := b.zsubmit(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// tailInlines reports whether a flat file's tail of tail bytes is
// certain to fit in its inode's block, whatever xattrs end up shared.
func (b *Builder) tailInlines(n *node, tail int) bool {
	return tail != 0 && disk.ExtendedInodeSize+inlineXattrWorstCase(n.xattr)+tail <= blockSize
}

// zstore places a finished job's data.
func (b *Builder) zstore(ctx context.Context, j *zjob) error {
	f := j.file
	if j.err != nil {
		return fmt.Errorf("%s: %w", f.name, j.err)
	}
	if j.off == 0 && j.eof {
		return b.zstoreFile(ctx, j)
	}
	return b.zstoreSegment(j)
}

// zstoreFile places a file that is one segment: compressed if that takes
// less space than storing it as is (blocks, and the bytes of the tail and
// the index in the inode area), else as is.
func (b *Builder) zstoreFile(ctx context.Context, j *zjob) error {
	f := j.file
	if len(j.exts) == 0 {
		return b.ingestData(ctx, f.name, f.n, fileSource{r: bytes.NewReader(j.data)})
	}
	exts := j.exts
	last := &exts[len(exts)-1]
	inline, inlinePlain := b.chooseTail(f, last, j.data[last.off:][:last.length])
	stored := exts
	if inline != nil {
		stored = exts[:len(exts)-1]
	}
	nlc := uint64(f.size+blockSize-1) / blockSize
	zcost := int64(len(inline) + compactIndexSize(disk.CompactInodeSize, nlc))
	for i := range stored {
		if _, dup := b.zdedupe[extKey(&stored[i])]; !dup {
			zcost += int64(stored[i].blocks()) * blockSize
		}
	}
	plain := disk.AlignUp64(uint64(f.size), blockSize)
	if tail := f.size % blockSize; !b.blobMode() && b.tailInlines(f.n, int(tail)) {
		plain = uint64(f.size)
	}
	if zcost >= int64(plain) {
		return b.ingestData(ctx, f.name, f.n, fileSource{r: bytes.NewReader(j.data)})
	}
	f.z = &zinode{size: uint64(f.size)}
	for i := range stored {
		e := &stored[i]
		if err := b.zput(f, e, j.data[e.off:][:e.length], true); err != nil {
			return err
		}
	}
	if inline != nil {
		f.z.exts = append(f.z.exts, zextent{off: uint64(last.off), plain: inlinePlain, inline: true})
		f.z.locs = append(f.z.locs, zloc{})
		f.z.inline = inline
		b.stats.zinline++
	}
	f.allRaw = false
	return b.zfinishFile(f)
}

// chooseTail returns the inline (ztailpacking) pcluster for the file's
// last extent e (raw holds its bytes), or nil: its compressed stream or
// its raw bytes, whichever is smaller, if it is certain to fit in the
// inode's block after the largest index the file can have. Inlining saves
// the block the tail pcluster would take.
func (b *Builder) chooseTail(f *zfile, e *cutExt, raw []byte) (inline []byte, plain bool) {
	nlc := uint64(f.size+blockSize-1) / blockSize
	room := blockSize - (disk.AlignUp(disk.ExtendedInodeSize+inlineXattrWorstCase(f.n.xattr), 8) + fullIndexSize(nlc))
	if e.stream != nil && len(e.stream) <= room && len(e.stream) < e.length {
		inline = e.stream
	}
	// A raw tail must decode to no more than one lcluster.
	if e.length <= blockSize && e.length <= room && (inline == nil || e.length <= len(inline)) {
		return append([]byte(nil), raw...), true
	}
	return inline, false
}

// zstoreSegment places one segment of a file larger than a segment. A
// segment that does not save a block is stored raw, block by block at
// block-aligned positions, so that a file all of whose segments went raw
// is exactly a flat file and is made one.
func (b *Builder) zstoreSegment(j *zjob) error {
	f := j.file
	if f.z == nil {
		f.z = &zinode{size: uint64(f.size)}
	}
	blocks := 0
	for i := range j.exts {
		blocks += j.exts[i].blocks()
	}
	raw := (len(j.data) + blockSize - 1) / blockSize
	if len(j.exts) == 0 || blocks >= raw {
		data := j.data
		tail := int(f.size % blockSize)
		flat := j.eof && f.allRaw && !b.blobMode()
		if flat && b.tailInlines(f.n, tail) {
			// The file ends up flat: its tail goes inline, as it would
			// uncompressed.
			f.n.data.tail = bytes.Clone(data[len(data)-tail:])
			data = data[:len(data)-tail]
		}
		for p := 0; p < len(data); p += blockSize {
			e := cutExt{off: j.off + int64(p), length: min(blockSize, len(data)-p), plain: true}
			if err := b.zput(f, &e, data[p:p+e.length], false); err != nil {
				return err
			}
			if p == 0 && j.off == 0 {
				f.first = f.z.locs[0].blk
			}
		}
	} else {
		f.allRaw = false
		for i := range j.exts {
			e := &j.exts[i]
			if err := b.zput(f, e, j.data[e.off-j.off:][:e.length], true); err != nil {
				return err
			}
		}
	}
	if !j.eof {
		return nil
	}
	if f.allRaw && !b.blobMode() {
		f.n.data.flat, f.n.data.blkaddr = true, f.first
		return nil
	}
	return b.zfinishFile(f)
}

func (b *Builder) zfinishFile(f *zfile) error {
	f.n.data.z = f.z
	b.stats.zfiles++
	return nil
}

// scratch returns size bytes of the builder's scratch space, where
// pclusters and packed files are assembled (the image's block writer and
// blob packs copy them).
func (b *Builder) scratch(size int) []byte {
	if cap(b.zscratch) < size {
		b.zscratch = make([]byte, size)
	}
	return b.zscratch[:size]
}

func extKey(e *cutExt) zkey { return zkey{sum: e.sum, length: e.length, plain: e.plain} }

// zput stores the pcluster of extent e (raw holds its decoded bytes),
// or finds an identical one stored before when dedupe is allowed, and
// appends the extent to f's index.
func (b *Builder) zput(f *zfile, e *cutExt, raw []byte, dedupe bool) error {
	key := extKey(e)
	if dedupe {
		if loc, ok := b.zdedupe[key]; ok {
			b.stats.zdedupeSaved += int64(e.length)
			f.z.add(e, loc)
			b.listShared(f.name, e.off, e.length, uint32(e.blocks()), loc)
			return nil
		}
	}
	pc := b.scratch(e.blocks() * blockSize)
	if e.plain {
		// Shifted: the extent's first byte at the pcluster's start.
		clear(pc[copy(pc, raw):])
	} else {
		// 0padding: the stream ends the pcluster, zeros before it.
		clear(pc[:len(pc)-len(e.stream)])
		copy(pc[len(pc)-len(e.stream):], e.stream)
	}
	var loc zloc
	if b.blobMode() {
		rank, listed := b.start.chunk(f.name, e.off, int64(e.length))
		var err error
		if loc, err = b.zpackAdd(pc, listed || b.start == nil, rank); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	} else {
		b.dataCRC = crc32.Update(b.dataCRC, crcTable, pc)
		blk, err := b.data.write(pc)
		if err != nil {
			return fmt.Errorf("%s: writing image: %w", f.name, err)
		}
		loc = zloc{blk: uint32(blk)}
	}
	if dedupe {
		b.zdedupe[key] = loc
	}
	f.z.add(e, loc)
	return nil
}

func (z *zinode) add(e *cutExt, loc zloc) {
	z.exts = append(z.exts, zextent{off: uint64(e.off), plain: e.plain, blocks: uint32(e.blocks())})
	z.locs = append(z.locs, loc)
}

// listShared names in the start set the pcluster (or packed file) of
// blocks blocks at loc that bytes [off, off+length) of the file name share
// with an unlisted one stored before, in a blob's back part, if those
// bytes are listed.
func (b *Builder) listShared(name string, off int64, length int, blocks uint32, loc zloc) {
	p := loc.pack
	if b.start == nil || p == nil || p.start {
		return
	}
	rank, listed := b.start.chunk(name, off, int64(length))
	if !listed {
		return
	}
	ps := packStart{blk: loc.blk, blocks: blocks, rank: rank}
	if p.buf != nil {
		p.listed = append(p.listed, ps) // named when the pack is stored
		return
	}
	p.nameListed(b, ps)
}

// nameListed adds a listed pcluster of a stored pack to its blob's start
// set, if the pack is in the blob's back part (a pack stored in the front,
// as a duplicate of a listed one, is in the start set already).
func (p *zpack) nameListed(b *Builder, ps packStart) {
	if p.ref.back {
		b.blobs[p.ref.dev-1].addExtraStart(p.ref.blk+ps.blk, ps.blocks, ps.rank)
	}
}

// zpackAdd appends a pcluster to the open pack, first storing the pack if
// the pcluster would take it past the chunk size or belongs to another
// part of the blob (start set front or not, rank).
func (b *Builder) zpackAdd(pc []byte, start bool, rank int) (zloc, error) {
	p := b.zpack
	if p != nil && (p.start != start || p.rank != rank || len(p.buf)+len(pc) > b.packLimit()) {
		if err := b.zpackFlush(); err != nil {
			return zloc{}, err
		}
		p = nil
	}
	if p == nil {
		p = &zpack{buf: make([]byte, 0, b.packLimit()), start: start, rank: rank}
		b.zpack = p
	}
	loc := zloc{pack: p, blk: uint32(len(p.buf) / blockSize)}
	p.buf = append(p.buf, pc...)
	return loc, nil
}

// packLimit is the most a pack holds: a chunk, but not more than a few
// segments (packs are held in memory until stored).
func (b *Builder) packLimit() int { return int(min(b.chunkSize, 4*segmentSize)) }

// zpackFlush stores the open pack in the current blob as one chunk (one
// digest table entry).
func (b *Builder) zpackFlush() error {
	p := b.zpack
	if p == nil {
		return nil
	}
	b.zpack = nil
	ref, dup, err := b.putChunk(p.buf, p.start, p.rank)
	if err != nil {
		return err
	}
	b.stats.chunks++
	if dup {
		b.stats.dedupeSaved += int64(len(p.buf))
	} else {
		b.stats.unique++
	}
	p.ref, p.buf = ref, nil
	for _, ps := range p.listed {
		p.nameListed(b, ps)
	}
	p.listed = nil
	b.zpacks = append(b.zpacks, p)
	return nil
}

// resolve records where every pcluster of z is, once blob packs have
// their final places.
func (z *zinode) resolve() {
	z.devs = make([]uint16, len(z.exts))
	z.blks = make([]uint32, len(z.exts))
	for i, l := range z.locs {
		if l.pack != nil {
			z.devs[i], z.blks[i] = l.pack.ref.dev, l.pack.ref.blk+l.blk
		} else {
			z.blks[i] = l.blk
		}
	}
}
