package erofs

import (
	"errors"
	"fmt"
	"slices"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// ErrNotCompressed is returned by Image.Compression for files whose data
// is not compressed.
var ErrNotCompressed = errors.New("erofs: file is not compressed")

// CompressedLayout describes how a compressed file is stored.
type CompressedLayout struct {
	Indexes      string   // "full" (8-byte lcluster indexes) or "compact"
	LclusterSize int      // bytes per logical cluster
	Algorithms   []string // of its compressed extents, in algorithm order
	Extents      int
	Compressed   int   // extents stored as an algorithm's stream
	Plain        int   // extents stored raw (incompressible data)
	Inline       int   // extents whose pcluster follows the index (ztailpacking)
	Fragments    int   // extents in the packed inode
	BigPclusters int   // pclusters of more than one block
	Size         int64 // decoded bytes (i_size)
	Encoded      int64 // bytes of its pclusters (fragments not counted)
}

// Compression describes the layout of the named file (following symbolic
// links). Files that are not compressed give ErrNotCompressed. It reads
// the file's index only, not its data.
func (img *Image) Compression(name string) (*CompressedLayout, error) {
	ino, err := img.resolve("compression", name, true)
	if err != nil {
		return nil, err
	}
	if !ino.compressed() {
		return nil, pathErr("compression", name, ErrNotCompressed)
	}
	l, err := img.compressedLayout(ino)
	if err != nil {
		return nil, pathErr("compression", name, err)
	}
	return l, nil
}

func (img *Image) compressedLayout(ino *inode) (*CompressedLayout, error) {
	l := &CompressedLayout{Indexes: "compact", Size: ino.size, Algorithms: []string{}}
	if ino.layout() == disk.LayoutCompressedFull {
		l.Indexes = "full"
	}
	var algs uint16
	info := func(zi *zinfo) error { l.LclusterSize = 1 << zi.lbits; return nil }
	err := img.walkExtents(ino, info, func(ext *zextent) error {
		l.Extents++
		switch ext.kind {
		case zCompressed:
			l.Compressed++
			algs |= 1 << ext.alg
		case zFragment:
			l.Fragments++
		default:
			l.Plain++
		}
		if ext.inline {
			l.Inline++
		}
		if ext.plen > img.blkSize {
			l.BigPclusters++
		}
		l.Encoded += ext.plen
		return nil
	})
	if err != nil {
		return nil, err
	}
	for a := range disk.ComprMax {
		if algs&(1<<a) != 0 {
			l.Algorithms = append(l.Algorithms, zcodec.Algorithm(a).String())
		}
	}
	return l, nil
}

// walkExtents calls fn with each extent of a compressed inode in file
// order, after info (if not nil) with its map header. The extents must
// tile the file.
func (img *Image) walkExtents(ino *inode, info func(*zinfo) error, fn func(*zextent) error) error {
	if ino.size == 0 {
		return nil // the kernel reads no header of an empty file either
	}
	var meta metaBuf
	zi, err := img.zinfoOf(ino, &meta)
	if err != nil {
		return err
	}
	if info != nil {
		if err := info(zi); err != nil {
			return err
		}
	}
	m := zmapper{img: img, ino: ino, zi: zi, meta: meta}
	for off := int64(0); off < ino.size; {
		if err := img.checkOpen(); err != nil {
			return err
		}
		ext, err := m.mapAt(off, false)
		if err != nil {
			return err
		}
		if ext.la != off {
			return corruptf("nid %d: the extent after byte %d starts at %d", ino.nid, off, ext.la)
		}
		if err := fn(&ext); err != nil {
			return err
		}
		off = ext.la + ext.llen
	}
	return nil
}

// compressedChunks lists the extents of a compressed file whose
// pclusters are device blocks, as FileChunks: Offset and Length the
// decoded range, Device and BlkAddr the pcluster, Encoded its size.
// Inline and fragment extents are left out: they live in the image's
// metadata, read with it.
func (img *Image) compressedChunks(ino *inode) ([]FileChunk, error) {
	var out []FileChunk
	err := img.walkExtents(ino, nil, func(ext *zextent) error {
		if ext.inline || ext.kind == zFragment {
			return nil
		}
		blk := ext.pa >> img.blkBits
		if blk > 1<<32-1 {
			return corruptf("nid %d: pcluster address %d out of range", ino.nid, ext.pa)
		}
		out = append(out, FileChunk{Offset: ext.la, Length: ext.llen, Device: ext.dev, BlkAddr: uint32(blk), Encoded: ext.plen})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nid %d: %w", ino.nid, err)
	}
	return slices.Clip(out), nil
}
