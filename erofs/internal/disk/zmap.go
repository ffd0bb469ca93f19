package disk

import (
	"errors"
	"fmt"
)

// Compressed inodes (layouts LayoutCompressedFull and
// LayoutCompressedCompact) describe their data with a map header followed
// by an array of logical cluster ("lcluster") indexes. The file is cut
// into lclusters of 2^lclusterbits bytes; variable-length extents of the
// file are each stored in one physical cluster ("pcluster"), compressed
// or raw ("plain"). Names follow the kernel's erofs_fs.h.
//
// Positions, with end = inode offset + inode size + inline xattr size:
//
//	map header         ALIGN(end, 8)                  8 bytes
//	FULL indexes       ALIGN(end, 8) + 16             8 bytes per lcluster
//	COMPACT indexes    ALIGN(end, 8) + 8              packs, see CompactLayout

// Sizes and limits of the compression format.
const (
	MapHeaderSize     = 8
	LclusterIndexSize = 8
	// FullIndexReserved is the gap between the map header and the first
	// FULL index (reserved bytes the kernel skips).
	FullIndexReserved = 8

	// PclusterMaxSize is the largest encoded pcluster the kernel accepts.
	PclusterMaxSize = 1 << 20
	// PclusterMaxDSize is the largest decoded extent newer kernels accept
	// (Z_EROFS_PCLUSTER_MAX_DSIZE).
	PclusterMaxDSize = 12 << 20
	// LZMAMaxDictSize and ZstdMaxDictSize bound the configured windows.
	LZMAMaxDictSize = 8 * PclusterMaxSize
	LZMAMinDictSize = 4096
	ZstdMaxDictSize = PclusterMaxSize
	// ZstdWindowLogMin is ZSTD_WINDOWLOG_ABSOLUTEMIN: the configured
	// windowlog is stored minus this value.
	ZstdWindowLogMin = 10
	// DeflateWindowBitsMin and DeflateWindowBitsMax bound the DEFLATE
	// window configuration.
	DeflateWindowBitsMin = 8
	DeflateWindowBitsMax = 15
)

// Aliases of incompatible feature bits that share a bit with another
// feature: the kernel treats the bit as "supports both".
const (
	IncompatLZ4ZeroPadding = IncompatZeroPadding
	IncompatBigPcluster    = IncompatComprCfgs
	IncompatComprHead2     = IncompatDeviceTable
	IncompatDedupe         = IncompatFragments
)

// Compression algorithms (h_algorithmtype nibbles, bits of
// available_compr_algs).
const (
	ComprLZ4     = 0
	ComprLZMA    = 1
	ComprDeflate = 2
	ComprZstd    = 3
	ComprMax     = 4

	// AllComprAlgs is every algorithm bit a reader may meet.
	AllComprAlgs = 1<<ComprMax - 1
	// ComprAlgsLinux61 is every algorithm a Linux 6.1 kernel knows.
	ComprAlgsLinux61 = 1<<ComprLZ4 | 1<<ComprLZMA
)

// Map header h_advise bits.
const (
	AdviseCompacted2B        = 0x0001 // COMPACT layout: 2-byte packs in the middle
	AdviseExtents            = 0x0001 // FULL layout (≥6.15): encoded extent records, not lclusters
	AdviseBigPcluster1       = 0x0002 // HEAD1 pclusters may span several blocks (CBLKCNT)
	AdviseBigPcluster2       = 0x0004 // HEAD2 (and newer: PLAIN) pclusters may span several blocks
	AdviseInlinePcluster     = 0x0008 // ztailpacking: the tail pcluster follows the indexes
	AdviseInterlacedPcluster = 0x0010 // PLAIN pclusters are stored interlaced, not shifted
	AdviseFragmentPcluster   = 0x0020 // the tail extent lives in the packed inode
)

// MapHeaderFragmentInode is the bit of h_clusterbits (bit 63 of the
// header read as a little-endian u64) saying the whole file lives in the
// packed inode; the other 63 bits are then its offset there.
const MapHeaderFragmentInode = 0x80

// Lcluster types (di_advise bits 0..1, and the type of compact entries).
const (
	LclusterTypePlain   = 0 // HEAD of a raw (uncompressed) pcluster
	LclusterTypeHead1   = 1 // HEAD of a pcluster compressed with the HEAD1 algorithm
	LclusterTypeNonhead = 2 // inside an extent that started in an earlier lcluster
	LclusterTypeHead2   = 3 // HEAD of a pcluster compressed with the HEAD2 algorithm
	LclusterTypeMask    = 3
)

// Lcluster index flags.
const (
	// LIPartialRef (FULL indexes, HEAD types) marks an extent that uses
	// only part of its pcluster's decoded output (dedupe).
	LIPartialRef = 1 << 15
	// LID0CBlkCnt in delta[0] of the first NONHEAD lcluster of a big
	// pcluster marks the low bits as the pcluster's block count.
	LID0CBlkCnt = 1 << 11
	// LID0Mask is the part of delta[0] / a compact entry's lo value below
	// the CBLKCNT flag.
	LID0Mask = LID0CBlkCnt - 1
)

// ErrBadIndex reports a compressed-inode structure that cannot be encoded
// or decoded as asked (wrong lcluster size for a pack, value out of range).
var ErrBadIndex = errors.New("erofs: bad compressed index")

// MapHeader is the 8-byte header of a compressed inode's index.
type MapHeader struct {
	// FragmentOff is h_fragmentoff (bytes 0..3). With
	// AdviseInlinePcluster its high 16 bits are h_idata_size instead
	// (see IdataSize); the two are never used together.
	FragmentOff   uint32
	Advise        uint16
	AlgorithmType uint8 // bits 0..3: HEAD1 algorithm; bits 4..7: HEAD2 algorithm
	ClusterBits   uint8 // bits 0..3: lclusterbits - blkszbits; bit 7: MapHeaderFragmentInode
}

// DecodeMapHeader decodes a map header.
func DecodeMapHeader(b []byte) (MapHeader, error) {
	if err := need(b, MapHeaderSize, "map header"); err != nil {
		return MapHeader{}, err
	}
	return MapHeader{
		FragmentOff:   le.Uint32(b[0:]),
		Advise:        le.Uint16(b[4:]),
		AlgorithmType: b[6],
		ClusterBits:   b[7],
	}, nil
}

// Encode writes the header into b[:MapHeaderSize].
func (h *MapHeader) Encode(b []byte) {
	_ = b[MapHeaderSize-1]
	le.PutUint32(b[0:], h.FragmentOff)
	le.PutUint16(b[4:], h.Advise)
	b[6] = h.AlgorithmType
	b[7] = h.ClusterBits
}

// IdataSize is h_idata_size: the encoded size of the inline (ztailpacking)
// pcluster.
func (h *MapHeader) IdataSize() uint16 { return uint16(h.FragmentOff >> 16) }

// SetIdataSize stores h_idata_size, keeping h_reserved1 (bytes 0..1).
func (h *MapHeader) SetIdataSize(n uint16) {
	h.FragmentOff = h.FragmentOff&0xFFFF | uint32(n)<<16
}

// HeadAlgorithm returns the algorithm of HEAD1 (head=1) or HEAD2 (head=2)
// pclusters.
func (h *MapHeader) HeadAlgorithm(head int) uint8 {
	if head == 2 {
		return h.AlgorithmType >> 4
	}
	return h.AlgorithmType & 0xF
}

// LclusterBits returns the lcluster size shift for a block size shift.
// Newer kernels read 4 bits of h_clusterbits, 6.1 reads 3; mkfs writes 0.
func (h *MapHeader) LclusterBits(blkSzBits uint8) uint {
	return uint(blkSzBits) + uint(h.ClusterBits&0xF)
}

// WholeFileFragment reports whether the whole file lives in the packed
// inode, and at which offset there.
func (h *MapHeader) WholeFileFragment() (off uint64, ok bool) {
	if h.ClusterBits&MapHeaderFragmentInode == 0 {
		return 0, false
	}
	v := uint64(h.FragmentOff) | uint64(h.Advise)<<32 | uint64(h.AlgorithmType)<<48 |
		uint64(h.ClusterBits&^MapHeaderFragmentInode)<<56
	return v, true
}

// WholeFileFragmentHeader returns the header of a file stored entirely in
// the packed inode at off (off < 2^63).
func WholeFileFragmentHeader(off uint64) MapHeader {
	return MapHeader{
		FragmentOff:   uint32(off),
		Advise:        uint16(off >> 32),
		AlgorithmType: uint8(off >> 48),
		ClusterBits:   uint8(off>>56)&^MapHeaderFragmentInode | MapHeaderFragmentInode,
	}
}

// MapHeaderPos returns the position of the map header of an inode whose
// inode structure and inline xattrs end at end.
func MapHeaderPos(end uint64) uint64 { return AlignUp64(end, 8) }

// FullIndexPos returns the position of FULL lcluster index lcn.
func FullIndexPos(end, lcn uint64) uint64 {
	return MapHeaderPos(end) + MapHeaderSize + FullIndexReserved + lcn*LclusterIndexSize
}

// CompactIndexBase returns the position of the first COMPACT pack.
func CompactIndexBase(end uint64) uint64 { return MapHeaderPos(end) + MapHeaderSize }

// LclusterIndex is one 8-byte FULL lcluster index.
type LclusterIndex struct {
	Type       uint8 // LclusterType*
	PartialRef bool  // LIPartialRef (HEAD types only)
	// ClusterOfs is di_clusterofs: for HEAD types where in the lcluster
	// the extent starts. NONHEAD entries carry one too (mkfs writes it;
	// readers ignore it).
	ClusterOfs uint16
	BlkAddr    uint32 // HEAD types: first block of the pcluster
	// Delta is di_u.delta for NONHEAD: [0] lclusters back to the HEAD
	// (or LID0CBlkCnt|blocks on the first NONHEAD of a big pcluster),
	// [1] lclusters forward to the next HEAD or to the end of the file.
	Delta [2]uint16
}

// IsHead reports whether the entry starts an extent.
func (d *LclusterIndex) IsHead() bool { return d.Type != LclusterTypeNonhead }

// DecodeLclusterIndex decodes one FULL lcluster index.
func DecodeLclusterIndex(b []byte) (LclusterIndex, error) {
	if err := need(b, LclusterIndexSize, "lcluster index"); err != nil {
		return LclusterIndex{}, err
	}
	advise := le.Uint16(b[0:])
	d := LclusterIndex{Type: uint8(advise & LclusterTypeMask), ClusterOfs: le.Uint16(b[2:])}
	if d.Type == LclusterTypeNonhead {
		d.Delta = [2]uint16{le.Uint16(b[4:]), le.Uint16(b[6:])}
	} else {
		d.PartialRef = advise&LIPartialRef != 0
		d.BlkAddr = le.Uint32(b[4:])
	}
	return d, nil
}

// Encode writes the index into b[:LclusterIndexSize].
func (d *LclusterIndex) Encode(b []byte) {
	_ = b[LclusterIndexSize-1]
	advise := uint16(d.Type & LclusterTypeMask)
	if d.Type == LclusterTypeNonhead {
		le.PutUint16(b[4:], d.Delta[0])
		le.PutUint16(b[6:], d.Delta[1])
	} else {
		if d.PartialRef {
			advise |= LIPartialRef
		}
		le.PutUint32(b[4:], d.BlkAddr)
	}
	le.PutUint16(b[0:], advise)
	le.PutUint16(b[2:], d.ClusterOfs)
}

// COMPACT indexes store lclusters in packs: a little-endian bit stream of
// vcnt entries (lo | type << lobits, encodebits each) followed by a u32
// base block address in the pack's last 4 bytes. lobits is lclusterbits
// (newer kernels, which allow blocks below 4 KiB: max(lclusterbits, 12),
// so that LID0CBlkCnt fits). 4-byte packs (8 bytes, 2 entries, 16 bits
// each) need lobits ≤ 14; 2-byte packs (32 bytes, 16 entries, 14 bits
// each) need lobits = 12. lo is the
// clusterofs of HEAD entries and delta[0] (or LID0CBlkCnt|blocks) of
// NONHEAD ones, except that the last entry of a pack stores delta[1] when
// NONHEAD. HEAD block addresses are not stored: they follow from the pack
// base and the pcluster sizes of the heads before them in the pack (see
// the kernel's unpack_compacted_index).

// CompactPack describes one of the two pack kinds.
type CompactPack struct {
	Size       int // bytes per pack
	VCnt       int // entries per pack
	EncodeBits int // bits per entry
}

// The two pack kinds.
var (
	CompactPack4B = CompactPack{Size: 8, VCnt: 2, EncodeBits: 16}
	CompactPack2B = CompactPack{Size: 32, VCnt: 16, EncodeBits: 14}
)

// Fits reports whether entries of loBits fit the pack, as the kernel
// requires.
func (p CompactPack) Fits(loBits uint) bool {
	if p.VCnt == CompactPack2B.VCnt {
		return loBits == 12
	}
	return loBits <= 14
}

// CompactEntry is one decoded COMPACT entry.
type CompactEntry struct {
	Type uint8  // LclusterType*
	Lo   uint16 // clusterofs, delta[0] (or LID0CBlkCnt|blocks), or delta[1] for a pack's last NONHEAD
}

// Entry decodes entry i of pack (the pack's Size bytes).
func (p CompactPack) Entry(pack []byte, loBits uint, i int) (CompactEntry, error) {
	if err := need(pack, p.Size, "compact pack"); err != nil {
		return CompactEntry{}, err
	}
	if i < 0 || i >= p.VCnt || !p.Fits(loBits) {
		return CompactEntry{}, fmt.Errorf("%w: entry %d of a %d-byte pack, lobits %d", ErrBadIndex, i, p.Size, loBits)
	}
	pos := p.EncodeBits * i
	v := le.Uint32(pack[pos/8:]) >> (pos & 7)
	return CompactEntry{
		Type: uint8(v>>loBits) & LclusterTypeMask,
		Lo:   uint16(v & (1<<loBits - 1)),
	}, nil
}

// Base returns the pack's base block address.
func (p CompactPack) Base(pack []byte) (uint32, error) {
	if err := need(pack, p.Size, "compact pack"); err != nil {
		return 0, err
	}
	return le.Uint32(pack[p.Size-4:]), nil
}

// Encode writes a whole pack into b[:p.Size]: len(entries) must be VCnt
// and every Lo must fit in loBits.
func (p CompactPack) Encode(b []byte, loBits uint, entries []CompactEntry, base uint32) error {
	if err := need(b, p.Size, "compact pack"); err != nil {
		return err
	}
	if len(entries) != p.VCnt || !p.Fits(loBits) {
		return fmt.Errorf("%w: %d entries for a %d-byte pack, lobits %d", ErrBadIndex, len(entries), p.Size, loBits)
	}
	clear(b[:p.Size])
	for i, e := range entries {
		if uint(e.Lo) >= 1<<loBits || e.Type > LclusterTypeMask {
			return fmt.Errorf("%w: entry %d: lo %#x type %d with lobits %d", ErrBadIndex, i, e.Lo, e.Type, loBits)
		}
		v := uint32(e.Lo) | uint32(e.Type)<<loBits
		pos := p.EncodeBits * i
		for k := 0; k < p.EncodeBits; k++ {
			if v>>k&1 != 0 {
				bit := pos + k
				b[bit/8] |= 1 << (bit & 7)
			}
		}
	}
	le.PutUint32(b[p.Size-4:], base)
	return nil
}

// CompactLayout says where each lcluster's COMPACT entry is: the first
// Initial4B lclusters in 4-byte packs (to reach 32-byte alignment), then
// Compact2B lclusters in 2-byte packs (with AdviseCompacted2B), the rest
// in 4-byte packs.
type CompactLayout struct {
	Base      uint64 // position of the first pack (CompactIndexBase)
	Total     uint64 // entries: ceil(i_size / block size), as the kernel counts them
	Initial4B uint64
	Compact2B uint64
}

// NewCompactLayout computes the layout as the kernel does
// (compacted_load_cluster_from_disk).
func NewCompactLayout(base, total uint64, compacted2B bool) CompactLayout {
	l := CompactLayout{Base: base, Total: total}
	l.Initial4B = (32 - base%32) / 4
	if l.Initial4B == 32/4 {
		l.Initial4B = 0
	}
	if compacted2B && l.Initial4B < total {
		l.Compact2B = (total - l.Initial4B) / 16 * 16
	}
	return l
}

// Locate returns the pack holding lcluster lcn, the pack's position, and
// the entry's index in it. lcn must be below Total. (Total counts blocks,
// ceil(i_size / block size), as the kernel's totalidx does.)
func (l CompactLayout) Locate(lcn uint64) (p CompactPack, packPos uint64, i int) {
	pos := l.Base
	p = CompactPack4B
	switch {
	case lcn < l.Initial4B:
	case lcn < l.Initial4B+l.Compact2B:
		pos += l.Initial4B * 4
		lcn -= l.Initial4B
		p = CompactPack2B
	default:
		pos += l.Initial4B*4 + l.Compact2B*2
		lcn -= l.Initial4B + l.Compact2B
	}
	amortized := uint64(p.Size / p.VCnt)
	entryPos := pos + lcn*amortized
	// Packs are aligned to their own size in the image: the kernel rounds
	// the entry position down to find the pack.
	packPos = entryPos / uint64(p.Size) * uint64(p.Size)
	return p, packPos, int((entryPos - packPos) / amortized)
}

// End returns the position just past the index area: the pack holding
// the last lcluster ends there (the inline pcluster of ztailpacking
// starts there).
func (l CompactLayout) End() uint64 {
	if l.Total == 0 {
		return l.Base
	}
	p, packPos, _ := l.Locate(l.Total - 1)
	return packPos + uint64(p.Size)
}

// Compression configuration records follow the superblock (at byte
// SuperOffset + sb size) when IncompatComprCfgs is set: for each bit of
// available_compr_algs in ascending order, at a 4-byte aligned position,
// a u16 length (0 means 65536) and that many payload bytes. Without
// IncompatComprCfgs only LZ4 is available and the superblock's U1 is
// lz4_max_distance.

// Payload sizes of the configuration records.
const (
	LZ4CfgsSize     = 14
	LZMACfgsSize    = 14
	DeflateCfgsSize = 6
	ZstdCfgsSize    = 6
)

// ComprCfgRecord is one decoded configuration record.
type ComprCfgRecord struct {
	Alg  uint8
	Data []byte // the payload (aliasing the input)
}

// DecodeComprCfgs decodes the records of algs from b, which starts at
// SuperOffset + sb size in the image (a 4-byte aligned position, as
// alignment is relative to it). It returns the records and the bytes
// consumed.
func DecodeComprCfgs(b []byte, algs uint16) ([]ComprCfgRecord, int, error) {
	var recs []ComprCfgRecord
	off := 0
	for alg := 0; alg < 16; alg++ {
		if algs&(1<<alg) == 0 {
			continue
		}
		off = AlignUp(off, 4)
		if err := need(b[min(off, len(b)):], 2, fmt.Sprintf("compression config %d length", alg)); err != nil {
			return nil, 0, err
		}
		n := int(le.Uint16(b[off:]))
		if n == 0 {
			n = 1 << 16
		}
		off += 2
		if err := need(b[off:], n, fmt.Sprintf("compression config %d", alg)); err != nil {
			return nil, 0, err
		}
		recs = append(recs, ComprCfgRecord{Alg: uint8(alg), Data: b[off : off+n]})
		off += n
	}
	return recs, off, nil
}

// ComprCfgsSize returns the bytes EncodeComprCfgs writes for records
// (sorted by algorithm, payloads of 1..65535 bytes).
func ComprCfgsSize(recs []ComprCfgRecord) int {
	off := 0
	for _, r := range recs {
		off = AlignUp(off, 4) + 2 + len(r.Data)
	}
	return off
}

// EncodeComprCfgs writes records into b[:ComprCfgsSize(recs)], zeroing
// alignment gaps. Records must be in ascending algorithm order, one per
// algorithm, as available_compr_algs lists them.
func EncodeComprCfgs(b []byte, recs []ComprCfgRecord) error {
	if err := need(b, ComprCfgsSize(recs), "compression configs"); err != nil {
		return err
	}
	off := 0
	for i, r := range recs {
		if i > 0 && r.Alg <= recs[i-1].Alg || len(r.Data) == 0 || len(r.Data) > 0xFFFF {
			return fmt.Errorf("%w: compression config %d (algorithm %d, %d bytes) out of order or size", ErrBadIndex, i, r.Alg, len(r.Data))
		}
		a := AlignUp(off, 4)
		clear(b[off:a])
		le.PutUint16(b[a:], uint16(len(r.Data)))
		copy(b[a+2:], r.Data)
		off = a + 2 + len(r.Data)
	}
	return nil
}

// LZ4Cfgs is the LZ4 configuration record.
type LZ4Cfgs struct {
	MaxDistance     uint16 // LZ4 window; 0 means 64 KiB
	MaxPclusterBlks uint16 // 0 means 1
	Reserved        [10]byte
}

// DecodeLZ4Cfgs decodes an LZ4 record payload.
func DecodeLZ4Cfgs(b []byte) (LZ4Cfgs, error) {
	var c LZ4Cfgs
	if err := need(b, LZ4CfgsSize, "lz4 config"); err != nil {
		return c, err
	}
	c.MaxDistance = le.Uint16(b[0:])
	c.MaxPclusterBlks = le.Uint16(b[2:])
	copy(c.Reserved[:], b[4:14])
	return c, nil
}

// Encode writes the payload into b[:LZ4CfgsSize].
func (c *LZ4Cfgs) Encode(b []byte) {
	_ = b[LZ4CfgsSize-1]
	le.PutUint16(b[0:], c.MaxDistance)
	le.PutUint16(b[2:], c.MaxPclusterBlks)
	copy(b[4:14], c.Reserved[:])
}

// LZMACfgs is the MicroLZMA configuration record.
type LZMACfgs struct {
	DictSize uint32 // LZMAMinDictSize..LZMAMaxDictSize
	Format   uint16 // must be 0
	Reserved [8]byte
}

// DecodeLZMACfgs decodes an LZMA record payload.
func DecodeLZMACfgs(b []byte) (LZMACfgs, error) {
	var c LZMACfgs
	if err := need(b, LZMACfgsSize, "lzma config"); err != nil {
		return c, err
	}
	c.DictSize = le.Uint32(b[0:])
	c.Format = le.Uint16(b[4:])
	copy(c.Reserved[:], b[6:14])
	return c, nil
}

// Encode writes the payload into b[:LZMACfgsSize].
func (c *LZMACfgs) Encode(b []byte) {
	_ = b[LZMACfgsSize-1]
	le.PutUint32(b[0:], c.DictSize)
	le.PutUint16(b[4:], c.Format)
	copy(b[6:14], c.Reserved[:])
}

// DeflateCfgs is the DEFLATE configuration record.
type DeflateCfgs struct {
	WindowBits uint8 // DeflateWindowBitsMin..DeflateWindowBitsMax
	Reserved   [5]byte
}

// DecodeDeflateCfgs decodes a DEFLATE record payload.
func DecodeDeflateCfgs(b []byte) (DeflateCfgs, error) {
	var c DeflateCfgs
	if err := need(b, DeflateCfgsSize, "deflate config"); err != nil {
		return c, err
	}
	c.WindowBits = b[0]
	copy(c.Reserved[:], b[1:6])
	return c, nil
}

// Encode writes the payload into b[:DeflateCfgsSize].
func (c *DeflateCfgs) Encode(b []byte) {
	_ = b[DeflateCfgsSize-1]
	b[0] = c.WindowBits
	copy(b[1:6], c.Reserved[:])
}

// ZstdCfgs is the Zstandard configuration record.
type ZstdCfgs struct {
	Format    uint8 // must be 0
	WindowLog uint8 // window log minus ZstdWindowLogMin
	Reserved  [4]byte
}

// DecodeZstdCfgs decodes a Zstandard record payload.
func DecodeZstdCfgs(b []byte) (ZstdCfgs, error) {
	var c ZstdCfgs
	if err := need(b, ZstdCfgsSize, "zstd config"); err != nil {
		return c, err
	}
	c.Format = b[0]
	c.WindowLog = b[1]
	copy(c.Reserved[:], b[2:6])
	return c, nil
}

// Encode writes the payload into b[:ZstdCfgsSize].
func (c *ZstdCfgs) Encode(b []byte) {
	_ = b[ZstdCfgsSize-1]
	b[0] = c.Format
	b[1] = c.WindowLog
	copy(b[2:6], c.Reserved[:])
}
