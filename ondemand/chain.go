package ondemand

import (
	"crypto/sha256"
	"hash"

	"github.com/erofsd/erofsd/internal/sha256chain"
)

// chainChunks gives a blob's chunks their steps of the blob's sha256
// (states[i] is chunks[i]'s state, from the image's chunk states) if the
// chunks cover the blob end to end, each with a recorded state, and
// reports whether they do. A chained chunk is checked as the step from
// its state to the next chunk's (the last one's to the blob's digest):
// the one hash that verifies it also proves, once every chunk is in,
// that the cache holds the blob, which then needs no whole-file check.
func chainChunks(chunks []chunk, states []sha256chain.State, size int64) bool {
	if len(chunks) == 0 || len(states) != len(chunks) {
		return false
	}
	var pos int64
	for i, c := range chunks {
		if c.off != pos || states[i] == (sha256chain.State{}) {
			return false
		}
		pos = c.off + alignUp(c.length)
	}
	if pos != size || states[0] != sha256chain.Initial {
		return false
	}
	for i := range chunks {
		c := &chunks[i]
		c.chained, c.from = true, states[i]
		if i+1 < len(chunks) {
			c.to = states[i+1]
		} else {
			c.last = true
		}
	}
	return true
}

// chunkCheck verifies one chunk's bytes, written to it as they come
// (length bytes, without the padding).
type chunkCheck struct {
	h    hash.Hash
	c    *chunk
	blob [32]byte // the blob's digest, which the last chained chunk ends in
}

// newCheck starts checking chunk c against the image: against its step
// of the blob's sha256 if it is chained, else against its digest.
func (d *blobData) newCheck(c *chunk) chunkCheck {
	if !c.chained {
		return chunkCheck{h: sha256.New(), c: c}
	}
	h, err := sha256chain.Resume(c.from, c.off)
	if err != nil {
		return chunkCheck{c: c} // cannot happen (chunks are block aligned); matches nothing
	}
	return chunkCheck{h: h, c: c, blob: d.digest.Sum()}
}

func (k *chunkCheck) Write(p []byte) {
	if k.h != nil {
		k.h.Write(p)
	}
}

// matches reports whether the bytes written are the chunk's. A chained
// chunk's step covers its zero padding too, as it is served.
func (k *chunkCheck) matches() bool {
	c := k.c
	switch {
	case k.h == nil:
		return false
	case !c.chained:
		return [32]byte(k.h.Sum(nil)) == c.digest
	}
	writeZeroBytes(k.h, alignUp(c.length)-c.length)
	if c.last {
		return [32]byte(k.h.Sum(nil)) == k.blob
	}
	st, err := sha256chain.Of(k.h)
	return err == nil && st == c.to
}

// matches reports whether data (length bytes) is chunk c's.
func (d *blobData) matches(c *chunk, data []byte) bool {
	k := d.newCheck(c)
	k.Write(data)
	return k.matches()
}

// matchesZeros reports whether the all-zero chunk c is its step of the
// blob: an image whose states say otherwise contradicts its own table.
func (d *blobData) matchesZeros(c *chunk) bool {
	if !c.chained {
		return true // its digest is that of zeros: zeroDigests.is
	}
	k := d.newCheck(c)
	if k.h == nil {
		return false
	}
	writeZeroBytes(k.h, c.length)
	return k.matches()
}

var zeroPage [BlockSize]byte

func writeZeroBytes(h hash.Hash, n int64) {
	for ; n > 0; n -= BlockSize {
		h.Write(zeroPage[:min(n, BlockSize)])
	}
}
