package zcodec

import (
	"encoding/binary"
	"math/bits"
)

// lz4Block writes one fixed-output LZ4 block: the sequences the match
// finders choose, cut short when the pcluster is full.
//
// It keeps the block valid for LZ4_decompress_safe whatever the input was
// cut at: a sequence is only written if the output still has room
// afterwards for a final literal run that puts the match at least MFLIMIT
// (12) bytes and its end at least LASTLITERALS (5) bytes before the end of
// the consumed input. The match finders only look for matches that start
// before len(src)-MFLIMIT and end before len(src)-LASTLITERALS, and
// sequence refuses any that do not, so the input for that final run is
// always there.
type lz4Block struct {
	dst    []byte
	op     int // bytes written
	anchor int // first input byte not yet written
}

// lz4LenBytes is how many extra length bytes a literal length or a match
// length minus MINMATCH of v needs after the token's 4 bits.
func lz4LenBytes(v int) int {
	if v < 15 {
		return 0
	}
	return (v-15)/255 + 1
}

// lz4TailNeed is how many output bytes the final literal run needs after a
// match of length ml: a token and enough literals to keep the match
// MFLIMIT and its end LASTLITERALS away from the end of the block.
func lz4TailNeed(ml int) int {
	return 1 + max(lz4LastLiterals, lz4MFLimit-ml)
}

// sequence writes the literals src[anchor:ms] and a match of length ml at
// distance offset, shortening the match if only a shorter one fits. It
// reports false, writing nothing, when no valid sequence fits; the block
// must then be finished.
func (b *lz4Block) sequence(src []byte, ms, offset, ml int) bool {
	// The input rules: a match starts at least MFLIMIT bytes and ends at
	// least LASTLITERALS bytes before the end of the input.
	if ms+lz4MFLimit > len(src) {
		return false
	}
	if ml = min(ml, len(src)-lz4LastLiterals-ms); ml < lz4MinMatch {
		return false
	}
	lit := ms - b.anchor
	head := 1 + lz4LenBytes(lit) + lit + 2 // token, literals, offset
	room := len(b.dst) - b.op - head
	if room < lz4TailNeed(ml)+lz4LenBytes(ml-lz4MinMatch) {
		// Too long to fit as is: a shorter match needs fewer length
		// bytes, and the longest one that leaves a final run may do.
		k := room - lz4TailNeed(lz4MinMatch+15) // length bytes we can afford with ml >= 19
		switch {
		case k > 0:
			ml = min(ml, lz4MinMatch+14+255*k)
		case room >= lz4TailNeed(lz4MinMatch+14):
			ml = min(ml, lz4MinMatch+14)
		default:
			return false
		}
		if ml < lz4MinMatch || room < lz4TailNeed(ml)+lz4LenBytes(ml-lz4MinMatch) {
			return false
		}
	}
	d := b.dst[b.op:]
	i := 1
	tok := min(lit, 15) << 4
	if lit >= 15 {
		i = lz4PutLen(d, i, lit-15)
	}
	i += copy(d[i:], src[b.anchor:ms])
	binary.LittleEndian.PutUint16(d[i:], uint16(offset))
	i += 2
	m := ml - lz4MinMatch
	tok |= min(m, 15)
	if m >= 15 {
		i = lz4PutLen(d, i, m-15)
	}
	d[0] = byte(tok)
	b.op += i
	b.anchor = ms + ml
	return true
}

// lz4PutLen writes the extra length bytes for v at d[i:].
func lz4PutLen(d []byte, i, v int) int {
	for v >= 255 {
		d[i] = 255
		i++
		v -= 255
	}
	d[i] = byte(v)
	return i + 1
}

// finish writes the final literal run, as much of src[anchor:] as fits,
// and returns how much input the block covers and its length.
func (b *lz4Block) finish(src []byte) (consumed, n int) {
	space := len(b.dst) - b.op
	lit := min(len(src)-b.anchor, lz4MaxLiterals(space))
	if lit <= 0 && b.op == 0 {
		return 0, 0
	}
	d := b.dst[b.op:]
	d[0] = byte(min(lit, 15) << 4)
	i := 1
	if lit >= 15 {
		i = lz4PutLen(d, i, lit-15)
	}
	i += copy(d[i:], src[b.anchor:b.anchor+lit])
	b.op += i
	return b.anchor + lit, b.op
}

// lz4MaxLiterals is the longest literal run that fits in space bytes
// with its token and length bytes.
func lz4MaxLiterals(space int) int {
	if space < 1 {
		return 0
	}
	l := space - 1
	if l >= 15 {
		l -= (l-15)/256 + 1
	}
	for 1+(l+1)+lz4LenBytes(l+1) <= space {
		l++
	}
	for l > 0 && 1+l+lz4LenBytes(l) > space {
		l--
	}
	return l
}

// lz4Count returns how many bytes src[a:] and src[b:] have in common, up
// to src[limit] (b > a, b < limit).
func lz4Count(src []byte, a, b, limit int) int {
	n := 0
	for b+8 <= limit {
		x := binary.LittleEndian.Uint64(src[a:]) ^ binary.LittleEndian.Uint64(src[b:])
		if x != 0 {
			return n + bits.TrailingZeros64(x)>>3
		}
		a, b, n = a+8, b+8, n+8
	}
	for b < limit && src[a] == src[b] {
		a, b, n = a+1, b+1, n+1
	}
	return n
}
