// Package disk holds the EROFS on-disk structures and their explicit
// little-endian encodings. It knows nothing about files or trees: every
// decoder checks the length of its input before reading a byte, and every
// encoder writes into a caller-provided buffer of the exact size.
package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Sizes and fixed positions of the format.
const (
	SuperOffset       = 1024       // byte offset of the superblock in the primary device
	SuperMagic        = 0xE0F5E1E2 // superblock magic
	SuperSize         = 128        // base superblock size (sb_extslots = 0)
	InodeSlotSize     = 32         // nid unit
	CompactInodeSize  = 32
	ExtendedInodeSize = 64
	DirentSize        = 12
	DeviceSlotSize    = 128
	ChunkIndexSize    = 8
	XattrHeaderSize   = 12
	XattrEntrySize    = 4
	XattrAlign        = 4
	MaxNameLen        = 255
	NullAddr          = 0xFFFFFFFF // "no block": holes in chunk indexes, no data in flat inodes
)

// Compatible feature bits (unknown ones are ignored by the kernel).
const (
	CompatSuperChecksum = 0x00000001
	CompatMtime         = 0x00000002
	CompatXattrFilter   = 0x00000004
)

// Incompatible feature bits (an unknown one fails the mount).
const (
	IncompatZeroPadding   = 0x00000001
	IncompatComprCfgs     = 0x00000002 // also BIG_PCLUSTER
	IncompatChunkedFile   = 0x00000004
	IncompatDeviceTable   = 0x00000008 // also COMPR_HEAD2
	IncompatZtailpacking  = 0x00000010
	IncompatFragments     = 0x00000020 // also DEDUPE
	IncompatXattrPrefixes = 0x00000040
	Incompat48Bit         = 0x00000080
	IncompatMetabox       = 0x00000100

	// IncompatLinux61 is every incompat bit a Linux 6.1 kernel accepts.
	IncompatLinux61 = 0x3F
)

// Inode data layouts (i_format bits 1..3).
const (
	LayoutFlatPlain         = 0
	LayoutCompressedFull    = 1
	LayoutFlatInline        = 2
	LayoutCompressedCompact = 3
	LayoutChunkBased        = 4
)

// Chunk format bits (low 16 bits of i_u for chunk-based inodes).
const (
	ChunkFormatBlkBitsMask = 0x001F
	ChunkFormatIndexes     = 0x0020
	ChunkFormat48Bit       = 0x0040
)

// Directory entry file types.
const (
	FTUnknown = 0
	FTRegFile = 1
	FTDir     = 2
	FTChrdev  = 3
	FTBlkdev  = 4
	FTFifo    = 5
	FTSock    = 6
	FTSymlink = 7
	FTMax     = 8
)

// Xattr name indexes (short prefixes).
const (
	XattrIndexUser            = 1
	XattrIndexPosixACLAccess  = 2
	XattrIndexPosixACLDefault = 3
	XattrIndexTrusted         = 4
	XattrIndexLustre          = 5
	XattrIndexSecurity        = 6
	XattrLongPrefixFlag       = 0x80
)

// Errors returned by the decoders. Callers add context (nid, offset).
var (
	ErrShort    = errors.New("erofs: structure truncated")
	ErrBadMagic = errors.New("erofs: bad superblock magic")
)

var le = binary.LittleEndian

func need(b []byte, n int, what string) error {
	if len(b) < n {
		return fmt.Errorf("%w: %s needs %d bytes, have %d", ErrShort, what, n, len(b))
	}
	return nil
}

// Superblock is the 128-byte EROFS superblock (sb_extslots = 0 layout).
// Field names follow the kernel's 6.1 header; reserved bytes are kept so
// that an image can be decoded and re-encoded unchanged.
type Superblock struct {
	Magic            uint32
	Checksum         uint32
	FeatureCompat    uint32
	BlkSzBits        uint8
	ExtSlots         uint8
	RootNid          uint16
	Inos             uint64
	BuildTime        uint64
	BuildTimeNsec    uint32
	Blocks           uint32
	MetaBlkAddr      uint32
	XattrBlkAddr     uint32
	UUID             [16]byte
	VolumeName       [16]byte
	FeatureIncompat  uint32
	U1               uint16 // lz4_max_distance or available_compr_algs
	ExtraDevices     uint16
	DevtSlotOff      uint16
	DirBlkBits       uint8
	XattrPrefixCount uint8
	XattrPrefixStart uint32
	PackedNid        uint64
	Reserved         [24]byte // 0x68..0x7F
}

// DecodeSuperblock decodes the superblock from b, which starts at byte
// SuperOffset of the image. It checks only the length and the magic.
func DecodeSuperblock(b []byte) (Superblock, error) {
	var s Superblock
	if err := need(b, SuperSize, "superblock"); err != nil {
		return s, err
	}
	s.Magic = le.Uint32(b[0x00:])
	if s.Magic != SuperMagic {
		return s, fmt.Errorf("%w: %#08x", ErrBadMagic, s.Magic)
	}
	s.Checksum = le.Uint32(b[0x04:])
	s.FeatureCompat = le.Uint32(b[0x08:])
	s.BlkSzBits = b[0x0C]
	s.ExtSlots = b[0x0D]
	s.RootNid = le.Uint16(b[0x0E:])
	s.Inos = le.Uint64(b[0x10:])
	s.BuildTime = le.Uint64(b[0x18:])
	s.BuildTimeNsec = le.Uint32(b[0x20:])
	s.Blocks = le.Uint32(b[0x24:])
	s.MetaBlkAddr = le.Uint32(b[0x28:])
	s.XattrBlkAddr = le.Uint32(b[0x2C:])
	copy(s.UUID[:], b[0x30:0x40])
	copy(s.VolumeName[:], b[0x40:0x50])
	s.FeatureIncompat = le.Uint32(b[0x50:])
	s.U1 = le.Uint16(b[0x54:])
	s.ExtraDevices = le.Uint16(b[0x56:])
	s.DevtSlotOff = le.Uint16(b[0x58:])
	s.DirBlkBits = b[0x5A]
	s.XattrPrefixCount = b[0x5B]
	s.XattrPrefixStart = le.Uint32(b[0x5C:])
	s.PackedNid = le.Uint64(b[0x60:])
	copy(s.Reserved[:], b[0x68:0x80])
	return s, nil
}

// Encode writes the superblock into b[:SuperSize]. Magic is always written
// as SuperMagic.
func (s *Superblock) Encode(b []byte) {
	_ = b[SuperSize-1]
	le.PutUint32(b[0x00:], SuperMagic)
	le.PutUint32(b[0x04:], s.Checksum)
	le.PutUint32(b[0x08:], s.FeatureCompat)
	b[0x0C] = s.BlkSzBits
	b[0x0D] = s.ExtSlots
	le.PutUint16(b[0x0E:], s.RootNid)
	le.PutUint64(b[0x10:], s.Inos)
	le.PutUint64(b[0x18:], s.BuildTime)
	le.PutUint32(b[0x20:], s.BuildTimeNsec)
	le.PutUint32(b[0x24:], s.Blocks)
	le.PutUint32(b[0x28:], s.MetaBlkAddr)
	le.PutUint32(b[0x2C:], s.XattrBlkAddr)
	copy(b[0x30:0x40], s.UUID[:])
	copy(b[0x40:0x50], s.VolumeName[:])
	le.PutUint32(b[0x50:], s.FeatureIncompat)
	le.PutUint16(b[0x54:], s.U1)
	le.PutUint16(b[0x56:], s.ExtraDevices)
	le.PutUint16(b[0x58:], s.DevtSlotOff)
	b[0x5A] = s.DirBlkBits
	b[0x5B] = s.XattrPrefixCount
	le.PutUint32(b[0x5C:], s.XattrPrefixStart)
	le.PutUint64(b[0x60:], s.PackedNid)
	copy(b[0x68:0x80], s.Reserved[:])
}

// SuperChecksum computes the superblock CRC over block 0 from the
// superblock onwards. block0 is the whole first block of the image
// (blksz bytes); the checksum field inside it is treated as zero. The
// kernel seeds CRC-32C with ~0 and applies no final inversion, which is
// the bitwise complement of Go's (IEEE-style) Castagnoli checksum.
func SuperChecksum(block0 []byte) uint32 {
	// Blocks of at most 1 KiB: block0 is the blksz bytes starting at the
	// superblock (the superblock does not live in block 0 then).
	region := block0
	if len(block0) > SuperOffset {
		region = block0[SuperOffset:]
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(0, tab, region[:4])
	crc = crc32.Update(crc, tab, []byte{0, 0, 0, 0})
	crc = crc32.Update(crc, tab, region[8:])
	return ^crc
}

// Inode is the decoded form of both the compact (32-byte) and the extended
// (64-byte) on-disk inode.
type Inode struct {
	Format      uint16
	XattrICount uint16
	Mode        uint16
	Nlink       uint32
	Size        uint64
	U           uint32 // raw_blkaddr, rdev or chunk format
	Ino         uint32
	UID         uint32
	GID         uint32
	Mtime       uint64 // extended only (compact: relative mtime, ≥6.15)
	MtimeNsec   uint32 // extended only
	Reserved06  uint16 // compact: nlink; extended: high address bits on ≥6.15
}

// Extended reports whether the inode uses the 64-byte layout.
func (i *Inode) Extended() bool { return i.Format&1 != 0 }

// Layout returns the data layout (i_format bits 1..3).
func (i *Inode) Layout() uint16 { return (i.Format >> 1) & 7 }

// Size returns the on-disk size of the inode structure.
func (i *Inode) OnDiskSize() int {
	if i.Extended() {
		return ExtendedInodeSize
	}
	return CompactInodeSize
}

// XattrSize returns the size in bytes of the inline xattr area that follows
// the inode (0 when the inode has no xattrs).
func (i *Inode) XattrSize() int { return XattrIBodySize(i.XattrICount) }

// XattrIBodySize converts i_xattr_icount to a byte size.
func XattrIBodySize(icount uint16) int {
	if icount == 0 {
		return 0
	}
	return XattrHeaderSize + 4*(int(icount)-1)
}

// XattrICount converts an inline xattr area size (a multiple of 4, at
// least XattrHeaderSize, or 0) to i_xattr_icount.
func XattrICount(size int) uint16 {
	if size == 0 {
		return 0
	}
	return uint16((size-XattrHeaderSize)/4 + 1)
}

// DecodeInode decodes an inode from b. b must hold at least the compact
// size; if the format says extended, it must hold 64 bytes.
func DecodeInode(b []byte) (Inode, error) {
	var in Inode
	if err := need(b, CompactInodeSize, "inode"); err != nil {
		return in, err
	}
	in.Format = le.Uint16(b[0x00:])
	in.XattrICount = le.Uint16(b[0x02:])
	in.Mode = le.Uint16(b[0x04:])
	if !in.Extended() {
		in.Reserved06 = le.Uint16(b[0x06:])
		in.Nlink = uint32(in.Reserved06)
		in.Size = uint64(le.Uint32(b[0x08:]))
		in.Mtime = uint64(le.Uint32(b[0x0C:]))
		in.U = le.Uint32(b[0x10:])
		in.Ino = le.Uint32(b[0x14:])
		in.UID = uint32(le.Uint16(b[0x18:]))
		in.GID = uint32(le.Uint16(b[0x1A:]))
		return in, nil
	}
	if err := need(b, ExtendedInodeSize, "extended inode"); err != nil {
		return in, err
	}
	in.Reserved06 = le.Uint16(b[0x06:])
	in.Size = le.Uint64(b[0x08:])
	in.U = le.Uint32(b[0x10:])
	in.Ino = le.Uint32(b[0x14:])
	in.UID = le.Uint32(b[0x18:])
	in.GID = le.Uint32(b[0x1C:])
	in.Mtime = le.Uint64(b[0x20:])
	in.MtimeNsec = le.Uint32(b[0x28:])
	in.Nlink = le.Uint32(b[0x2C:])
	return in, nil
}

// Encode writes the inode into b, which must hold OnDiskSize() bytes.
// For a compact inode, Mtime is the (≥6.15) mtime relative to the
// superblock epoch and must fit in 32 bits; Nlink must fit in 16 bits.
func (i *Inode) Encode(b []byte) {
	le.PutUint16(b[0x00:], i.Format)
	le.PutUint16(b[0x02:], i.XattrICount)
	le.PutUint16(b[0x04:], i.Mode)
	if !i.Extended() {
		_ = b[CompactInodeSize-1]
		le.PutUint16(b[0x06:], uint16(i.Nlink))
		le.PutUint32(b[0x08:], uint32(i.Size))
		le.PutUint32(b[0x0C:], uint32(i.Mtime))
		le.PutUint32(b[0x10:], i.U)
		le.PutUint32(b[0x14:], i.Ino)
		le.PutUint16(b[0x18:], uint16(i.UID))
		le.PutUint16(b[0x1A:], uint16(i.GID))
		clear(b[0x1C:0x20])
		return
	}
	_ = b[ExtendedInodeSize-1]
	le.PutUint16(b[0x06:], i.Reserved06)
	le.PutUint64(b[0x08:], i.Size)
	le.PutUint32(b[0x10:], i.U)
	le.PutUint32(b[0x14:], i.Ino)
	le.PutUint32(b[0x18:], i.UID)
	le.PutUint32(b[0x1C:], i.GID)
	le.PutUint64(b[0x20:], i.Mtime)
	le.PutUint32(b[0x28:], i.MtimeNsec)
	le.PutUint32(b[0x2C:], i.Nlink)
	clear(b[0x30:0x40])
}

// Dirent is a 12-byte directory entry.
type Dirent struct {
	Nid      uint64
	NameOff  uint16
	FileType uint8
	Reserved uint8
}

// DecodeDirent decodes one directory entry.
func DecodeDirent(b []byte) (Dirent, error) {
	if err := need(b, DirentSize, "dirent"); err != nil {
		return Dirent{}, err
	}
	return Dirent{
		Nid:      le.Uint64(b[0:]),
		NameOff:  le.Uint16(b[8:]),
		FileType: b[10],
		Reserved: b[11],
	}, nil
}

// Encode writes the entry into b[:DirentSize].
func (d *Dirent) Encode(b []byte) {
	_ = b[DirentSize-1]
	le.PutUint64(b[0:], d.Nid)
	le.PutUint16(b[8:], d.NameOff)
	b[10] = d.FileType
	b[11] = d.Reserved
}

// XattrHeader is the 12-byte header of an inode's inline xattr area.
type XattrHeader struct {
	NameFilter  uint32
	SharedCount uint8
}

// DecodeXattrHeader decodes the inline xattr area header.
func DecodeXattrHeader(b []byte) (XattrHeader, error) {
	if err := need(b, XattrHeaderSize, "xattr header"); err != nil {
		return XattrHeader{}, err
	}
	return XattrHeader{NameFilter: le.Uint32(b[0:]), SharedCount: b[4]}, nil
}

// Encode writes the header into b[:XattrHeaderSize].
func (h *XattrHeader) Encode(b []byte) {
	_ = b[XattrHeaderSize-1]
	le.PutUint32(b[0:], h.NameFilter)
	b[4] = h.SharedCount
	clear(b[5:12])
}

// XattrEntry is the 4-byte header of one xattr entry; the name (without
// its prefix) and the value follow it, padded to XattrAlign.
type XattrEntry struct {
	NameLen   uint8
	NameIndex uint8
	ValueSize uint16
}

// DecodeXattrEntry decodes an entry header.
func DecodeXattrEntry(b []byte) (XattrEntry, error) {
	if err := need(b, XattrEntrySize, "xattr entry"); err != nil {
		return XattrEntry{}, err
	}
	return XattrEntry{NameLen: b[0], NameIndex: b[1], ValueSize: le.Uint16(b[2:])}, nil
}

// Encode writes the entry header into b[:XattrEntrySize].
func (e *XattrEntry) Encode(b []byte) {
	_ = b[XattrEntrySize-1]
	b[0] = e.NameLen
	b[1] = e.NameIndex
	le.PutUint16(b[2:], e.ValueSize)
}

// Size returns the entry's padded size including header, name and value.
func (e *XattrEntry) Size() int {
	return AlignUp(XattrEntrySize+int(e.NameLen)+int(e.ValueSize), XattrAlign)
}

// ChunkIndex is an 8-byte chunk index entry.
type ChunkIndex struct {
	Advise   uint16 // startblk_hi on ≥6.15 with ChunkFormat48Bit; 0 otherwise
	DeviceID uint16
	BlkAddr  uint32
}

// DecodeChunkIndex decodes one chunk index entry.
func DecodeChunkIndex(b []byte) (ChunkIndex, error) {
	if err := need(b, ChunkIndexSize, "chunk index"); err != nil {
		return ChunkIndex{}, err
	}
	return ChunkIndex{Advise: le.Uint16(b[0:]), DeviceID: le.Uint16(b[2:]), BlkAddr: le.Uint32(b[4:])}, nil
}

// Encode writes the entry into b[:ChunkIndexSize].
func (c *ChunkIndex) Encode(b []byte) {
	_ = b[ChunkIndexSize-1]
	le.PutUint16(b[0:], c.Advise)
	le.PutUint16(b[2:], c.DeviceID)
	le.PutUint32(b[4:], c.BlkAddr)
}

// DeviceSlot is a 128-byte device table entry.
type DeviceSlot struct {
	Tag           [64]byte
	Blocks        uint32
	MappedBlkAddr uint32
}

// DecodeDeviceSlot decodes one device table slot.
func DecodeDeviceSlot(b []byte) (DeviceSlot, error) {
	var d DeviceSlot
	if err := need(b, DeviceSlotSize, "device slot"); err != nil {
		return d, err
	}
	copy(d.Tag[:], b[:64])
	d.Blocks = le.Uint32(b[0x40:])
	d.MappedBlkAddr = le.Uint32(b[0x44:])
	return d, nil
}

// Encode writes the slot into b[:DeviceSlotSize].
func (d *DeviceSlot) Encode(b []byte) {
	_ = b[DeviceSlotSize-1]
	copy(b[:64], d.Tag[:])
	le.PutUint32(b[0x40:], d.Blocks)
	le.PutUint32(b[0x44:], d.MappedBlkAddr)
	clear(b[0x48:DeviceSlotSize])
}

// TagString returns the tag up to its first NUL, as the kernel reads it.
func (d *DeviceSlot) TagString() string {
	for i, c := range d.Tag {
		if c == 0 {
			return string(d.Tag[:i])
		}
	}
	return string(d.Tag[:])
}

// AlignUp rounds n up to a multiple of a (a power of two).
func AlignUp(n, a int) int { return (n + a - 1) &^ (a - 1) }

// AlignUp64 rounds n up to a multiple of a (a power of two).
func AlignUp64(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// EncodeRdev encodes a device number in Linux's "new" dev_t format, as
// stored in i_u of device inodes.
func EncodeRdev(major, minor uint32) uint32 {
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// DecodeRdev splits an on-disk device number into major and minor.
func DecodeRdev(rdev uint32) (major, minor uint32) {
	return (rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00)
}
