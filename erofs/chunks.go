package erofs

import (
	"context"
	"errors"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// FileChunk describes one chunk of a chunk-based file, or one pcluster
// of a compressed file (an extent and the blocks it is decoded from).
type FileChunk struct {
	Offset  int64  // offset of the chunk (extent) in the file
	Length  int64  // file bytes the chunk holds (the last one may be short)
	Hole    bool   // the chunk reads as zeros; Device and BlkAddr are unused
	Device  int    // 0 = primary image, 1..N = extra device (after unified addressing)
	BlkAddr uint32 // first block of the chunk (pcluster) on Device
	// Encoded is, for an extent of a compressed file, the bytes of its
	// pcluster at BlkAddr (0 for chunks). A blob pcluster lies inside one
	// chunk of the chunk table but need not start it: erofsd's builder
	// packs consecutive pclusters (of one or several files) into a chunk.
	Encoded int64
}

// Chunks returns the chunk map of the named regular file (following
// symbolic links). Files that are not chunk-based give ErrNotChunked.
func (img *Image) Chunks(name string) ([]FileChunk, error) {
	ino, err := img.resolve("chunks", name, true)
	if err != nil {
		return nil, err
	}
	if !ino.isReg() || ino.layout() != disk.LayoutChunkBased {
		return nil, pathErr("chunks", name, ErrNotChunked)
	}
	out, err := img.chunkMap(ino)
	if err != nil {
		return nil, pathErr("chunks", name, err)
	}
	return out, nil
}

// chunkMap reads the chunk map of a chunk-based regular file.
func (img *Image) chunkMap(ino *inode) ([]FileChunk, error) {
	c, err := img.chunkLayout(ino)
	if err != nil {
		return nil, err
	}
	// The chunk array was checked against the image size (when known);
	// grow the result as entries are actually read anyway.
	out := make([]FileChunk, 0, min(c.count, maxChunkBatch))
	var batch [maxChunkBatch]chunkEntry
	for k := int64(0); k < c.count; {
		n := min(c.count-k, maxChunkBatch)
		if err := img.readChunkEntries(ino, &c, k, batch[:n]); err != nil {
			return nil, err
		}
		for i := int64(0); i < n; i++ {
			ext, err := img.chunkExtent(ino, &c, k+i, batch[i])
			if err != nil {
				return nil, err
			}
			fc := FileChunk{Offset: ext.lstart, Length: ext.llen, Hole: ext.hole}
			if !ext.hole {
				if ext.pstart>>img.blkBits > 1<<32-1 {
					return nil, corruptf("nid %d chunk %d: address %d out of range", ino.nid, k+i, ext.pstart)
				}
				fc.Device, fc.BlkAddr = ext.dev, uint32(ext.pstart>>img.blkBits)
			}
			out = append(out, fc)
		}
		k += n
	}
	return out, nil
}

// ErrWalkLimit is returned by FileChunks when the image has more entries
// than its caller allows.
var ErrWalkLimit = errors.New("erofs: more entries than the walk allows")

// FileChunks calls fn with the chunk map of every chunk-based regular file
// reachable from the root, and the pcluster map of every compressed one
// (see compressedChunks), each inode once (hard links once, a directory
// reachable twice once), depth first. It goes by inode and builds no
// paths, so its cost grows with the directory entries and chunk
// references it reads, not with the tree's depth. It stops with
// ErrWalkLimit after maxEntries directory entries (0: no limit), at ctx's
// end, at a damaged inode or directory, or when fn fails.
func (img *Image) FileChunks(ctx context.Context, maxEntries int, fn func(nid uint64, chunks []FileChunk) error) error {
	if err := img.checkOpen(); err != nil {
		return err
	}
	seen := map[uint64]bool{img.root.nid: true}
	stack := []uint64{img.root.nid}
	entries := 0
	for len(stack) > 0 {
		dir, err := img.inode(stack[len(stack)-1])
		stack = stack[:len(stack)-1]
		if err != nil {
			return err
		}
		if !dir.isDir() {
			return corruptf("nid %d: listed as a directory, mode %#o", dir.nid, dir.d.Mode)
		}
		it := img.newDirIter(dir)
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			ents, err := it.next()
			if err != nil {
				return err
			}
			if ents == nil {
				break
			}
			for _, e := range ents {
				if isDotOrDotDot(e.name) || seen[e.nid] {
					continue
				}
				if entries++; maxEntries > 0 && entries > maxEntries {
					return ErrWalkLimit
				}
				seen[e.nid] = true
				switch e.ftype {
				case disk.FTDir:
					stack = append(stack, e.nid)
				case disk.FTRegFile:
					ino, err := img.inode(e.nid)
					if err != nil {
						return err
					}
					var chunks []FileChunk
					switch {
					case !ino.isReg():
						continue
					case ino.layout() == disk.LayoutChunkBased:
						chunks, err = img.chunkMap(ino)
					case ino.compressed():
						chunks, err = img.compressedChunks(ino)
					default:
						continue
					}
					if err != nil {
						return err
					}
					if err := fn(e.nid, chunks); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}
