package erofs

import (
	"fmt"
	"io/fs"
	"math"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// File type bits of i_mode (S_IFMT and friends).
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

// maxFileSize is the largest i_size read. It leaves headroom so that
// offset arithmetic (rounding up to blocks, adding start addresses) can
// never overflow int64; flat data cannot exceed 2^48 bytes anyway.
const maxFileSize = 1 << 62

// knownFormatBits are the i_format bits a Linux 6.1 kernel accepts:
// version (bit 0) and data layout (bits 1..3).
const knownFormatBits = 0x000F

// inode is a decoded, minimally validated on-disk inode.
type inode struct {
	nid   uint64
	off   int64 // byte offset of the inode in the primary device
	d     disk.Inode
	isize int // 32 or 64
	xsize int // inline xattr area size
	size  int64
}

func (i *inode) typ() uint16     { return i.d.Mode & sIFMT }
func (i *inode) isDir() bool     { return i.typ() == sIFDIR }
func (i *inode) isReg() bool     { return i.typ() == sIFREG }
func (i *inode) isSymlink() bool { return i.typ() == sIFLNK }
func (i *inode) layout() int     { return int(i.d.Layout()) }

// isSpecial reports device nodes, FIFOs and sockets, whose data is ignored.
func (i *inode) isSpecial() bool {
	switch i.typ() {
	case sIFCHR, sIFBLK, sIFIFO, sIFSOCK:
		return true
	}
	return false
}

// xattrOff returns the byte offset of the inline xattr area.
func (i *inode) xattrOff() int64 { return i.off + int64(i.isize) }

// tailOff returns the byte offset right after the inode and its xattrs,
// where inline data, chunk arrays and compression indexes start.
func (i *inode) tailOff() int64 { return i.off + int64(i.isize) + int64(i.xsize) }

func (i *inode) compressed() bool {
	l := i.layout()
	return l == disk.LayoutCompressedFull || l == disk.LayoutCompressedCompact
}

// inode reads and decodes the inode nid.
func (img *Image) inode(nid uint64) (*inode, error) {
	if err := img.checkOpen(); err != nil {
		return nil, err
	}
	if nid > uint64(math.MaxInt64-img.metaBase-disk.ExtendedInodeSize)/disk.InodeSlotSize {
		return nil, corruptf("nid %d out of range", nid)
	}
	off := img.metaBase + int64(nid)*disk.InodeSlotSize
	if img.size >= 0 && off+disk.CompactInodeSize > img.size {
		return nil, corruptf("nid %d: inode at byte %d beyond image end %d", nid, off, img.size)
	}
	var buf [disk.ExtendedInodeSize]byte
	b := buf[:disk.CompactInodeSize]
	if err := readFull(img.r, b, off); err != nil {
		return nil, fmt.Errorf("nid %d inode: %w", nid, err)
	}
	if b[0]&1 != 0 { // extended
		if img.size >= 0 && off+disk.ExtendedInodeSize > img.size {
			return nil, corruptf("nid %d: extended inode at byte %d beyond image end %d", nid, off, img.size)
		}
		b = buf[:]
		if err := readFull(img.r, b[disk.CompactInodeSize:], off+disk.CompactInodeSize); err != nil {
			return nil, fmt.Errorf("nid %d inode: %w", nid, err)
		}
	}
	d, err := disk.DecodeInode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: nid %d: %w", ErrCorrupt, nid, err)
	}
	ino := &inode{nid: nid, off: off, d: d, isize: d.OnDiskSize(), xsize: d.XattrSize()}
	if d.Format&^knownFormatBits != 0 {
		return nil, unsupportedf("nid %d: i_format %#04x has unknown bits", nid, d.Format)
	}
	if ino.layout() > disk.LayoutChunkBased {
		return nil, corruptf("nid %d: invalid data layout %d", nid, ino.layout())
	}
	switch ino.typ() {
	case sIFREG, sIFDIR, sIFLNK, sIFCHR, sIFBLK, sIFIFO, sIFSOCK:
	default:
		return nil, corruptf("nid %d: invalid file type in mode %#o", nid, d.Mode)
	}
	if d.Size > math.MaxInt64 {
		return nil, corruptf("nid %d: i_size %d too large", nid, d.Size)
	}
	if d.Size > maxFileSize {
		return nil, unsupportedf("nid %d: i_size %d beyond 4 EiB", nid, d.Size)
	}
	ino.size = int64(d.Size)
	if img.size >= 0 && ino.tailOff() > img.size {
		return nil, corruptf("nid %d: xattr area [%d, %d) beyond image end %d", nid, ino.xattrOff(), ino.tailOff(), img.size)
	}
	return ino, nil
}

// fileMode converts an on-disk i_mode to an fs.FileMode.
func fileMode(m uint16) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	switch m & sIFMT {
	case sIFDIR:
		mode |= fs.ModeDir
	case sIFLNK:
		mode |= fs.ModeSymlink
	case sIFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		mode |= fs.ModeDevice
	case sIFIFO:
		mode |= fs.ModeNamedPipe
	case sIFSOCK:
		mode |= fs.ModeSocket
	}
	return mode
}

// ftypeOfMode returns the dirent file_type that matches i_mode.
func ftypeOfMode(m uint16) uint8 {
	switch m & sIFMT {
	case sIFREG:
		return disk.FTRegFile
	case sIFDIR:
		return disk.FTDir
	case sIFCHR:
		return disk.FTChrdev
	case sIFBLK:
		return disk.FTBlkdev
	case sIFIFO:
		return disk.FTFifo
	case sIFSOCK:
		return disk.FTSock
	case sIFLNK:
		return disk.FTSymlink
	}
	return disk.FTUnknown
}

// modeOfFtype returns the fs.FileMode type bits of a dirent file_type.
func modeOfFtype(t uint8) fs.FileMode {
	switch t {
	case disk.FTDir:
		return fs.ModeDir
	case disk.FTSymlink:
		return fs.ModeSymlink
	case disk.FTChrdev:
		return fs.ModeDevice | fs.ModeCharDevice
	case disk.FTBlkdev:
		return fs.ModeDevice
	case disk.FTFifo:
		return fs.ModeNamedPipe
	case disk.FTSock:
		return fs.ModeSocket
	}
	return 0
}
