package erofs

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// zcache is the state of reads of one compressed inode: its decoded map
// header, the index block last read and the extent last decoded, so that
// sequential reads decode each extent once. An open file keeps one; a
// read without a file (ReadFile, directories, symlinks) uses its own.
type zcache struct {
	mu   sync.Mutex
	zi   *zinfo
	meta metaBuf
	ext  zextent
	data []byte // ext's decoded bytes (in out); nil if none
	out  []byte // decoded bytes, reused from extent to extent
	src  []byte // scratch for encoded bytes
}

// release drops the buffers (an open file keeps up to an extent's 12
// MiB and a pcluster's 1 MiB until closed).
func (zc *zcache) release() {
	zc.mu.Lock()
	defer zc.mu.Unlock()
	zc.data, zc.out, zc.src, zc.meta = nil, nil, nil, metaBuf{}
}

// readCompressed fills p with the file bytes at off (inside the file).
// depth counts packed-inode reads: fragments are only read one level
// deep, so a packed inode that points into itself cannot recurse.
func (img *Image) readCompressed(ino *inode, zc *zcache, p []byte, off int64, depth int) error {
	if zc == nil {
		zc = &zcache{}
	}
	zc.mu.Lock()
	defer zc.mu.Unlock()
	if zc.zi == nil {
		zi, err := img.zinfoOf(ino, &zc.meta)
		if err != nil {
			return err
		}
		zc.zi = zi
	}
	for len(p) > 0 {
		ext := &zc.ext
		if zc.data == nil || off < ext.la || off >= ext.la+ext.llen {
			zc.data = nil
			m := zmapper{img: img, ino: ino, zi: zc.zi, meta: zc.meta}
			e, err := m.mapAt(off, false)
			zc.meta = m.meta
			if err != nil {
				return err
			}
			if e.kind == zFragment {
				n := min(int64(len(p)), e.la+e.llen-off)
				if err := img.readFragment(ino, &e, p[:n], off, depth); err != nil {
					return err
				}
				p, off = p[n:], off+n
				continue
			}
			*ext = e
			buf, err := img.decodeExtent(ino, ext, zc)
			if err != nil {
				return err
			}
			zc.data = buf
		}
		n := copy(p, zc.data[off-ext.la:])
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// decodeExtent reads ext's pcluster and decodes its llen bytes; errors
// name the extent.
func (img *Image) decodeExtent(ino *inode, ext *zextent, zc *zcache) ([]byte, error) {
	out, err := img.decodeExtentData(ext, zc)
	if err != nil {
		return nil, fmt.Errorf("nid %d extent [%d, %d): %w", ino.nid, ext.la, ext.la+ext.llen, err)
	}
	return out, nil
}

// decodeExtentData is decodeExtent for callers that name the extent
// themselves (Check).
func (img *Image) decodeExtentData(ext *zextent, zc *zcache) ([]byte, error) {
	if cap(zc.src) < int(ext.plen) {
		zc.src = make([]byte, ext.plen)
	}
	src := zc.src[:ext.plen]
	if err := img.readPcluster(ext, src); err != nil {
		return nil, err
	}
	if cap(zc.out) < int(ext.llen) {
		zc.out = make([]byte, ext.llen)
	}
	out := zc.out[:ext.llen]
	if err := img.decodePcluster(ext, src, out); err != nil {
		return nil, err
	}
	return out, nil
}

// readPcluster reads ext's encoded bytes. With WithVerifiedBlobs, a
// pcluster in an extra device is returned only from the verified chunk
// of the chunk digest table that holds it.
func (img *Image) readPcluster(ext *zextent, dst []byte) error {
	if ext.inline || ext.dev == 0 {
		return img.readDev(0, dst, ext.pa)
	}
	if img.verify {
		d, ok := chunkHolding(img.vtable, ext.dev, ext.pa, ext.plen, img.blkBits)
		if !ok {
			return corruptf("device %d: pcluster [%d, %d) is in no chunk of the chunk table: its data cannot be verified", ext.dev, ext.pa, ext.pa+ext.plen)
		}
		chunk := extent{lstart: 0, llen: int64(d.Length), dev: ext.dev, pstart: int64(d.BlkAddr) << img.blkBits, chunk: true}
		return img.readVerified(&chunk, dst, ext.pa-chunk.pstart)
	}
	return img.readDev(ext.dev, dst, ext.pa)
}

// decodePcluster turns a pcluster's bytes into the extent's bytes as the
// kernel's decompressors do.
func (img *Image) decodePcluster(ext *zextent, src, out []byte) error {
	switch ext.kind {
	case zShifted:
		copy(out, src[:len(out)])
		return nil
	case zInterlaced:
		return interlacedCopy(out, src, ext.la, img.blkSize)
	case zCompressed:
	default:
		return fmt.Errorf("erofs: extent kind %v has no pcluster", ext.kind)
	}
	// With 0padding (always for algorithms other than LZ4) the stream
	// ends the pcluster; the kernel looks for its first byte in the
	// pcluster's first block only (z_erofs_fixup_insize).
	padded := ext.alg != disk.ComprLZ4 || img.sb.FeatureIncompat&disk.IncompatZeroPadding != 0
	if padded {
		head := min(int64(len(src)), img.blkSize-ext.pa&(img.blkSize-1))
		skip := 0
		for skip < int(head) && src[skip] == 0 {
			skip++
		}
		if skip == int(head) {
			return corruptf("pcluster at byte %d of device %d: no stream in its first %d bytes", ext.pa, ext.dev, head)
		}
		src = src[skip:]
	}
	dec, err := img.z.decoder(ext.alg)
	if err != nil {
		return err
	}
	if ext.partial {
		// PARTIAL_REF: the extent is a prefix of the pcluster's
		// output; only the partial LZ4 decoder can stop there.
		if ext.alg != disk.ComprLZ4 {
			return unsupportedf("partially referenced %v pcluster", zcodec.Algorithm(ext.alg))
		}
		padded = false
	}
	if err := dec.Decode(out, src, padded); err != nil {
		switch {
		case errors.Is(err, zcodec.ErrCorrupt):
			return fmt.Errorf("%w: %v pcluster at byte %d of device %d: %w", ErrCorrupt, zcodec.Algorithm(ext.alg), ext.pa, ext.dev, err)
		case errors.Is(err, zcodec.ErrUnsupported):
			return fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		return err
	}
	return nil
}

// interlacedCopy undoes the interlaced layout of a plain pcluster
// (z_erofs_transform_plain): the extent's first bytes, up to the end of
// the block its start falls in, are stored at the end of the pcluster
// (at their in-block offset), the rest from the pcluster's start.
func interlacedCopy(out, src []byte, la, blkSize int64) error {
	cur := blkSize - la&(blkSize-1)
	if cur > int64(len(src)) {
		return corruptf("interlaced pcluster of %d bytes for an extent at %d", len(src), la)
	}
	head := min(cur, int64(len(out)))
	at := int64(len(src)) - cur
	copy(out[:head], src[at:at+head])
	copy(out[head:], src[:int64(len(out))-head])
	return nil
}

// packedRef is the packed inode that holds fragments, loaded on first
// use, with the read state its fragments share.
type packedRef struct {
	once sync.Once
	ino  *inode
	err  error
	zc   zcache
}

func (img *Image) packedNid() uint64 {
	if img.sb.FeatureIncompat&disk.IncompatFragments == 0 {
		return 0
	}
	return img.sb.PackedNid
}

// packedInode returns the packed inode.
func (img *Image) packedInode() (*inode, error) {
	pr := &img.packed
	pr.once.Do(func() {
		nid := img.packedNid()
		if nid == 0 {
			pr.err = corruptf("fragments used but the superblock names no packed inode")
			return
		}
		ino, err := img.inode(nid)
		if err != nil {
			pr.err = fmt.Errorf("packed inode: %w", err)
			return
		}
		if !ino.isReg() {
			pr.err = corruptf("packed inode nid %d is not a regular file (mode %#o)", nid, ino.d.Mode)
			return
		}
		pr.ino = ino
	})
	return pr.ino, pr.err
}

// readFragment copies the file bytes [off, off+len(p)) of the fragment
// extent ext from the packed inode (z_erofs_read_fragment).
func (img *Image) readFragment(ino *inode, ext *zextent, p []byte, off int64, depth int) error {
	if depth > 0 {
		return corruptf("nid %d: a fragment inside the packed inode", ino.nid)
	}
	at, err := img.fragmentSpan(ino, ext, off, int64(len(p)))
	if err != nil {
		return err
	}
	packed, _ := img.packedInode()
	if err := img.readDataDepth(packed, &img.packed.zc, p, at, depth+1); err != nil {
		return fmt.Errorf("nid %d fragment: %w", ino.nid, err)
	}
	return nil
}

// fragmentSpan returns where the n file bytes at off of the fragment
// extent ext are in the packed inode, checking that they are inside it.
func (img *Image) fragmentSpan(ino *inode, ext *zextent, off, n int64) (int64, error) {
	packed, err := img.packedInode()
	if err != nil {
		return 0, err
	}
	at := ext.fragOff + uint64(off-ext.la)
	if at > uint64(packed.size) || uint64(n) > uint64(packed.size)-at {
		return 0, corruptf("nid %d: fragment bytes [%d, %d) beyond the %d-byte packed inode", ino.nid, at, at+uint64(n), packed.size)
	}
	return int64(at), nil
}

// validateCompressed checks, before a buffer of i_size bytes is
// allocated for a compressed file, that its map header decodes and that
// its index reaches the file's last lcluster inside the image: i_size is
// then bounded by what the image can describe.
func (img *Image) validateCompressed(ino *inode) error {
	if ino.size == 0 {
		return nil // nothing is mapped (the kernel reads no header either)
	}
	var meta metaBuf
	zi, err := img.zinfoOf(ino, &meta)
	if err != nil {
		return err
	}
	if zi.fragment && zi.tailHead == 0 {
		packed, err := img.packedInode()
		if err != nil {
			return err
		}
		if zi.fragOff > uint64(packed.size) || uint64(ino.size) > uint64(packed.size)-zi.fragOff {
			return corruptf("nid %d: whole-file fragment [%d, %d) beyond the %d-byte packed inode", ino.nid, zi.fragOff, zi.fragOff+uint64(ino.size), packed.size)
		}
		return nil
	}
	if end := zi.indexEnd(ino.size); img.size >= 0 && end > uint64(img.size) {
		return corruptf("nid %d: index of a %d-byte file ends at byte %d, beyond image end %d", ino.nid, ino.size, end, img.size)
	}
	return nil
}

// readAllCompressed reads a whole compressed file into a buffer that,
// past 64 MiB, grows as extents decode: i_size is bounded by the index
// only (data may legitimately compress 250 to 1), so memory beyond that
// is committed to bytes actually decoded rather than to what a damaged
// inode claims.
func (img *Image) readAllCompressed(ino *inode) ([]byte, error) {
	const piece = 1 << 20
	zc := &zcache{}
	b := make([]byte, 0, min(ino.size, 64<<20))
	for off := int64(0); off < ino.size; {
		n := min(piece, ino.size-off)
		b = slices.Grow(b, int(n))
		if err := img.readDataDepth(ino, zc, b[len(b):len(b)+int(n)], off, 0); err != nil {
			return nil, err
		}
		b = b[:len(b)+int(n)]
		off += n
	}
	return b, nil
}
