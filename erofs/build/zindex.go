package build

import (
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// A compressed file is described to the kernel by one index entry per
// logical cluster (lcluster, one block here): the lcluster where an
// extent starts holds a HEAD entry (where in the lcluster it starts, and
// the first block of its pcluster), the lclusters fully inside an extent
// hold NONHEAD entries (how far back the HEAD is, how far ahead the next
// one). The kernel (fs/erofs/zmap.c) finds everything else from these:
// an extent ends where the next HEAD starts, so at most one extent may
// start in an lcluster.

// zextent is one extent of a compressed file as the index sees it.
type zextent struct {
	off    uint64 // logical start in the file
	plain  bool   // raw pcluster (one block) instead of a compressed one
	blocks uint32 // pcluster size in blocks
	inline bool   // the ztailpacking pcluster after the index (last extent only)
}

// maxDelta bounds a NONHEAD's lookback and lookahead distances: the 12
// bits of a compact entry hold them, and 0x800 is the CBLKCNT flag. A
// capped distance still works: the kernel walks on from the NONHEAD it
// lands on.
const maxDelta = disk.LID0CBlkCnt - 1

// lclusterIndexes returns the FULL index entries of a file of size bytes
// cut into exts (in logical order, the first at 0, each starting in a
// later lcluster than the one before). addr gives the block address of
// extent i's pcluster. big marks the first NONHEAD after a compressed
// HEAD with the pcluster's block count (CBLKCNT), as BIG_PCLUSTER inodes
// need.
func lclusterIndexes(size uint64, exts []zextent, big bool, addr func(i int) uint32) ([]disk.LclusterIndex, error) {
	nlc := (size + blockSize - 1) / blockSize
	if len(exts) == 0 || exts[0].off != 0 {
		return nil, fmt.Errorf("internal error: a compressed file's extents must start at 0")
	}
	out := make([]disk.LclusterIndex, nlc)
	for i, e := range exts {
		head := e.off / blockSize
		end := size
		if i+1 < len(exts) {
			end = exts[i+1].off
		}
		if e.off >= end || head >= nlc || (i > 0 && head <= exts[i-1].off/blockSize) {
			return nil, fmt.Errorf("internal error: extent %d at %d (next at %d) breaks the one-extent-per-lcluster rule", i, e.off, end)
		}
		typ := uint8(disk.LclusterTypeHead1)
		if e.plain {
			typ = disk.LclusterTypePlain
		}
		var blk uint32
		if !e.inline {
			blk = addr(i)
		}
		out[head] = disk.LclusterIndex{Type: typ, ClusterOfs: uint16(e.off % blockSize), BlkAddr: blk}
		// The next HEAD is in the lcluster where this extent ends; at the
		// end of the file that is past the array, or the trailing partial
		// lcluster when no extent starts there (see below).
		next := end / blockSize
		for lcn := head + 1; lcn < next && lcn < nlc; lcn++ {
			d := disk.LclusterIndex{Type: disk.LclusterTypeNonhead}
			d.Delta[0] = uint16(min(lcn-head, maxDelta))
			d.Delta[1] = uint16(min(next-lcn, maxDelta))
			if lcn == head+1 && big && !e.plain {
				// An inline pcluster has no blocks; the kernel never
				// reads its count, 1 keeps the value a plausible one.
				d.Delta[0] = disk.LID0CBlkCnt | uint16(max(e.blocks, 1))
			}
			out[lcn] = d
		}
	}
	// A last extent that started in an earlier lcluster and ends inside
	// the final, partial one: mkfs marks that lcluster with a PLAIN entry
	// whose clusterofs is the end of the file, so reads below it look
	// back to the real HEAD and the extent's length comes out exact.
	if last := exts[len(exts)-1]; size%blockSize != 0 && last.off/blockSize < nlc-1 {
		out[nlc-1] = disk.LclusterIndex{Type: disk.LclusterTypePlain, ClusterOfs: uint16(size % blockSize)}
	}
	return out, nil
}

// fullIndexSize is the size of a FULL index after the map header's
// alignment: the header, 8 reserved bytes and one entry per lcluster.
func fullIndexSize(nlc uint64) int {
	return disk.MapHeaderSize + disk.FullIndexReserved + int(nlc)*disk.LclusterIndexSize
}

// compactLayout returns where COMPACT packs go for an inode whose inode
// structure and inline xattrs take prefix bytes (the inode itself is
// 32-byte aligned, so positions relative to it align like absolute ones).
func compactLayout(prefix int, nlc uint64) disk.CompactLayout {
	base := disk.CompactIndexBase(uint64(prefix))
	return disk.NewCompactLayout(base, nlc, true)
}

// compactIndexSize is the size of a COMPACT index after the map header's
// alignment: the header and every pack up to the one holding the last
// lcluster.
func compactIndexSize(prefix int, nlc uint64) int {
	l := compactLayout(prefix, nlc)
	return int(l.End() - disk.MapHeaderPos(uint64(prefix)))
}

// encodeCompact encodes FULL entries as COMPACT packs into dst (the
// compactIndexSize bytes after the map header). Only the kernel's way of
// deriving HEAD addresses is stored: each pack's base and the sizes of
// the pclusters whose heads precede an entry in the pack. After encoding,
// every HEAD that has a real pcluster (want reports it) is decoded back
// the kernel's way, and a mismatch (pclusters not contiguous in logical
// order) is an error: the caller must use FULL indexes then.
func encodeCompact(dst []byte, prefix int, ents []disk.LclusterIndex, big bool, want func(lcn int) bool) error {
	l := compactLayout(prefix, uint64(len(ents)))
	hdr := disk.MapHeaderPos(uint64(prefix))
	clear(dst)
	for lcn := uint64(0); lcn < l.Total; {
		p, packPos, first := l.Locate(lcn)
		if first != 0 {
			return fmt.Errorf("internal error: lcluster %d starts at entry %d of its pack", lcn, first)
		}
		packEnts := make([]disk.CompactEntry, p.VCnt)
		for k := range p.VCnt {
			i := int(lcn) + k
			if i >= len(ents) {
				break // padding: PLAIN, 0, as the kernel never reads it
			}
			packEnts[k] = compactEntry(ents[i], k == p.VCnt-1)
		}
		base, err := compactBase(packEnts, ents, int(lcn), big, want)
		if err != nil {
			return err
		}
		b := dst[packPos-hdr-disk.MapHeaderSize:]
		if err := p.Encode(b, blockSizeBits, packEnts, base); err != nil {
			return err
		}
		lcn += uint64(p.VCnt)
	}
	return nil
}

// compactEntry converts a FULL entry to its compact form; the last entry
// of a pack keeps delta[1] (the lookahead) for NONHEAD, the kernel derives
// its delta[0] from the entry before.
func compactEntry(d disk.LclusterIndex, lastInPack bool) disk.CompactEntry {
	if d.Type != disk.LclusterTypeNonhead {
		return disk.CompactEntry{Type: d.Type, Lo: d.ClusterOfs}
	}
	lo := d.Delta[0]
	if lastInPack && lo&disk.LID0CBlkCnt == 0 {
		lo = d.Delta[1]
	}
	return disk.CompactEntry{Type: d.Type, Lo: lo}
}

// compactBase picks the pack base that makes the kernel's derivation
// (unpack_compacted_index) give the first real HEAD of the pack its
// address, and checks that it gives every other real HEAD its own.
func compactBase(pack []disk.CompactEntry, ents []disk.LclusterIndex, first int, big bool, want func(lcn int) bool) (uint32, error) {
	var base uint32
	found := false
	for k, e := range pack {
		lcn := first + k
		if lcn >= len(ents) || e.Type == disk.LclusterTypeNonhead || !want(lcn) {
			continue
		}
		n, err := compactBlocksBefore(pack, k, big)
		if err != nil {
			return 0, fmt.Errorf("lcluster %d: %w", lcn, err)
		}
		if !found {
			base, found = ents[lcn].BlkAddr-n, true
			continue
		}
		if got := base + n; got != ents[lcn].BlkAddr {
			return 0, fmt.Errorf("%w: lcluster %d would read block %d, not %d", errNotCompact, lcn, got, ents[lcn].BlkAddr)
		}
	}
	return base, nil
}

var errNotCompact = fmt.Errorf("pclusters not contiguous for compact indexes")

// compactBlocksBefore is the kernel's count, for the HEAD entry k of a
// pack, of the blocks of the pclusters whose entries precede it in the
// pack (without big pclusters the count starts at 1: the base is then the
// first HEAD's address minus one).
func compactBlocksBefore(pack []disk.CompactEntry, k int, big bool) (uint32, error) {
	var n uint32
	i := k
	if !big {
		n = 1
		for i > 0 {
			i--
			if pack[i].Type == disk.LclusterTypeNonhead {
				i -= int(pack[i].Lo)
			}
			if i >= 0 {
				n++
			}
		}
		return n, nil
	}
	for i > 0 {
		i--
		e := pack[i]
		if e.Type != disk.LclusterTypeNonhead {
			n++
			continue
		}
		if e.Lo&disk.LID0CBlkCnt != 0 {
			i--
			n += uint32(e.Lo &^ disk.LID0CBlkCnt)
			continue
		}
		if e.Lo <= 1 {
			return 0, fmt.Errorf("%w: NONHEAD lookback %d without a block count", errNotCompact, e.Lo)
		}
		i -= int(e.Lo) - 2
	}
	return n, nil
}

// plan decides the index format of a compressed inode whose inode
// structure and inline xattrs take prefix bytes, and returns its layout
// and its size with everything that follows it (map header, index,
// inline tail pcluster). COMPACT indexes are used when the pclusters lie
// in logical order one after the other, which they describe implicitly.
func (z *zinode) plan(prefix int, big bool) (layout uint16, isize int, err error) {
	nlc := (z.size + blockSize - 1) / blockSize
	idx := fullIndexSize(nlc)
	layout = disk.LayoutCompressedFull
	z.compact = false
	if z.contiguous() {
		if c := compactIndexSize(prefix, nlc); c < idx {
			idx, layout, z.compact = c, disk.LayoutCompressedCompact, true
		}
	}
	isize = disk.AlignUp(prefix, 8) + idx + len(z.inline)
	if z.inline != nil && isize > blockSize {
		// The builder only inlines what fits with a FULL index.
		return 0, 0, fmt.Errorf("internal error: inline pcluster of %d bytes ends at %d, past the inode's block", len(z.inline), isize)
	}
	return layout, isize, nil
}

// contiguous reports whether every stored pcluster directly follows the
// one of the extent before it on the same device.
func (z *zinode) contiguous() bool {
	prev := -1
	for i, e := range z.exts {
		if e.inline {
			continue
		}
		if prev >= 0 && (z.devs[i] != z.devs[prev] || z.blks[i] != z.blks[prev]+z.exts[prev].blocks) {
			return false
		}
		prev = i
	}
	return true
}

// compressedBlocks is i_u for compressed inodes: the blocks of the
// file's pclusters (those shared with other files included).
func (z *zinode) compressedBlocks() uint32 {
	var n uint32
	for _, e := range z.exts {
		if !e.inline {
			n += e.blocks
		}
	}
	return n
}

// encode writes the map header, the index and the inline pcluster into
// dst, which starts prefix bytes after the inode's start (right after its
// inline xattrs) and ends where the inode's space ends.
func (z *zinode) encode(dst []byte, prefix int, cfg *zconfig, devBase []uint32) error {
	big := cfg.big()
	h := disk.MapHeader{AlgorithmType: uint8(cfg.alg)}
	if big {
		h.Advise |= disk.AdviseBigPcluster1
		if z.compact {
			// The kernel wants both or neither on compact inodes.
			h.Advise |= disk.AdviseBigPcluster2
		}
	}
	if z.compact {
		h.Advise |= disk.AdviseCompacted2B
	}
	if z.inline != nil {
		h.Advise |= disk.AdviseInlinePcluster
		h.SetIdataSize(uint16(len(z.inline)))
	}
	hp := disk.AlignUp(prefix, 8) - prefix
	h.Encode(dst[hp:])
	ents, err := lclusterIndexes(z.size, z.exts, big, func(i int) uint32 { return devBase[z.devs[i]] + z.blks[i] })
	if err != nil {
		return err
	}
	nlc := uint64(len(ents))
	var end int
	if z.compact {
		stored := make([]bool, nlc)
		for _, e := range z.exts {
			if !e.inline {
				stored[e.off/blockSize] = true
			}
		}
		end = hp + compactIndexSize(prefix, nlc)
		if err := encodeCompact(dst[hp+disk.MapHeaderSize:end], prefix, ents, big, func(lcn int) bool { return stored[lcn] }); err != nil {
			return err
		}
	} else {
		p := hp + disk.MapHeaderSize + disk.FullIndexReserved
		clear(dst[hp+disk.MapHeaderSize : p])
		for i := range ents {
			ents[i].Encode(dst[p:])
			p += disk.LclusterIndexSize
		}
		end = p
	}
	if len(dst) != end+len(z.inline) {
		return fmt.Errorf("internal error: compressed inode takes %d bytes, planned %d", end+len(z.inline), len(dst))
	}
	copy(dst[end:], z.inline)
	return nil
}
