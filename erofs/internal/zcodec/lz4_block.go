package zcodec

import (
	"encoding/binary"
	"math/bits"
)

// lz4Block writes one fixed-output LZ4 block: the sequences the match
// finders choose, cut short when the pcluster is full.
//
// Where the block ends it follows liblz4 exactly, LZ4_compress_destSize's
// rules for the fast encoder and LZ4_compress_HC_destSize's for LZ4HC, so
// that our pclusters are the ones mkfs.erofs writes. Both keep the block
// valid for LZ4_decompress_safe however the input is cut: a sequence is
// only written if the output keeps room for a final literal run that puts
// the match at least MFLIMIT (12) bytes and its end at least LASTLITERALS
// (5) bytes before the end of the consumed input. The match finders only
// look for matches that start before len(src)-MFLIMIT and end before
// len(src)-LASTLITERALS, and sequence refuses any that do not, so the
// input for that final run is always there.
type lz4Block struct {
	dst    []byte
	op     int  // bytes written
	anchor int  // first input byte not yet written
	hc     bool // LZ4HC's end-of-block rules
}

// lz4LenBytes is how many extra length bytes a literal length or a match
// length minus MINMATCH of v needs after the token's 4 bits.
func lz4LenBytes(v int) int {
	if v < 15 {
		return 0
	}
	return (v-15)/255 + 1
}

// sequence writes the literals src[anchor:ms] and a match of length ml at
// distance offset, shortening the match if only a shorter one fits. It
// reports false when the block is full; it may have written a last,
// shortened sequence then (as lz4hc does), and the block must be finished.
func (b *lz4Block) sequence(src []byte, ms, offset, ml int) bool {
	if b.short(src, ms, offset, ml) {
		return true
	}
	// The input rules: a match starts at least MFLIMIT bytes and ends at
	// least LASTLITERALS bytes before the end of the input.
	if ms+lz4MFLimit > len(src) {
		return false
	}
	if ml = min(ml, len(src)-lz4LastLiterals-ms); ml < lz4MinMatch {
		return false
	}
	lit := ms - b.anchor
	// room is what is left after the token, literals and offset.
	room := len(b.dst) - b.op - (1 + lz4LenBytes(lit) + lit + 2)
	if b.hc {
		// LZ4HC_encodeSequence with limit fillOutput, its output end
		// LASTLITERALS short of the real one.
		if lit/255+lit+2+1+lz4LastLiterals > len(b.dst)-lz4LastLiterals-b.op ||
			(ml-lz4MinMatch)/255+1+lz4LastLiterals > room-lz4LastLiterals {
			// _dest_overflow: the sequence may still go in with a
			// shorter match, if that leaves the match MFLIMIT from the end.
			llCost := 1 + lz4LenBytes(lit) + lit
			maxLitPos := len(b.dst) - lz4LastLiterals - 3
			if b.op+llCost <= maxLitPos {
				ml = min(ml, lz4MinMatch+14+(maxLitPos-(b.op+llCost))*255)
				if len(b.dst)-(b.op+llCost+2)-1+ml >= lz4MFLimit {
					b.write(src, ms, offset, ml)
				}
			}
			return false
		}
	} else {
		// LZ4_compress_generic with fillOutput: the offset, a token and
		// MFLIMIT-MINMATCH literals must fit after the literals, ...
		if room < 1+lz4MFLimit-lz4MinMatch {
			return false
		}
		// ... and a token and LASTLITERALS literals after the match,
		// which is shortened to make them fit.
		if room-lz4LenBytes(ml-lz4MinMatch) < 1+lz4LastLiterals {
			ml = min(ml, lz4MinMatch+14+(room-1-lz4LastLiterals)*255)
		}
	}
	b.write(src, ms, offset, ml)
	return true
}

// short writes the most common sequence, one with
// under 15 literals, a match under 19 bytes and the block far from full,
// where none of sequence's end rules can apply; it reports false, having
// written nothing, for any other.
func (b *lz4Block) short(src []byte, ms, offset, ml int) bool {
	lit := ms - b.anchor
	if lit >= 15 || ml-lz4MinMatch >= 15 || len(b.dst)-b.op < 32 ||
		ms+ml > len(src)-lz4LastLiterals || ms+lz4MFLimit > len(src) || b.anchor+16 > len(src) {
		return false
	}
	d := b.dst[b.op : b.op+32 : b.op+32]
	d[0] = byte(lit<<4 | (ml - lz4MinMatch))
	binary.LittleEndian.PutUint64(d[1:9], load64(src, b.anchor))
	binary.LittleEndian.PutUint64(d[9:17], load64(src, b.anchor+8))
	binary.LittleEndian.PutUint16(d[1+lit:], uint16(offset))
	b.op += 1 + lit + 2
	b.anchor = ms + ml
	return true
}

// write writes one sequence; the caller has checked that it fits.
func (b *lz4Block) write(src []byte, ms, offset, ml int) {
	lit := ms - b.anchor
	d := b.dst[b.op:]
	i := 1
	tok := min(lit, 15) << 4
	if lit >= 15 {
		i = lz4PutLen(d, i, lit-15)
	}
	if lit <= 16 && len(d)-i >= 16 && len(src)-b.anchor >= 16 {
		// Short literals (most of them) are copied as two words
		// rather than through memmove; the bytes written past them
		// are overwritten next or lie past the stream's end.
		binary.LittleEndian.PutUint64(d[i:i+8:i+8], load64(src, b.anchor))
		binary.LittleEndian.PutUint64(d[i+8:i+16:i+16], load64(src, b.anchor+8))
		i += lit
	} else {
		i += copy(d[i:], src[b.anchor:ms])
	}
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

// finish writes the final literal run, as much of src[anchor:] as fits
// (liblz4's arithmetic), and returns how much input the block covers and
// its length.
func (b *lz4Block) finish(src []byte) (consumed, n int) {
	space := len(b.dst) - b.op
	lit := len(src) - b.anchor
	if 1+lz4LenBytes(lit)+lit > space {
		lit = space - 1
		lit -= (lit + 256 - 15) / 256
	}
	if lit <= 0 && b.op == 0 || space < 1 {
		return 0, 0
	}
	lit = max(lit, 0)
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

// load16, load32 and load64 read little-endian words at b[i:]. The full
// slice expression lets the compiler drop the pointer masking of b[i:],
// which is a fifth of the fast encoder's time in its hot loop.
func load16(b []byte, i int) uint16 { return binary.LittleEndian.Uint16(b[i : i+2 : i+2]) }
func load32(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[i : i+4 : i+4]) }
func load64(b []byte, i int) uint64 { return binary.LittleEndian.Uint64(b[i : i+8 : i+8]) }

// lz4Count returns how many bytes src[a:] and src[b:] have in common, up
// to src[limit] (b > a, b < limit).
func lz4Count(src []byte, a, b, limit int) int {
	n := 0
	for b+8 <= limit {
		x := load64(src, a) ^ load64(src, b)
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
