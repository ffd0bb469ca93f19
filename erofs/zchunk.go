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
