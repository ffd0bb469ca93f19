package ondemand

import (
	"context"
	"errors"
	"slices"

	"github.com/erofsd/erofsd/erofs"
)

// File runs bound readahead: a chunk's run is the longest stretch of
// adjacent chunks in its blob that belong to the same file. A reader
// going forward through a file earns readahead up to the end of its run,
// never into the next file's data: a container start reads many small
// files laid out side by side, and a window over blob offsets would
// fetch megabytes of files nobody opens.

// Bounds of mapFileRuns' walk: directory entries, and chunk references
// read over all files (a hostile image can point many inodes at one huge
// chunk array). Past either, the image is treated as damaged.
const (
	maxRunEntries   = 4 << 20
	maxRunChunkRefs = 16 << 20
)

var errRunBudget = errors.New("image too large to map its files")

// mapFileRuns sets each blob's runEnd from the image's files. A chunk no
// file references (or every chunk, if the walk fails: the image is
// damaged or hostile) is a run of its own.
func (im *Image) mapFileRuns(img *erofs.Image) {
	owner := make([][]int32, len(im.blobs)) // file number (from 1) per chunk; 0: none
	for bi, b := range im.blobs {
		owner[bi] = make([]int32, len(b.chunks))
	}
	file, refs := int32(0), 0
	// By inode, bounded: a hostile image may be deep, wide, or point
	// many inodes at one huge chunk array.
	walkErr := img.FileChunks(context.Background(), maxRunEntries, func(_ uint64, chunks []erofs.FileChunk) error {
		if refs += len(chunks); refs > maxRunChunkRefs {
			return errRunBudget
		}
		file++
		for _, fc := range chunks {
			if fc.Hole || fc.Device < 1 || fc.Device > len(im.blobs) {
				continue
			}
			// A chunk, or a compressed file's pcluster: the builder
			// starts every table chunk with a pcluster, so a chunk
			// holding pclusters of several files is in the run of
			// the first one, and the rest of a file's chunks in its.
			b := im.blobs[fc.Device-1]
			i := b.chunkAt(int64(fc.BlkAddr) * BlockSize)
			if i >= 0 && owner[fc.Device-1][i] == 0 {
				owner[fc.Device-1][i] = file
			}
		}
		return nil
	})
	for bi, b := range im.blobs {
		b.runEnd = make([]int64, len(b.chunks))
		for i := len(b.chunks) - 1; i >= 0; i-- {
			c := b.chunks[i]
			b.runEnd[i] = c.off + alignUp(c.length)
			o := owner[bi][i]
			if walkErr == nil && o != 0 && i+1 < len(b.chunks) && owner[bi][i+1] == o && b.chunks[i+1].off == b.runEnd[i] {
				b.runEnd[i] = b.runEnd[i+1]
			}
		}
	}
}

// chunkAt returns the index of the chunk starting at off, or -1.
func (d *blobData) chunkAt(off int64) int {
	i, ok := slices.BinarySearchFunc(d.chunks, off, func(c chunk, t int64) int {
		switch {
		case c.off < t:
			return -1
		case c.off > t:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return i
}

// runLimit returns where the file run of the chunk holding byte pos ends
// (the blob's size when runs are unknown or pos is past every chunk).
func (d *blobData) runLimit(pos int64) int64 {
	if d.runEnd == nil {
		return d.size
	}
	i := d.chunkHolding(pos)
	if i < 0 {
		return d.size
	}
	return d.runEnd[i]
}

// chunkEndingAfter returns the index of the first chunk whose blocks end
// after pos: the one holding pos, if any, else the next.
func (d *blobData) chunkEndingAfter(pos int64) int {
	i, _ := slices.BinarySearchFunc(d.chunks, pos, func(c chunk, t int64) int {
		if c.off+alignUp(c.length) <= t {
			return -1
		}
		return 1
	})
	return i
}

// chunkHolding returns the index of the chunk whose blocks hold byte
// pos, or -1.
func (d *blobData) chunkHolding(pos int64) int {
	i := d.chunkEndingAfter(pos)
	if i >= len(d.chunks) || d.chunks[i].off > pos {
		return -1
	}
	return i
}
