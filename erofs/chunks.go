package erofs

import "github.com/erofsd/erofsd/erofs/internal/disk"

// FileChunk describes one chunk of a chunk-based file.
type FileChunk struct {
	Offset  int64  // offset of the chunk in the file
	Length  int64  // file bytes the chunk holds (the last one may be short)
	Hole    bool   // the chunk reads as zeros; Device and BlkAddr are unused
	Device  int    // 0 = primary image, 1..N = extra device (after unified addressing)
	BlkAddr uint32 // first block of the chunk on Device
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
	c, err := img.chunkLayout(ino)
	if err != nil {
		return nil, pathErr("chunks", name, err)
	}
	// The chunk array was checked against the image size (when known);
	// grow the result as entries are actually read anyway.
	out := make([]FileChunk, 0, min(c.count, maxChunkBatch))
	var batch [maxChunkBatch]chunkEntry
	for k := int64(0); k < c.count; {
		n := min(c.count-k, maxChunkBatch)
		if err := img.readChunkEntries(ino, &c, k, batch[:n]); err != nil {
			return nil, pathErr("chunks", name, err)
		}
		for i := int64(0); i < n; i++ {
			ext, err := img.chunkExtent(ino, &c, k+i, batch[i])
			if err != nil {
				return nil, pathErr("chunks", name, err)
			}
			fc := FileChunk{Offset: ext.lstart, Length: ext.llen, Hole: ext.hole}
			if !ext.hole {
				if ext.pstart>>img.blkBits > 1<<32-1 {
					return nil, pathErr("chunks", name, corruptf("nid %d chunk %d: address %d out of range", ino.nid, k+i, ext.pstart))
				}
				fc.Device, fc.BlkAddr = ext.dev, uint32(ext.pstart>>img.blkBits)
			}
			out = append(out, fc)
		}
		k += n
	}
	return out, nil
}
