package zcodec

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// LZ4HC: the hash-chain match finder and the three-match lookahead parser
// of lz4hc's LZ4HC_compress_hashChain (levels 1..9), driven to fill a
// fixed-size block as LZ4_compress_HC_destSize does (what mkfs.erofs
// -zlz4hc uses). Levels 10..12, lz4hc's optimal parser, use the same
// parser with more attempts.
const (
	lz4hcHashLog   = 15
	lz4hcChainSize = 1 << 16 // one 16-bit delta per position in the window
	lz4hcMaxDist   = 65535
	lz4hcOptimalML = 18 // ML_MASK-1+MINMATCH: the longest match without a length byte
	lz4hcMaxIndex  = 1 << 30
)

// lz4hcAttempts is the number of chain links each search follows per
// level (lz4hc's clTable; 10..12 are our extension of the hash chain).
var lz4hcAttempts = [LZ4HCMaxLevel + 1]int{2, 2, 2, 4, 8, 16, 32, 64, 128, 256, 512, 2048, 8192}

// lz4hcEncoder is the LZ4HC destSize compressor.
type lz4hcEncoder struct {
	level    int
	attempts int
	patterns bool // lz4hc's pattern analysis, for levels with more than 128 attempts
	// Positions are stored as base+i so that the tables need no clearing
	// between calls: entries below base belong to an earlier block.
	base         int32
	nextToUpdate int32
	hashTable    [1 << lz4hcHashLog]int32
	chainTable   [lz4hcChainSize]uint16
	src          []byte
}

func newLZ4HCEncoder(level int) (Encoder, error) {
	if level < 0 || level > LZ4HCMaxLevel {
		return nil, fmt.Errorf("%w: lz4hc level %d (0..%d)", ErrUnsupported, level, LZ4HCMaxLevel)
	}
	if level == 0 {
		level = LZ4HCDefaultLevel // as lz4hc treats levels below 1
	}
	return &lz4hcEncoder{level: level, attempts: lz4hcAttempts[level], patterns: lz4hcAttempts[level] > 128}, nil
}

func (e *lz4hcEncoder) Algorithm() Algorithm { return LZ4 }
func (e *lz4hcEncoder) Params() Params       { return Params{} }

func lz4hcHash(v uint32) uint32 { return v * 2654435761 >> (32 - lz4hcHashLog) }

// reset prepares the tables for a new block of n bytes.
func (e *lz4hcEncoder) reset(src []byte) {
	e.src = src
	// Start past every index the last block inserted.
	e.base = e.nextToUpdate + 1
	if int64(e.base)+int64(len(src)) >= lz4hcMaxIndex {
		clear(e.hashTable[:])
		e.base = 1
	}
	e.nextToUpdate = e.base
}

// insert adds the positions up to ip (exclusive) to the hash chains.
func (e *lz4hcEncoder) insert(ip int) {
	target := e.base + int32(ip)
	for idx := e.nextToUpdate; idx < target; idx++ {
		h := lz4hcHash(binary.LittleEndian.Uint32(e.src[idx-e.base:]))
		delta := idx - e.hashTable[h]
		if delta > lz4hcMaxDist {
			delta = lz4hcMaxDist
		}
		e.chainTable[uint16(idx)] = uint16(delta)
		e.hashTable[h] = idx
	}
	e.nextToUpdate = target
}

// widerMatch finds the longest match for ip that may also start earlier,
// down to lowLimit, and ends before highLimit; it must beat longest. It
// returns the match length (or longest if none is better), its start and
// the start of the earlier occurrence.
func (e *lz4hcEncoder) widerMatch(ip, lowLimit, highLimit, longest int) (ml, start, ref int) {
	src := e.src
	ml, start, ref = longest, ip, 0
	e.insert(ip)
	lookBack := ip - lowLimit
	lowest := max(e.base, e.base+int32(ip)-lz4hcMaxDist)
	pattern := binary.LittleEndian.Uint32(src[ip:])
	idx := e.hashTable[lz4hcHash(pattern)]
	repeat, srcPatternLen := repeatUntested, 0
	for n := e.attempts; n > 0 && idx >= lowest; n-- {
		mp := int(idx - e.base)
		// Cheap test first: a longer match must also match at its end.
		// Positions at or after ip are in the chains when the parser
		// went back to an earlier match; they are no use.
		q := mp - lookBack + ml - 1
		if mp < ip && (q < 0 || lowLimit+ml+1 > len(src) ||
			binary.LittleEndian.Uint16(src[lowLimit+ml-1:]) == binary.LittleEndian.Uint16(src[q:])) {
			if binary.LittleEndian.Uint32(src[mp:]) == pattern {
				back := 0
				for ip-back > lowLimit && mp-back > 0 && src[ip-back-1] == src[mp-back-1] {
					back++
				}
				l := lz4MinMatch + lz4Count(src, mp+lz4MinMatch, ip+lz4MinMatch, highLimit) + back
				if l > ml {
					ml, start, ref = l, ip-back, mp-back
				}
			}
		}
		d := e.chainTable[uint16(idx)]
		if e.patterns && d == 1 {
			// A run of a repeated 1-, 2- or 4-byte pattern chains every
			// position to the one before: rather than walk the run, jump
			// to where the pattern is best matched (lz4hc's pattern
			// analysis, without its external-dictionary cases).
			if repeat == repeatUntested {
				repeat = repeatNot
				if pattern&0xFFFF == pattern>>16 && pattern&0xFF == pattern>>24 {
					repeat = repeatConfirmed
					srcPatternLen = lz4hcCountPattern(src, ip+4, highLimit, pattern) + 4
				}
			}
			cand := idx - 1
			if repeat == repeatConfirmed && cand >= lowest && cand < e.base+int32(ip) {
				cp := int(cand - e.base)
				if binary.LittleEndian.Uint32(src[cp:]) == pattern {
					fwd := lz4hcCountPattern(src, cp+4, highLimit, pattern) + 4
					bk := lz4hcReverseCountPattern(src, cp, pattern)
					bk = int(cand - max(cand-int32(bk), lowest))
					seg := bk + fwd
					if seg >= srcPatternLen && fwd <= srcPatternLen {
						// The whole source pattern fits: take its best
						// position, which more may follow.
						idx = cand + int32(fwd) - int32(srcPatternLen)
					} else {
						idx = cand - int32(bk)
						if lookBack == 0 {
							if maxML := min(seg, srcPatternLen); ml < maxML {
								if ip-int(idx-e.base) > lz4hcMaxDist {
									break
								}
								ml, start, ref = maxML, ip, int(idx-e.base)
							}
							next := int32(e.chainTable[uint16(idx)])
							if next > idx {
								break
							}
							idx -= next
						}
					}
					continue
				}
			}
		}
		if d == 0 {
			break
		}
		idx -= int32(d)
	}
	return ml, start, ref
}

// Whether the 4 bytes at the search position repeat a shorter pattern.
const (
	repeatUntested = iota
	repeatConfirmed
	repeatNot
)

// lz4hcCountPattern counts the bytes of src[i:end] that continue the
// repeating 4-byte little-endian pattern.
func lz4hcCountPattern(src []byte, i, end int, pattern uint32) int {
	start := i
	p64 := uint64(pattern) | uint64(pattern)<<32
	for i+8 <= end {
		if x := binary.LittleEndian.Uint64(src[i:]) ^ p64; x != 0 {
			return i + bits.TrailingZeros64(x)>>3 - start
		}
		i += 8
	}
	for k := 0; i < end && src[i] == byte(p64>>(8*k)); k++ {
		i++
	}
	return i - start
}

// lz4hcReverseCountPattern counts the bytes before src[i] that continue
// the pattern backwards.
func lz4hcReverseCountPattern(src []byte, i int, pattern uint32) int {
	start := i
	for i >= 4 && binary.LittleEndian.Uint32(src[i-4:]) == pattern {
		i -= 4
	}
	for k := 3; i > 0 && k >= 0 && src[i-1] == byte(pattern>>(8*k)); k-- {
		i--
	}
	return start - i
}

func (e *lz4hcEncoder) EncodeDestSize(dst, src []byte) (consumed, n int, err error) {
	src = src[:min(len(src), lz4MaxInput(len(dst)))]
	b := lz4Block{dst: dst, hc: true}
	if len(src) < lz4MFLimit+1 || len(dst) < 1 {
		c, n := b.finish(src)
		return c, n, nil
	}
	e.reset(src)
	defer func() { e.src = nil }()

	mflimit := len(src) - lz4MFLimit // matches start at or before this
	matchLimit := len(src) - lz4LastLiterals

	// emit writes one sequence; false means the block is full.
	emit := func(ip, ml, ref int) bool { return b.sequence(src, ip, ip-ref, ml) }
	done := func() (int, int, error) {
		c, n := b.finish(src)
		return c, n, nil
	}

	ip := 0
	for ip <= mflimit {
		ml, _, ref := e.widerMatch(ip, ip, matchLimit, lz4MinMatch-1)
		if ml < lz4MinMatch {
			ip++
			continue
		}
		start0, ref0, ml0 := ip, ref, ml
		var start2, ref2, ml2, start3, ref3, ml3 int

	search2:
		if ip+ml <= mflimit {
			ml2, start2, ref2 = e.widerMatch(ip+ml-2, ip, matchLimit, ml)
		} else {
			ml2 = ml
		}
		if ml2 == ml { // no better match: write the first one
			if !emit(ip, ml, ref) {
				return done()
			}
			ip = b.anchor
			continue
		}
		if start0 < ip && start2 < ip+ml0 {
			// The first match was skipped; squeeze it back between.
			ip, ref, ml = start0, ref0, ml0
		}
		if start2-ip < 3 { // the first match is too short: drop it
			ip, ref, ml = start2, ref2, ml2
			goto search2
		}

	search3:
		if start2-ip < lz4hcOptimalML {
			newML := min(ml, lz4hcOptimalML)
			if ip+newML > start2+ml2-lz4MinMatch {
				newML = start2 - ip + ml2 - lz4MinMatch
			}
			if c := newML - (start2 - ip); c > 0 {
				start2, ref2, ml2 = start2+c, ref2+c, ml2-c
			}
		}
		if start2+ml2 <= mflimit {
			ml3, start3, ref3 = e.widerMatch(start2+ml2-3, start2, matchLimit, ml2)
		} else {
			ml3 = ml2
		}
		if ml3 == ml2 { // no better match: write the first two
			if start2 < ip+ml {
				ml = start2 - ip
			}
			if !emit(ip, ml, ref) {
				return done()
			}
			if !emit(start2, ml2, ref2) {
				return done()
			}
			ip = b.anchor
			continue
		}
		if start3 < ip+ml+3 { // no room for the second match: drop it
			if start3 >= ip+ml {
				// The first can be written now; the third becomes the
				// first of the next round.
				if start2 < ip+ml {
					c := ip + ml - start2
					start2, ref2, ml2 = start2+c, ref2+c, ml2-c
					if ml2 < lz4MinMatch {
						start2, ref2, ml2 = start3, ref3, ml3
					}
				}
				if !emit(ip, ml, ref) {
					return done()
				}
				ip, ref, ml = start3, ref3, ml3
				start0, ref0, ml0 = start2, ref2, ml2
				goto search2
			}
			start2, ref2, ml2 = start3, ref3, ml3
			goto search3
		}

		// Three ascending matches: write the first, shortened so the
		// second keeps as much as possible.
		if start2 < ip+ml {
			if start2-ip < lz4hcOptimalML {
				ml = min(ml, lz4hcOptimalML)
				if ip+ml > start2+ml2-lz4MinMatch {
					ml = start2 - ip + ml2 - lz4MinMatch
				}
				if c := ml - (start2 - ip); c > 0 {
					start2, ref2, ml2 = start2+c, ref2+c, ml2-c
				}
			} else {
				ml = start2 - ip
			}
		}
		if !emit(ip, ml, ref) {
			return done()
		}
		ip, ref, ml = start2, ref2, ml2
		start2, ref2, ml2 = start3, ref3, ml3
		goto search3
	}
	return done()
}
