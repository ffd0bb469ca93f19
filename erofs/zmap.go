package erofs

import (
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// Compressed inodes are mapped as the kernel's fs/erofs/zmap.c does: the
// file is cut into lclusters, each with an index entry; HEAD entries
// start an extent (at clusterofs inside their lcluster) and name its
// pcluster, NONHEAD entries point back to their HEAD (delta[0]) and
// forward to the next one (delta[1]). An extent's bytes are found by
// walking back from the lcluster that holds them to its HEAD, its
// length by walking forward to the next HEAD. Where 6.1 and newer
// kernels differ, the newer (superset) behaviour is followed and noted.

// Bounds of what this reader maps, as newer kernels bound it
// (z_erofs_map_sanity_check): an extent decodes to at most 12 MiB from a
// pcluster of at most 1 MiB. They also bound every walk over the index.
const (
	maxExtentLen   = disk.PclusterMaxDSize
	maxPclusterLen = disk.PclusterMaxSize
)

// zkind is how an extent's pcluster is stored.
type zkind uint8

const (
	zCompressed zkind = iota // an algorithm's stream (zextent.alg)
	zShifted                 // raw bytes from the pcluster's start
	zInterlaced              // raw bytes rotated inside the pcluster's blocks
	zFragment                // raw bytes in the packed inode
)

func (k zkind) String() string {
	switch k {
	case zCompressed:
		return "compressed"
	case zShifted:
		return "plain"
	case zInterlaced:
		return "plain interlaced"
	case zFragment:
		return "fragment"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// zinfo is a compressed inode's map header, decoded and checked as the
// kernel's z_erofs_fill_inode_lazy does.
type zinfo struct {
	advise uint16
	alg    [2]uint8 // HEAD1, HEAD2 algorithms
	lbits  uint     // lclusterbits
	full   bool     // FULL (8-byte) indexes, else COMPACT
	end    int64    // inode + inline xattrs end: indexes follow
	total  uint64   // COMPACT: index entries (ceil(i_size / block size))
	packs  disk.CompactLayout

	idataSize int64 // ztailpacking: encoded size of the inline tail pcluster (0: none)
	idataOff  int64 // its position in the primary device
	fragment  bool  // the tail extent (or whole file) lives in the packed inode
	fragOff   uint64
	tailHead  uint64 // lcn of the tail extent's HEAD (ztailpacking, fragments)
}

// indexEnd returns the position just past what the index of a file of
// size bytes occupies: the entry of its last lcluster and the inline
// tail pcluster. A file's size commits the image to holding that much,
// which bounds the size of a file an image can claim. 0 when the whole
// file is a fragment (it has no index).
func (zi *zinfo) indexEnd(size int64) uint64 {
	if size == 0 || (zi.fragment && zi.tailHead == 0) {
		return 0
	}
	var end uint64
	if zi.full {
		end = disk.FullIndexPos(uint64(zi.end), uint64(size-1)>>zi.lbits) + disk.LclusterIndexSize
	} else {
		end = zi.packs.End()
	}
	if zi.idataSize > 0 {
		end = max(end, uint64(zi.idataOff+zi.idataSize))
	}
	return end
}

// zextent is one extent of a compressed file: the file bytes [la,
// la+llen) and where their pcluster is.
type zextent struct {
	la, llen int64
	kind     zkind
	alg      uint8 // zCompressed: algorithm
	partial  bool  // PARTIAL_REF: the extent is a prefix of what the pcluster decodes to
	inline   bool  // ztailpacking: the pcluster follows the index in the primary device
	dev      int   // device after unified addressing (0 for inline)
	pa       int64 // byte address on dev (inline: in the primary device)
	plen     int64 // encoded bytes (zFragment: 0)
	fragOff  uint64
}

// zmapper walks one inode's index; its fields are the kernel's
// z_erofs_maprecorder.
type zmapper struct {
	img  *Image
	ino  *inode
	zi   *zinfo
	meta metaBuf

	lcn            uint64
	typ, headType  uint8
	clusterOfs     uint32
	delta          [2]uint32
	pblk           uint32
	compressedBlks uint32
	nextPackOff    int64
	partialRef     bool
}

// metaBuf keeps the last primary-device block an index walk read: one
// extent's lookups read the same block again and again.
type metaBuf struct {
	blk int64
	b   []byte
	ok  bool
}

// metaRead returns the n bytes at pos, which must not cross a block.
func (img *Image) metaRead(mb *metaBuf, pos int64, n int) ([]byte, error) {
	if pos < 0 {
		return nil, corruptf("metadata at negative offset %d", pos)
	}
	blk, off := pos>>img.blkBits, pos&(img.blkSize-1)
	if off+int64(n) > img.blkSize {
		return nil, corruptf("%d-byte structure at byte %d crosses a block boundary", n, pos)
	}
	if !mb.ok || mb.blk != blk {
		if mb.b == nil {
			mb.b = make([]byte, img.blkSize)
		}
		mb.ok = false
		if err := img.readDev(0, mb.b, blk<<img.blkBits); err != nil {
			return nil, err
		}
		mb.blk, mb.ok = blk, true
	}
	return mb.b[off : off+int64(n)], nil
}

// zinfoOf decodes the map header of a compressed inode and, for
// ztailpacking and fragments, finds its tail extent.
func (img *Image) zinfoOf(ino *inode, meta *metaBuf) (*zinfo, error) {
	zi := &zinfo{full: ino.layout() == disk.LayoutCompressedFull, end: ino.tailOff()}
	sbf := img.sb.FeatureIncompat
	if zi.full && sbf&(disk.IncompatBigPcluster|disk.IncompatZtailpacking|disk.IncompatFragments) == 0 {
		// Images older than these features: the kernel ignores the
		// header (z_erofs_fill_inode), though it is still reserved.
		zi.lbits = img.blkBits
		return zi, nil
	}
	b, err := img.metaRead(meta, int64(disk.MapHeaderPos(uint64(zi.end))), disk.MapHeaderSize)
	if err != nil {
		return nil, fmt.Errorf("nid %d map header: %w", ino.nid, err)
	}
	h, err := disk.DecodeMapHeader(b)
	if err != nil {
		return nil, fmt.Errorf("%w: nid %d map header: %w", ErrCorrupt, ino.nid, err)
	}
	if off, ok := h.WholeFileFragment(); ok {
		// The whole file is a fragment: the other header bits are its
		// offset in the packed inode.
		if sbf&disk.IncompatFragments == 0 {
			return nil, corruptf("nid %d: whole-file fragment without the fragments feature", ino.nid)
		}
		zi.advise = disk.AdviseFragmentPcluster
		zi.fragment, zi.fragOff = true, off
		zi.lbits = img.blkBits
		return zi, nil
	}
	zi.advise = h.Advise
	zi.alg = [2]uint8{h.HeadAlgorithm(1), h.HeadAlgorithm(2)}
	zi.lbits = h.LclusterBits(img.sb.BlkSzBits)
	if zi.full && zi.advise&disk.AdviseExtents != 0 {
		return nil, unsupportedf("nid %d: encoded extent records (Linux 6.15 format)", ino.nid)
	}
	if zi.lbits > 16 {
		// clusterofs is 16 bits: no valid image has larger lclusters.
		return nil, unsupportedf("nid %d: lclusterbits %d", ino.nid, zi.lbits)
	}
	if sbf&disk.IncompatBigPcluster == 0 && zi.advise&(disk.AdviseBigPcluster1|disk.AdviseBigPcluster2) != 0 {
		return nil, corruptf("nid %d: big pcluster advise without the superblock feature", ino.nid)
	}
	if !zi.full {
		if (zi.advise&disk.AdviseBigPcluster1 == 0) != (zi.advise&disk.AdviseBigPcluster2 == 0) {
			return nil, corruptf("nid %d: COMPACT indexes with big pclusters for one head type only (advise %#x)", ino.nid, zi.advise)
		}
		if zi.lbits > 14 {
			return nil, unsupportedf("nid %d: COMPACT indexes with lclusterbits %d", ino.nid, zi.lbits)
		}
		zi.total = uint64(img.blocksOf(ino.size))
		zi.packs = disk.NewCompactLayout(disk.CompactIndexBase(uint64(zi.end)), zi.total, zi.advise&disk.AdviseCompacted2B != 0)
	}
	// As newer kernels: a fragment offset takes the header's first word,
	// so the fragment advise wins over an inline tail.
	switch {
	case zi.advise&disk.AdviseFragmentPcluster != 0:
		if sbf&disk.IncompatFragments == 0 {
			return nil, corruptf("nid %d: fragment advise without the fragments feature", ino.nid)
		}
		zi.fragment, zi.fragOff = true, uint64(h.FragmentOff)
	case zi.advise&disk.AdviseInlinePcluster != 0:
		if sbf&disk.IncompatZtailpacking == 0 {
			return nil, corruptf("nid %d: inline pcluster advise without the ztailpacking feature", ino.nid)
		}
		zi.idataSize = int64(h.IdataSize())
		if zi.idataSize == 0 {
			return nil, corruptf("nid %d: inline pcluster of 0 bytes", ino.nid)
		}
	}
	if (zi.idataSize > 0 || zi.fragment) && ino.size > 0 {
		m := zmapper{img: img, ino: ino, zi: zi, meta: *meta}
		if _, err := m.mapAt(ino.size-1, true); err != nil {
			return nil, err
		}
		*meta = m.meta
	}
	return zi, nil
}

// load reads lcluster lcn's index entry into m.
func (m *zmapper) load(lcn uint64, lookahead bool) error {
	var err error
	if m.zi.full {
		err = m.loadFull(lcn)
	} else {
		err = m.loadCompact(lcn, lookahead)
	}
	if err != nil {
		return fmt.Errorf("nid %d lcluster %d: %w", m.ino.nid, lcn, err)
	}
	if m.typ != disk.LclusterTypeNonhead && m.clusterOfs >= 1<<m.zi.lbits {
		return corruptf("nid %d lcluster %d: clusterofs %d beyond the %d-byte lcluster", m.ino.nid, lcn, m.clusterOfs, 1<<m.zi.lbits)
	}
	return nil
}

func (m *zmapper) loadFull(lcn uint64) error {
	pos := int64(disk.FullIndexPos(uint64(m.zi.end), lcn))
	b, err := m.img.metaRead(&m.meta, pos, disk.LclusterIndexSize)
	if err != nil {
		return err
	}
	d, err := disk.DecodeLclusterIndex(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	m.lcn, m.typ, m.nextPackOff = lcn, d.Type, pos+disk.LclusterIndexSize
	if d.Type != disk.LclusterTypeNonhead {
		m.partialRef = d.PartialRef
		m.clusterOfs = uint32(d.ClusterOfs)
		m.pblk = d.BlkAddr
		return nil
	}
	m.clusterOfs = 1 << m.zi.lbits
	m.delta = [2]uint32{uint32(d.Delta[0]), uint32(d.Delta[1])}
	if d.Delta[0]&disk.LID0CBlkCnt != 0 {
		if m.zi.advise&(disk.AdviseBigPcluster1|disk.AdviseBigPcluster2) == 0 {
			return corruptf("CBLKCNT without big pclusters")
		}
		m.compressedBlks = uint32(d.Delta[0] &^ disk.LID0CBlkCnt)
		m.delta[0] = 1
	}
	return nil
}

// loadCompact decodes a COMPACT entry (the kernel's
// z_erofs_load_compact_lcluster / unpack_compacted_index).
func (m *zmapper) loadCompact(lcn uint64, lookahead bool) error {
	zi := m.zi
	if lcn >= zi.total {
		return corruptf("beyond the %d index entries", zi.total)
	}
	p, packPos, i := zi.packs.Locate(lcn)
	lobits := max(zi.lbits, 12)
	if !p.Fits(lobits) {
		return unsupportedf("%d-byte COMPACT pack with lclusterbits %d", p.Size, zi.lbits)
	}
	pack, err := m.img.metaRead(&m.meta, int64(packPos), p.Size)
	if err != nil {
		return err
	}
	entry := func(i int) (uint8, uint32) {
		e, _ := p.Entry(pack, lobits, i) // i is in range: checked by the callers' loops
		return e.Type, uint32(e.Lo)
	}
	m.lcn, m.nextPackOff = lcn, int64(packPos)+int64(p.Size)
	bigPcluster := zi.advise&disk.AdviseBigPcluster1 != 0
	typ, lo := entry(i)
	m.typ = typ
	if typ == disk.LclusterTypeNonhead {
		m.clusterOfs = 1 << zi.lbits
		if lookahead {
			m.delta[1] = compactLookahead(entry, p.VCnt, i)
		}
		if lo&disk.LID0CBlkCnt != 0 {
			if !bigPcluster {
				return corruptf("CBLKCNT without big pclusters")
			}
			m.compressedBlks = lo &^ disk.LID0CBlkCnt
			m.delta[0] = 1
			return nil
		}
		if i+1 != p.VCnt {
			m.delta[0] = lo
			return nil
		}
		// The pack's last entry holds delta[1]: delta[0] comes from
		// the entry before it.
		ptyp, plo := entry(i - 1)
		switch {
		case ptyp != disk.LclusterTypeNonhead:
			plo = 0
		case plo&disk.LID0CBlkCnt != 0:
			plo = 1
		}
		m.delta[0] = plo + 1
		return nil
	}
	m.clusterOfs = lo
	m.delta[0] = 0
	// A HEAD's block address is the pack base plus the pclusters of
	// the heads before it in the pack.
	var nblk uint32
	if !bigPcluster {
		nblk = 1
		for i > 0 {
			i--
			t, lo := entry(i)
			if t == disk.LclusterTypeNonhead {
				i -= int(lo)
			}
			if i >= 0 {
				nblk++
			}
		}
	} else {
		for i > 0 {
			i--
			t, lo := entry(i)
			if t != disk.LclusterTypeNonhead {
				nblk++
				continue
			}
			if lo&disk.LID0CBlkCnt != 0 {
				i--
				nblk += lo &^ disk.LID0CBlkCnt
				continue
			}
			if lo <= 1 { // with big pclusters the first NONHEAD is CBLKCNT
				return corruptf("COMPACT NONHEAD delta %d in a big-pcluster pack", lo)
			}
			i -= int(lo) - 2
		}
	}
	base, _ := p.Base(pack)
	m.pblk = base + nblk
	return nil
}

// compactLookahead is the kernel's get_compacted_la_distance: delta[1]
// of a NONHEAD entry, counted to the next HEAD inside the pack or taken
// from the pack's last entry.
func compactLookahead(entry func(int) (uint8, uint32), vcnt, i int) uint32 {
	var d1, lo uint32
	var t uint8
	for ; i < vcnt; i++ {
		t, lo = entry(i)
		if t != disk.LclusterTypeNonhead {
			return d1
		}
		d1++
	}
	if lo&disk.LID0CBlkCnt == 0 {
		d1 += lo - 1
	}
	return d1
}

// maxWalk bounds the lclusters an index walk may cross: an extent
// longer than maxExtentLen is refused anyway.
func (m *zmapper) maxWalk() uint64 { return maxExtentLen>>m.zi.lbits + 2 }

// lookback walks back from m.lcn by dist to the extent's HEAD
// (z_erofs_extent_lookback) and returns the extent's start.
func (m *zmapper) lookback(dist uint32) (int64, error) {
	start := m.lcn
	for uint64(dist) <= m.lcn {
		lcn := m.lcn - uint64(dist)
		if start-lcn > m.maxWalk() {
			return 0, unsupportedf("nid %d: extent at lcluster %d starts more than %d bytes before it", m.ino.nid, start, maxExtentLen)
		}
		if err := m.load(lcn, false); err != nil {
			return 0, err
		}
		if m.typ == disk.LclusterTypeNonhead {
			if dist = m.delta[0]; dist == 0 {
				return 0, corruptf("nid %d lcluster %d: lookback distance 0", m.ino.nid, lcn)
			}
			continue
		}
		m.headType = m.typ
		return int64(lcn)<<m.zi.lbits | int64(m.clusterOfs), nil
	}
	return 0, corruptf("nid %d: lookback distance %d from lcluster %d goes before the file", m.ino.nid, dist, m.lcn)
}

// compressedLen finds the pcluster size of the extent whose HEAD is
// m.lcn (z_erofs_get_extent_compressedlen, newer kernels: PLAIN
// pclusters may be big with BIG_PCLUSTER_2, and one block is the
// default size).
func (m *zmapper) compressedLen() (int64, error) {
	zi := m.zi
	big1 := zi.advise&disk.AdviseBigPcluster1 != 0
	big2 := zi.advise&disk.AdviseBigPcluster2 != 0
	lcn := m.lcn + 1
	if (m.headType == disk.LclusterTypeHead1 && !big1) ||
		((m.headType == disk.LclusterTypePlain || m.headType == disk.LclusterTypeHead2) && !big2) ||
		int64(lcn)<<zi.lbits >= m.ino.size {
		m.compressedBlks = 1
	}
	if m.compressedBlks == 0 {
		if err := m.load(lcn, false); err != nil {
			return 0, err
		}
		if m.typ != disk.LclusterTypeNonhead {
			// The next lcluster starts another extent: one block.
			m.compressedBlks = 1
		} else if m.delta[0] != 1 {
			return 0, corruptf("nid %d lcluster %d: first NONHEAD of a big pcluster has delta %d, not CBLKCNT", m.ino.nid, lcn, m.delta[0])
		} else if m.compressedBlks == 0 {
			return 0, corruptf("nid %d lcluster %d: no CBLKCNT after a big pcluster's HEAD", m.ino.nid, lcn)
		}
	}
	plen := int64(m.compressedBlks) << m.img.blkBits
	if plen > maxPclusterLen {
		return 0, unsupportedf("nid %d lcluster %d: %d-block pcluster above %d bytes", m.ino.nid, m.lcn, m.compressedBlks, maxPclusterLen)
	}
	return plen, nil
}

// decompressedLen finds where the extent starting at la (HEAD at or
// before m.lcn) ends: at the next HEAD or the end of the file
// (z_erofs_get_extent_decompressedlen). atHead reports the former.
func (m *zmapper) decompressedLen(la int64) (llen int64, atHead bool, err error) {
	lbits := m.zi.lbits
	size := m.ino.size
	headLcn := uint64(la) >> lbits
	for lcn := m.lcn; ; {
		if int64(lcn)<<lbits >= size {
			return size - la, false, nil
		}
		if lcn-headLcn > m.maxWalk() {
			return 0, false, unsupportedf("nid %d: extent at byte %d longer than %d bytes", m.ino.nid, la, maxExtentLen)
		}
		if err := m.load(lcn, true); err != nil {
			return 0, false, err
		}
		if m.typ == disk.LclusterTypeNonhead {
			// Pre-1.0 mkfs wrote delta[1] = 0; the kernel steps by one.
			lcn += uint64(max(m.delta[1], 1))
			continue
		}
		if lcn != headLcn {
			return int64(lcn)<<lbits + int64(m.clusterOfs) - la, true, nil
		}
		lcn++
	}
}

// kernelPlainEnd is the furthest end the kernel computes for a plain
// extent when it maps a page of it (z_erofs_do_map_blocks' m_la +
// m_llen): a page in a NONHEAD lcluster maps to the end of that
// lcluster, not of the file, and the kernel refuses a plain extent whose
// mapped length exceeds its pcluster. So a plain extent that ends inside
// an lcluster must end at a HEAD there (mkfs writes a PLAIN HEAD at the
// end of the file for this); Check and reads refuse what the kernel
// would.
func (m *zmapper) kernelPlainEnd(la, llen int64, atHead bool) int64 {
	lbits := m.zi.lbits
	head, last := uint64(la)>>lbits, uint64(la+llen-1)>>lbits
	switch {
	case atHead && last != head:
		return la + llen
	case last == head && m.zi.idataSize > 0:
		return min(int64(head+1)<<lbits, m.ino.size)
	}
	return int64(last+1) << lbits
}

// mapAt returns the extent holding file byte ofs (z_erofs_do_map_blocks
// followed by the decompressed length, so the extent is whole). With
// findTail it also records the tail extent's HEAD, where ztailpacking
// and fragments put the last extent.
func (m *zmapper) mapAt(ofs int64, findTail bool) (zextent, error) {
	// Each lookup starts afresh, as the kernel's maprecorder does: a
	// CBLKCNT seen for one extent must not size the next.
	*m = zmapper{img: m.img, ino: m.ino, zi: m.zi, meta: m.meta}
	zi, ino := m.zi, m.ino
	if ofs < 0 || ofs >= ino.size {
		return zextent{}, fmt.Errorf("erofs: nid %d: offset %d outside the %d-byte file", ino.nid, ofs, ino.size)
	}
	if zi.fragment && zi.tailHead == 0 && !findTail {
		// The tail extent starts in lcluster 0: the whole file is
		// in the packed inode.
		return zextent{la: 0, llen: ino.size, kind: zFragment, fragOff: zi.fragOff}, nil
	}
	lbits := zi.lbits
	initial := uint64(ofs) >> lbits
	endoff := uint32(ofs & (1<<lbits - 1))
	if err := m.load(initial, false); err != nil {
		return zextent{}, err
	}
	if findTail && zi.idataSize > 0 {
		zi.idataOff = m.nextPackOff
	}
	var la int64
	var err error
	if m.typ != disk.LclusterTypeNonhead && endoff >= m.clusterOfs {
		m.headType = m.typ
		la = int64(m.lcn)<<lbits | int64(m.clusterOfs)
	} else {
		dist := m.delta[0]
		if m.typ != disk.LclusterTypeNonhead {
			// ofs is before this HEAD's extent: it belongs to the
			// previous one.
			if m.lcn == 0 {
				return zextent{}, corruptf("nid %d: lcluster 0 starts its extent at %d, after byte %d", ino.nid, m.clusterOfs, ofs)
			}
			dist = 1
		}
		if la, err = m.lookback(dist); err != nil {
			return zextent{}, err
		}
	}
	ext := zextent{la: la, partial: m.partialRef}
	if findTail {
		zi.tailHead = m.lcn
		if zi.fragment && zi.full {
			// FULL indexes keep a 64-bit fragment offset's high half
			// in the tail HEAD's block address.
			zi.fragOff |= uint64(m.pblk) << 32
		}
	}
	switch {
	case zi.idataSize > 0 && m.lcn == zi.tailHead:
		ext.inline, ext.pa, ext.plen = true, zi.idataOff, zi.idataSize
		if ext.pa&(m.img.blkSize-1)+ext.plen > m.img.blkSize {
			return zextent{}, corruptf("nid %d: inline pcluster [%d, %d) crosses a block boundary", ino.nid, ext.pa, ext.pa+ext.plen)
		}
	case zi.fragment && m.lcn == zi.tailHead:
		ext.kind, ext.fragOff = zFragment, zi.fragOff
	default:
		ext.pa = int64(m.pblk) << m.img.blkBits
		if ext.plen, err = m.compressedLen(); err != nil {
			return zextent{}, err
		}
	}
	var atHead bool
	if ext.llen, atHead, err = m.decompressedLen(la); err != nil {
		return zextent{}, err
	}
	if ext.llen <= 0 || ofs < la || ofs >= la+ext.llen {
		return zextent{}, corruptf("nid %d: extent [%d, %d) found for byte %d", ino.nid, la, la+ext.llen, ofs)
	}
	if ext.llen > maxExtentLen {
		return zextent{}, unsupportedf("nid %d: extent [%d, %d) longer than %d bytes", ino.nid, la, la+ext.llen, maxExtentLen)
	}
	if ext.kind == zFragment {
		return ext, nil
	}
	switch m.headType {
	case disk.LclusterTypePlain:
		if end := m.kernelPlainEnd(la, ext.llen, atHead); end-la > ext.plen {
			return zextent{}, corruptf("nid %d: plain extent [%d, %d) (mapped to %d) longer than its %d-byte pcluster", ino.nid, la, la+ext.llen, end, ext.plen)
		}
		ext.kind = zShifted
		if zi.advise&disk.AdviseInterlacedPcluster != 0 && !ext.inline {
			ext.kind = zInterlaced
		}
	default:
		ext.alg = zi.alg[0]
		if m.headType == disk.LclusterTypeHead2 {
			ext.alg = zi.alg[1]
		}
		if ext.alg >= disk.ComprMax {
			return zextent{}, unsupportedf("nid %d: compression algorithm %d", ino.nid, ext.alg)
		}
		if m.img.z.algs&(1<<ext.alg) == 0 {
			return zextent{}, corruptf("nid %d: algorithm %d not in the superblock's %#x", ino.nid, ext.alg, m.img.z.algs)
		}
	}
	if !ext.inline {
		if ext.dev, ext.pa, err = m.img.translate(ext.pa, ext.plen); err != nil {
			return zextent{}, fmt.Errorf("nid %d extent at %d: %w", ino.nid, la, err)
		}
	}
	return ext, nil
}
