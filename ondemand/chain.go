package ondemand

import (
	"crypto/sha256"
	"hash"

	"github.com/erofsd/erofsd/internal/sha256chain"
)

// coversBlob reports whether a blob's chunks, with states[i] the image's
// chunk state of chunks[i], cover the blob end to end: from offset 0
// (the initial state), without gaps, each with a state, the last ending
// at the blob's end. Such chunks are checked as steps of the blob's
// sha256 (see newCheck): the one hash that verifies a chunk also proves,
// once every chunk is in, that the cache holds the blob, which then
// needs no whole-file check.
func coversBlob(chunks []chunk, states []sha256chain.State, size int64) bool {
	if len(chunks) == 0 || len(states) != len(chunks) || states[0] != sha256chain.Initial {
		return false
	}
	var pos int64
	for i, c := range chunks {
		if c.off != pos || states[i] == (sha256chain.State{}) {
			return false
		}
		pos = c.off + alignUp(c.length)
	}
	return pos == size
}

// chained reports whether the blob's chunks are checked as steps of its
// sha256.
func (d *blobData) chained() bool { return d.states != nil }

// chunkCheck verifies one chunk's bytes, written to it as they come
// (length bytes, without the padding).
type chunkCheck struct {
	h hash.Hash // nil: matches nothing
	c *chunk
	// A chained chunk's step ends in next, or for the last chunk in
	// final, the blob's digest; an unchained one's hash is final, its
	// digest.
	chained, last bool
	next          sha256chain.State
	final         [32]byte
}

// newCheck starts checking chunk c against the image: against its step
// of the blob's sha256 if the blob is chained, else against its digest.
func (d *blobData) newCheck(c *chunk) chunkCheck {
	if !d.chained() {
		return chunkCheck{h: sha256.New(), c: c, final: c.digest}
	}
	k := chunkCheck{c: c, chained: true}
	i := d.chunkAt(c.off)
	if i < 0 {
		return k // not one of the blob's chunks
	}
	h, err := sha256chain.Resume(d.states[i], c.off)
	if err != nil {
		return k // cannot happen: chunks are block aligned
	}
	k.h = h
	if i+1 < len(d.chunks) {
		k.next = d.states[i+1]
	} else {
		k.last, k.final = true, d.digest.Sum()
	}
	return k
}

func (k *chunkCheck) Write(p []byte) {
	if k.h != nil {
		k.h.Write(p)
	}
}

// matches reports whether the bytes written are the chunk's. A chained
// chunk's step covers its zero padding too, as it is served.
func (k *chunkCheck) matches() bool {
	if k.h == nil {
		return false
	}
	if k.chained {
		writeZeroBytes(k.h, alignUp(k.c.length)-k.c.length)
		if !k.last {
			st, err := sha256chain.Of(k.h)
			return err == nil && st == k.next
		}
	}
	return [32]byte(k.h.Sum(nil)) == k.final
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
	if !d.chained() {
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
