package erofs

import (
	"bytes"
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// dirent is a parsed directory entry; name points into the block buffer.
type dirent struct {
	name  []byte
	nid   uint64
	ftype uint8
}

func isDotOrDotDot(name []byte) bool {
	return len(name) == 1 && name[0] == '.' || len(name) == 2 && name[0] == '.' && name[1] == '.'
}

// dirBlocks returns the number of directory blocks of a directory.
func (img *Image) dirBlocks(ino *inode) int64 { return img.blocksOf(ino.size) }

// readDirBlock reads directory block idx into buf (which holds at least
// one block) and returns the block's bytes; the last block may be short.
// zc keeps a compressed directory's decoded extent between blocks.
func (img *Image) readDirBlock(ino *inode, zc *zcache, idx int64, buf []byte) ([]byte, error) {
	start := idx << img.blkBits
	n := min(img.blkSize, ino.size-start)
	b := buf[:n]
	if _, err := img.readDataCached(ino, zc, b, start); err != nil {
		return nil, fmt.Errorf("directory nid %d block %d: %w", ino.nid, idx, err)
	}
	return b, nil
}

// parseDirBlock decodes the entries of one directory block into out[:0].
// It checks the block's own structure: the first nameoff gives the entry
// count, every name lies inside the block after the entry array, name
// offsets increase, names are 1..255 bytes without '/' or NUL, and the
// last name may be followed by NUL padding.
func parseDirBlock(b []byte, nid uint64, blk int64, out []dirent) ([]dirent, error) {
	out = out[:0]
	if len(b) < disk.DirentSize {
		return out, corruptf("directory nid %d block %d: %d bytes, too short for an entry", nid, blk, len(b))
	}
	first := int(le16(b[8:]))
	if first < disk.DirentSize || first%disk.DirentSize != 0 || first >= len(b) {
		return out, corruptf("directory nid %d block %d: bad first nameoff %d (block %d bytes)", nid, blk, first, len(b))
	}
	count := first / disk.DirentSize
	for i := 0; i < count; i++ {
		e := b[i*disk.DirentSize:]
		start := int(le16(e[8:]))
		var end int
		if i+1 < count {
			end = int(le16(e[disk.DirentSize+8:]))
		} else {
			end = len(b)
			if start < end {
				if z := bytes.IndexByte(b[start:end], 0); z >= 0 {
					end = start + z
				}
			}
		}
		if start < first || start > len(b) || end > len(b) || end <= start {
			return out, corruptf("directory nid %d block %d entry %d: bad nameoff %d (next %d, block %d bytes)", nid, blk, i, start, end, len(b))
		}
		name := b[start:end]
		if len(name) > disk.MaxNameLen {
			return out, corruptf("directory nid %d block %d entry %d: name of %d bytes", nid, blk, i, len(name))
		}
		if bytes.IndexByte(name, '/') >= 0 || bytes.IndexByte(name, 0) >= 0 {
			return out, corruptf("directory nid %d block %d entry %d: invalid name %q", nid, blk, i, name)
		}
		ft := e[10]
		if ft >= disk.FTMax {
			return out, corruptf("directory nid %d block %d entry %q: invalid file type %d", nid, blk, name, ft)
		}
		out = append(out, dirent{name: name, nid: le64(e), ftype: ft})
	}
	return out, nil
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }

func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// dirIter reads a directory block by block and checks that names are in
// strictly increasing order across the whole directory.
type dirIter struct {
	img  *Image
	ino  *inode
	blk  int64
	n    int64
	buf  []byte
	ents []dirent
	prev []byte
	has  bool
	zc   zcache // compressed directories
}

func (img *Image) newDirIter(ino *inode) *dirIter {
	return &dirIter{img: img, ino: ino, n: img.dirBlocks(ino), prev: make([]byte, 0, disk.MaxNameLen)}
}

// next returns the entries of the next block (nil at the end). The
// returned slice and names are valid until the following call.
func (it *dirIter) next() ([]dirent, error) {
	if it.blk >= it.n {
		return nil, nil
	}
	if it.buf == nil {
		it.buf = make([]byte, it.img.blkSize)
	}
	b, err := it.img.readDirBlock(it.ino, &it.zc, it.blk, it.buf)
	if err != nil {
		return nil, err
	}
	it.ents, err = parseDirBlock(b, it.ino.nid, it.blk, it.ents)
	if err != nil {
		return nil, err
	}
	for _, e := range it.ents {
		if it.has && bytes.Compare(it.prev, e.name) >= 0 {
			return nil, corruptf("directory nid %d block %d: entry %q not sorted after %q", it.ino.nid, it.blk, e.name, it.prev)
		}
		it.prev = append(it.prev[:0], e.name...)
		it.has = true
	}
	it.blk++
	return it.ents, nil
}

// lookup finds name in directory ino by binary search over the blocks
// (each block's first name) and then inside the block, like the kernel.
func (img *Image) lookup(ino *inode, name string) (dirent, bool, error) {
	if !ino.isDir() {
		return dirent{}, false, fmt.Errorf("nid %d: not a directory", ino.nid)
	}
	var zc *zcache
	if ino.compressed() {
		zc = &zcache{}
	}
	key := []byte(name)
	lb := img.getLookupBuf()
	defer img.lookupBufs.Put(lb)
	buf, ents := lb.block, lb.ents
	defer func() { lb.ents = ents[:0] }()
	lo, hi := int64(0), img.dirBlocks(ino)-1
	for lo <= hi {
		mid := lo + (hi-lo)/2
		b, err := img.readDirBlock(ino, zc, mid, buf)
		if err != nil {
			return dirent{}, false, err
		}
		if ents, err = parseDirBlock(b, ino.nid, mid, ents); err != nil {
			return dirent{}, false, err
		}
		c := bytes.Compare(key, ents[0].name)
		if c == 0 {
			e := ents[0]
			e.name = nil
			return e, true, nil
		}
		if c < 0 {
			hi = mid - 1
			continue
		}
		if bytes.Compare(key, ents[len(ents)-1].name) <= 0 {
			i, j := 1, len(ents)-1
			for i <= j {
				m := i + (j-i)/2
				switch c := bytes.Compare(key, ents[m].name); {
				case c == 0:
					e := ents[m]
					e.name = nil // points into the pooled buffer
					return e, true, nil
				case c < 0:
					j = m - 1
				default:
					i = m + 1
				}
			}
			return dirent{}, false, nil
		}
		lo = mid + 1
	}
	return dirent{}, false, nil
}

// lookupBuf is scratch space for one directory lookup.
type lookupBuf struct {
	block []byte
	ents  []dirent
}

func (img *Image) getLookupBuf() *lookupBuf {
	if lb, ok := img.lookupBufs.Get().(*lookupBuf); ok {
		return lb
	}
	return &lookupBuf{block: make([]byte, img.blkSize)}
}
