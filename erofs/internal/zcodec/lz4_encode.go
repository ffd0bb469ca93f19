package zcodec

import "encoding/binary"

// The fast LZ4 match finder, as LZ4_compress_destSize (what mkfs.erofs
// -zlz4 uses) does it: one hash table of recent positions, a skip that
// grows over incompressible data, and no second look.
const (
	lz4FastHashLog     = 12 // LZ4_HASHLOG for LZ4_MEMORY_USAGE 14
	lz4SkipTrigger     = 6  // LZ4_skipTrigger: skip faster after 64 misses
	lz4FastHashEntries = 1 << lz4FastHashLog
)

// lz4Encoder is the LZ4 "fast" destSize compressor.
type lz4Encoder struct {
	table [lz4FastHashEntries]int32 // position+1 of the last 5-byte group with each hash; 0 = none
}

func newLZ4Encoder() *lz4Encoder { return &lz4Encoder{} }

func (e *lz4Encoder) Algorithm() Algorithm { return LZ4 }
func (e *lz4Encoder) Params() Params       { return Params{} }

// lz4Hash5 hashes the 5 bytes at src[i:] (it reads 8; callers keep
// i+8 <= len(src)).
func lz4Hash5(src []byte, i int) uint32 {
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
	clear(e.table[:])
	const maxDistance = 65535
	mflimitPlusOne := len(src) - lz4MFLimit + 1 // matches start before this
	matchLimit := len(src) - lz4LastLiterals    // and end before this

	ip := 0
	e.table[lz4Hash5(src, ip)] = int32(ip + 1)
	ip++
	fwdH := lz4Hash5(src, ip)
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
			match = int(e.table[h]) - 1
			fwdH = lz4Hash5(src, fwd)
			e.table[h] = int32(ip + 1)
			if match >= 0 && ip-match <= maxDistance &&
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
			e.table[lz4Hash5(src, ip-2)] = int32(ip - 2 + 1)
			// An immediate second match needs no literals.
			h := lz4Hash5(src, ip)
			match = int(e.table[h]) - 1
			e.table[h] = int32(ip + 1)
			if match < 0 || ip-match > maxDistance ||
				binary.LittleEndian.Uint32(src[match:]) != binary.LittleEndian.Uint32(src[ip:]) {
				break
			}
		}
		ip++
		fwdH = lz4Hash5(src, ip)
	}
}

// lz4MaxInput bounds how much input one block of dstSize bytes can
// possibly cover, so that match finders never index more than that.
func lz4MaxInput(dstSize int) int {
	// A sequence of k bytes covers at most 4+15+255*(k-4)+... about 255
	// input bytes per output byte, plus the final literals.
	return dstSize*255 + 64
}
