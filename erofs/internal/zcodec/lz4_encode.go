package zcodec

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

// lz4TableMask keeps table indexes in range for the compiler; hashes
// never exceed it.
const lz4TableMask = 1<<lz4SmallHashLog - 1

// lz4Hash hashes the bytes at src[i:] (it reads 8; callers keep
// i+8 <= len(src)): 4 of them in the small-input mode, else 5.
func lz4Hash(src []byte, i int, small bool) uint32 {
	if small {
		return load32(src, i) * 2654435761 >> (32 - lz4SmallHashLog)
	}
	return uint32((load64(src, i) << 24) * 889523592379 >> (64 - lz4FastHashLog))
}

func (e *lz4Encoder) EncodeDestSize(dst, src []byte) (consumed, n int, err error) {
	// One pcluster's input is bounded by what can fit in dst: even a run
	// of zeros needs about one output byte per 255 input bytes.
	src = src[:min(len(src), lz4MaxInput(len(dst)))]
	b := lz4Block{dst: dst}
	if len(src) >= lz4MFLimit+1 && len(dst) >= 1 {
		e.compress(&b, src)
	}
	c, n := b.finish(src)
	return c, n, nil
}

// compress writes the sequences of the block into b, leaving the final
// literals to b.finish. It is the hot loop of -zlz4 builds: state lives
// in locals, and table indexes are masked so that they need no bounds
// checks.
func (e *lz4Encoder) compress(b *lz4Block, src []byte) {
	small := len(src) < lz4SmallLimit
	table := &e.table
	// Only the entries this block's hash can name need clearing.
	if small {
		clear(table[:])
	} else {
		clear(table[:1<<lz4FastHashLog])
	}
	const maxDistance = 65535
	mflimitPlusOne := len(src) - lz4MFLimit + 1 // matches start before this
	matchLimit := len(src) - lz4LastLiterals    // and end before this

	ip := 0
	table[lz4Hash(src, ip, small)&lz4TableMask] = int32(ip)
	ip++
	fwdH := lz4Hash(src, ip, small)
	for {
		// Find a 4-byte match, skipping faster the longer we miss.
		var match int
		step, attempts := 1, 1<<lz4SkipTrigger
		fwd := ip
		for {
			h := fwdH & lz4TableMask
			ip = fwd
			fwd += step
			step = attempts >> lz4SkipTrigger
			attempts++
			if fwd > mflimitPlusOne {
				return
			}
			match = int(table[h])
			fwdH = lz4Hash(src, fwd, small)
			table[h] = int32(ip)
			if ip-match <= maxDistance &&
				load32(src, match) == load32(src, ip) {
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
				return
			}
			ip = b.anchor
			if ip >= mflimitPlusOne {
				return
			}
			table[lz4Hash(src, ip-2, small)&lz4TableMask] = int32(ip - 2)
			// An immediate second match needs no literals.
			h := lz4Hash(src, ip, small) & lz4TableMask
			match = int(table[h])
			table[h] = int32(ip)
			if ip-match > maxDistance ||
				load32(src, match) != load32(src, ip) {
				break
			}
		}
		ip++
		fwdH = lz4Hash(src, ip, small)
	}
}

// lz4MaxInput bounds how much input one block of dstSize bytes can
// possibly cover, so that match finders never index more than that.
func lz4MaxInput(dstSize int) int {
	// A sequence of k bytes covers at most 4+15+255*(k-4)+... about 255
	// input bytes per output byte, plus the final literals.
	return dstSize*255 + 64
}
