package erofs

import "sort"

// chunkHolding returns the chunk table entry of device dev whose bytes
// hold [pos, pos+n). A blob pcluster need not start a chunk: erofsd's
// builder packs consecutive pclusters into one chunk (one digest, one
// fetch), never splitting a pcluster across two.
func chunkHolding(table []ChunkDigest, dev int, pos, n int64, blkBits uint) (*ChunkDigest, bool) {
	blk := pos >> blkBits
	// The first entry after (dev, blk); the one before it is the only
	// candidate (entries are sorted and do not overlap).
	i := sort.Search(len(table), func(i int) bool {
		e := &table[i]
		return int(e.Device) > dev || int(e.Device) == dev && int64(e.BlkAddr) > blk
	}) - 1
	if i < 0 || int(table[i].Device) != dev {
		return nil, false
	}
	e := &table[i]
	start := int64(e.BlkAddr) << blkBits
	if pos < start || pos+n > start+int64(e.Length) {
		return nil, false
	}
	return e, true
}

// dataEntry returns the chunk table entry that holds a chunk of a
// chunk-based file, n bytes at pos on device dev: an entry of its own, or
// one it shares with other small files (the builder's packs). Only a
// whole entry can be verified, so a chunk must lie inside one.
func dataEntry(table []ChunkDigest, dev int, pos, n int64, blkBits uint) (*ChunkDigest, error) {
	blk := pos >> blkBits
	if d, ok := chunkHolding(table, dev, pos, n, blkBits); ok {
		return d, nil
	}
	if d, ok := chunkHolding(table, dev, pos, 1, blkBits); ok {
		start := int64(d.BlkAddr) << blkBits
		return nil, corruptf("device %d block %d: chunk table entry at block %d covers %d bytes, the chunk ends %d bytes in", dev, blk, d.BlkAddr, d.Length, pos+n-start)
	}
	return nil, corruptf("device %d block %d has no chunk table entry: its data cannot be verified", dev, blk)
}
