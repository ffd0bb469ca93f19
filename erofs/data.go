package erofs

import (
	"fmt"
	"io"
	"sort"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// extent maps the logical file range [lstart, lstart+llen) to device dev at
// byte pstart, or to zeros when hole is set.
type extent struct {
	lstart int64
	llen   int64
	dev    int
	pstart int64
	hole   bool
	inline bool // the tail stored right after the inode (primary device)
	chunk  bool // one chunk of a chunk-based file: what the chunk digest table covers
}

// translate applies unified addressing to a primary-device byte range: if
// it starts inside an extra device's mapped range, the range is redirected
// to that device (as the kernel's erofs_map_dev does).
func (img *Image) translate(paddr, length int64) (int, int64, error) {
	// The last range starting at or before paddr is the only candidate.
	i := sort.Search(len(img.mapped), func(i int) bool { return img.mapped[i].start > paddr }) - 1
	if i < 0 || paddr >= img.mapped[i].end {
		return 0, paddr, nil
	}
	m := img.mapped[i]
	if paddr+length > m.end {
		return 0, 0, corruptf("unified address range [%d, %d) crosses the end of device %d", paddr, paddr+length, m.dev)
	}
	return m.dev, paddr - m.start, nil
}

func (img *Image) blocksOf(size int64) int64 {
	return (size + img.blkSize - 1) >> img.blkBits
}

// flatExtents returns the (at most two) extents of a flat inode: the
// block-aligned part and, for FLAT_INLINE, the inline tail.
func (img *Image) flatExtents(ino *inode) ([]extent, error) {
	size := ino.size
	if size == 0 {
		return nil, nil
	}
	nblocks := img.blocksOf(size)
	var body, tail int64 = size, 0
	if ino.layout() == disk.LayoutFlatInline {
		body = (nblocks - 1) << img.blkBits
		tail = size - body
	}
	exts := make([]extent, 0, 2)
	if body > 0 {
		raw := ino.d.U
		if raw == disk.NullAddr {
			return nil, corruptf("nid %d: %d data bytes but no start block", ino.nid, body)
		}
		paddr := int64(raw) << img.blkBits
		dev, pstart, err := img.translate(paddr, body)
		if err != nil {
			return nil, fmt.Errorf("nid %d: %w", ino.nid, err)
		}
		exts = append(exts, extent{lstart: 0, llen: body, dev: dev, pstart: pstart})
	}
	if tail > 0 {
		at := ino.tailOff()
		if at&(img.blkSize-1)+tail > img.blkSize {
			return nil, corruptf("nid %d: inline data [%d, %d) crosses a block boundary", ino.nid, at, at+tail)
		}
		exts = append(exts, extent{lstart: body, llen: tail, pstart: at, inline: true})
	}
	return exts, nil
}

// chunkLayout describes the chunk array of a chunk-based inode.
type chunkLayout struct {
	bits    uint  // log2 chunk size
	indexes bool  // 8-byte chunk indexes (else 4-byte block map)
	unit    int64 // entry size
	base    int64 // byte offset of entry 0
	count   int64 // number of entries
}

func (c *chunkLayout) size() int64 { return 1 << c.bits }

func (img *Image) chunkLayout(ino *inode) (chunkLayout, error) {
	var c chunkLayout
	format := uint16(ino.d.U)
	if format&^(disk.ChunkFormatBlkBitsMask|disk.ChunkFormatIndexes) != 0 {
		return c, unsupportedf("nid %d: chunk format %#04x", ino.nid, format)
	}
	c.bits = img.blkBits + uint(format&disk.ChunkFormatBlkBitsMask)
	c.indexes = format&disk.ChunkFormatIndexes != 0
	c.unit = 4
	if c.indexes {
		c.unit = disk.ChunkIndexSize
	}
	c.count = int64((uint64(ino.size) + uint64(c.size()) - 1) >> c.bits)
	c.base = int64(disk.AlignUp64(uint64(ino.tailOff()), uint64(c.unit)))
	if end := c.base + c.count*c.unit; img.size >= 0 && end > img.size {
		return c, corruptf("nid %d: chunk array of %d entries [%d, %d) beyond image end %d", ino.nid, c.count, c.base, end, img.size)
	}
	return c, nil
}

// chunkEntry is one decoded chunk array entry.
type chunkEntry struct {
	dev  int    // device id after masking (index form) or 0
	blk  uint32 // start block on that device
	hole bool
}

// maxChunkBatch bounds how many chunk entries are read at once.
const maxChunkBatch = 512

// readChunkEntries decodes entries first..first+len(out)-1.
func (img *Image) readChunkEntries(ino *inode, c *chunkLayout, first int64, out []chunkEntry) error {
	buf := make([]byte, int64(len(out))*c.unit)
	at := c.base + first*c.unit
	if err := readFull(img.r, buf, at); err != nil {
		return fmt.Errorf("nid %d chunk array: %w", ino.nid, err)
	}
	for i := range out {
		b := buf[int64(i)*c.unit:]
		if !c.indexes {
			blk := le32(b)
			out[i] = chunkEntry{blk: blk, hole: blk == disk.NullAddr}
			continue
		}
		ci, err := disk.DecodeChunkIndex(b)
		if err != nil {
			return fmt.Errorf("%w: nid %d chunk %d: %w", ErrCorrupt, ino.nid, first+int64(i), err)
		}
		if ci.BlkAddr == disk.NullAddr {
			out[i] = chunkEntry{hole: true}
			continue
		}
		dev := int(ci.DeviceID & img.devMask)
		if dev > len(img.slots) {
			return corruptf("nid %d chunk %d: device id %d (raw %d) beyond %d extra devices", ino.nid, first+int64(i), dev, ci.DeviceID, len(img.slots))
		}
		out[i] = chunkEntry{dev: dev, blk: ci.BlkAddr}
	}
	return nil
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// chunkExtent returns the extent of chunk k with entry e. Its llen is the
// file bytes the chunk holds (not rounded up to blocks).
func (img *Image) chunkExtent(ino *inode, c *chunkLayout, k int64, e chunkEntry) (extent, error) {
	lstart := k << c.bits
	llen := min(c.size(), ino.size-lstart)
	ext := extent{lstart: lstart, llen: llen, hole: e.hole, chunk: true}
	if e.hole {
		return ext, nil
	}
	paddr := int64(e.blk) << img.blkBits
	if e.dev != 0 {
		ext.dev, ext.pstart = e.dev, paddr
		return ext, nil
	}
	dev, pstart, err := img.translate(paddr, llen)
	if err != nil {
		return ext, fmt.Errorf("nid %d chunk %d: %w", ino.nid, k, err)
	}
	ext.dev, ext.pstart = dev, pstart
	return ext, nil
}

// readData reads file data like io.ReaderAt.ReadAt.
func (img *Image) readData(ino *inode, p []byte, off int64) (int, error) {
	return img.readDataCached(ino, nil, p, off)
}

// readDataCached is readData with the read state zc of a compressed
// inode's open file (nil: none kept).
func (img *Image) readDataCached(ino *inode, zc *zcache, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("erofs: nid %d: negative offset %d", ino.nid, off)
	}
	size := ino.size
	if ino.isSpecial() {
		size = 0
	}
	if off >= size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > size-off {
		p = p[:size-off]
	}
	if err := img.readDataDepth(ino, zc, p, off, 0); err != nil {
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// readDataDepth fills p with the file bytes at off, all inside the file.
// depth counts reads of the packed inode on behalf of fragments.
func (img *Image) readDataDepth(ino *inode, zc *zcache, p []byte, off int64, depth int) error {
	switch ino.layout() {
	case disk.LayoutFlatPlain, disk.LayoutFlatInline:
		return img.readFlat(ino, p, off)
	case disk.LayoutChunkBased:
		return img.readChunked(ino, p, off)
	default:
		return img.readCompressed(ino, zc, p, off, depth)
	}
}

// readExtent copies the part of ext overlapping [off, off+len(p)) into p.
// With WithVerifiedBlobs, extra-device data is returned only from a chunk
// verified against the chunk digest table.
func (img *Image) readExtent(ext *extent, p []byte, off int64) error {
	if ext.hole {
		clear(p)
		return nil
	}
	if ext.dev != 0 && img.verify {
		if !ext.chunk {
			// The table records chunks only; flat data that unified
			// addressing places in a blob has no digest to check.
			return unsupportedf("device %d: flat data in an extra device cannot be verified (the chunk digest table covers chunks only)", ext.dev)
		}
		return img.readVerified(ext, p, off)
	}
	return img.readDev(ext.dev, p, ext.pstart+(off-ext.lstart))
}

func (img *Image) readFlat(ino *inode, p []byte, off int64) error {
	exts, err := img.flatExtents(ino)
	if err != nil {
		return err
	}
	for i := range exts {
		ext := &exts[i]
		for len(p) > 0 && off >= ext.lstart && off < ext.lstart+ext.llen {
			n := min(int64(len(p)), ext.lstart+ext.llen-off)
			if err := img.readExtent(ext, p[:n], off); err != nil {
				return fmt.Errorf("nid %d at %d: %w", ino.nid, off, err)
			}
			p, off = p[n:], off+n
		}
	}
	if len(p) > 0 {
		return corruptf("nid %d: no data mapped at offset %d", ino.nid, off)
	}
	return nil
}

func (img *Image) readChunked(ino *inode, p []byte, off int64) error {
	c, err := img.chunkLayout(ino)
	if err != nil {
		return err
	}
	var entries [maxChunkBatch]chunkEntry
	for len(p) > 0 {
		k := off >> c.bits
		last := (off + int64(len(p)) - 1) >> c.bits
		n := min(last-k+1, maxChunkBatch)
		batch := entries[:n]
		if err := img.readChunkEntries(ino, &c, k, batch); err != nil {
			return err
		}
		for i := range batch {
			ext, err := img.chunkExtent(ino, &c, k+int64(i), batch[i])
			if err != nil {
				return err
			}
			m := min(int64(len(p)), ext.lstart+ext.llen-off)
			if err := img.readExtent(&ext, p[:m], off); err != nil {
				return fmt.Errorf("nid %d chunk %d at offset %d: %w", ino.nid, k+int64(i), off, err)
			}
			p, off = p[m:], off+m
		}
	}
	return nil
}
