package zcodec

import "encoding/binary"

// The fast LZ4 match finder, as LZ4_compress_destSize (what mkfs.erofs
// -zlz4 uses) does it: one hash table of recent positions, a skip that
// grows over incompressible data, and no second look. Like liblz4 on
// 64-bit machines, it hashes 5 bytes into 4096 entries, or, for inputs
// under 64 KiB (its 16-bit table mode), 4 bytes into 8192 entries.
const (
	lz4FastHashLog  = 12 // LZ4_HASHLOG for LZ4_MEMORY_USAGE 14
	lz4SmallHashLog = 13 // LZ4_HASHLOG+1 for byU16 tables
	lz4SmallLimit   = 64<<10 + lz4MFLimit - 1
	lz4SkipTrigger  = 6 // LZ4_skipTrigger: skip faster after 64 misses
)

// lz4Encoder is the LZ4 "fast" destSize compressor.
type lz4Encoder struct {
	small bool // this block uses the small-input hash
	// table holds the last position with each hash. As in liblz4, an
	// empty entry is 0 and so names position 0, whose bytes are then
	// compared like any candidate's.
	table [1 << lz4SmallHashLog]int32
}

func newLZ4Encoder() *lz4Encoder { return &lz4Encoder{} }

// Reset does nothing: every call starts from a fresh table.
func (e *lz4Encoder) Reset() {}

func (e *lz4Encoder) Algorithm() Algorithm { return LZ4 }
func (e *lz4Encoder) Params() Params       { return Params{} }

// hash hashes the bytes at src[i:] (it reads 8; callers keep
// i+8 <= len(src)).
func (e *lz4Encoder) hash(src []byte, i int) uint32 {
	if e.small {
		return binary.LittleEndian.Uint32(src[i:]) * 2654435761 >> (32 - lz4SmallHashLog)
	}
	return uint32((binary.LittleEndian.Uint64(src[i:]) << 24) * 889523592379 >> (64 - lz4FastHashLog))
}

func (e *lz4Encoder) EncodeDestSize(dst, src []byte) (consumed, n int, err error) {
	// One pcluster's input is bounded by what can fit in dst: even a run
	// of zeros needs about one output byte per 255 input bytes.
	src = src[:min(len(src), lz4MaxInput(len(dst)))]
	b := lz4Block{dst: dst}
	if len(src) < lz4MFLimit+1 || len(dst) < 1 {
		c, n := b.finish(src)
		return c, n, nil
	}
	e.small = len(src) < lz4SmallLimit
	// Only the entries this block's hash can name need clearing.
	if e.small {
		clear(e.table[:])
	} else {
		clear(e.table[:1<<lz4FastHashLog])
	}
	const maxDistance = 65535
	mflimitPlusOne := len(src) - lz4MFLimit + 1 // matches start before this
	matchLimit := len(src) - lz4LastLiterals    // and end before this

	ip := 0
	e.table[e.hash(src, ip)] = int32(ip)
	ip++
	fwdH := e.hash(src, ip)
	for {
		// Find a 4-byte match, skipping faster the longer we miss.
		var match int
		step, attempts := 1, 1<<lz4SkipTrigger
		fwd := ip
		for {
			h := fwdH
			ip = fwd
			fwd += step
			step = attempts >> lz4SkipTrigger
			attempts++
			if fwd > mflimitPlusOne {
				c, n := b.finish(src)
				return c, n, nil
			}
			match = int(e.table[h])
			fwdH = e.hash(src, fwd)
			e.table[h] = int32(ip)
			if ip-match <= maxDistance &&
				binary.LittleEndian.Uint32(src[match:]) == binary.LittleEndian.Uint32(src[ip:]) {
				break
			}
		}
		// Extend backwards over bytes the literals would repeat.
		for ip > b.anchor && match > 0 && src[ip-1] == src[match-1] {
			ip--
			match--
		}
		for {
			ml := lz4MinMatch + lz4Count(src, match+lz4MinMatch, ip+lz4MinMatch, matchLimit)
			if !b.sequence(src, ip, ip-match, ml) {
				c, n := b.finish(src)
				return c, n, nil
			}
			ip = b.anchor
			if ip >= mflimitPlusOne {
				c, n := b.finish(src)
				return c, n, nil
			}
			e.table[e.hash(src, ip-2)] = int32(ip - 2)
			// An immediate second match needs no literals.
			h := e.hash(src, ip)
			match = int(e.table[h])
			e.table[h] = int32(ip)
			if ip-match > maxDistance ||
				binary.LittleEndian.Uint32(src[match:]) != binary.LittleEndian.Uint32(src[ip:]) {
				break
			}
		}
		ip++
		fwdH = e.hash(src, ip)
	}
}

// lz4MaxInput bounds how much input one block of dstSize bytes can
// possibly cover, so that match finders never index more than that.
func lz4MaxInput(dstSize int) int {
	// A sequence of k bytes covers at most 4+15+255*(k-4)+... about 255
	// input bytes per output byte, plus the final literals.
	return dstSize*255 + 64
}
