package zcodec

import (
	"bytes"
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
	// far bounds the input the current block's match search has read
	// (every byte it compared lies before it).
	far int
	// The last block's sequences, as its parser chose them, and the
	// input they depend on: the same input again into a smaller output,
	// as the builder asks for a file's last pcluster one block smaller,
	// gets the same sequences (the output size only decides where the
	// block ends), so they are replayed instead of searched again.
	last struct {
		seqs   []lz4hcSeq
		srcLen int    // len(src)
		dstLen int    // len(dst)
		read   []byte // src[:far]
		ok     bool
	}
}

// lz4hcSeq is a sequence the parser chose: a match of length ml at ip
// with the earlier occurrence at ref.
type lz4hcSeq struct{ ip, ml, ref int32 }

func newLZ4HCEncoder(level int) (Encoder, error) {
	if level < 0 || level > LZ4HCMaxLevel {
		return nil, fmt.Errorf("%w: lz4hc level %d (0..%d)", ErrUnsupported, level, LZ4HCMaxLevel)
	}
	if level == 0 {
		level = LZ4HCDefaultLevel // as lz4hc treats levels below 1
	}
	return &lz4hcEncoder{level: level, attempts: lz4hcAttempts[level], patterns: lz4hcAttempts[level] > 128}, nil
}

// Reset does nothing: a replay is only taken for the same input bytes.
func (e *lz4hcEncoder) Reset() {}

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
	base := e.base
	idx := e.nextToUpdate
	target := base + int32(ip)
	if idx >= target {
		return
	}
	// Locals, so that the loop does not reload e's fields after each
	// store into its tables.
	src := e.src[:ip+3] // the last position read is ip-1, 4 bytes
	ht := &e.hashTable
	ct := &e.chainTable
	for p := int(idx - base); p < ip; p++ {
		h := lz4hcHash(load32(src, p))
		delta := idx - ht[h]
		if delta > lz4hcMaxDist {
			delta = lz4hcMaxDist
		}
		ct[uint16(idx)] = uint16(delta)
		ht[h] = idx
		idx++
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
	base := e.base
	ct := &e.chainTable
	patterns := e.patterns
	ipIdx := base + int32(ip)
	lookBack := ip - lowLimit
	lowest := max(base, ipIdx-lz4hcMaxDist)
	pattern := load32(src, ip)
	idx := e.hashTable[lz4hcHash(pattern)]
	repeat, srcPatternLen := repeatUntested, 0
	// The 2 bytes a longer match must also have at its end, from the
	// input's side: they change only with ml.
	tailOK := lowLimit+ml+1 <= len(src)
	var tail uint16
	if tailOK {
		tail = load16(src, lowLimit+ml-1)
	}
	for n := e.attempts; n > 0 && idx >= lowest; n-- {
		mp := int(idx - base)
		// Cheap test first: a longer match must also match at its end.
		// Positions at or after ip are in the chains when the parser
		// went back to an earlier match; they are no use.
		q := mp - lookBack + ml - 1
		if idx < ipIdx && (q < 0 || !tailOK || tail == load16(src, q)) {
			if load32(src, mp) == pattern {
				l, back := lz4hcMatchLen(src, mp, ip, min(lookBack, mp), highLimit)
				if l > ml {
					ml, start, ref = l, ip-back, mp-back
					if tailOK = lowLimit+ml+1 <= len(src); tailOK {
						tail = load16(src, lowLimit+ml-1)
					}
				}
			}
		}
		d := ct[uint16(idx)]
		if patterns && d == 1 {
			// A run of a repeated 1-, 2- or 4-byte pattern chains every
			// position to the one before: rather than walk the run, jump
			// to where the pattern is best matched (lz4hc's pattern
			// analysis, without its external-dictionary cases).
			if repeat == repeatUntested {
				repeat = repeatNot
				if pattern&0xFFFF == pattern>>16 && pattern&0xFF == pattern>>24 {
					repeat = repeatConfirmed
					srcPatternLen = lz4hcCountPattern(src, ip+4, highLimit, pattern) + 4
					e.far = max(e.far, ip+srcPatternLen+16)
				}
			}
			cand := idx - 1
			if repeat == repeatConfirmed && cand >= lowest && cand < ipIdx {
				cp := int(cand - base)
				if load32(src, cp) == pattern {
					fwd := lz4hcCountPattern(src, cp+4, highLimit, pattern) + 4
					e.far = max(e.far, cp+fwd+16)
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
								if ip-int(idx-base) > lz4hcMaxDist {
									break
								}
								ml, start, ref = maxML, ip, int(idx-base)
								if tailOK = lowLimit+ml+1 <= len(src); tailOK {
									tail = load16(src, lowLimit+ml-1)
								}
							}
							next := int32(ct[uint16(idx)])
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
	// What the search read: every candidate's match, its end found by
	// lz4Count (which reads a word past it), ends at most where the
	// longest does, or, if none beat longest, before ip+longest; the
	// end-of-match checks read before either. The pattern counts
	// noted theirs as they went.
	e.far = max(e.far, max(start+ml, ip+longest)+16)
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
		if x := load64(src, i) ^ p64; x != 0 {
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
	p64 := uint64(pattern) | uint64(pattern)<<32
	for i >= 8 && load64(src, i-8) == p64 {
		i -= 8
	}
	if i >= 4 {
		x := load32(src, i-4) ^ pattern
		if x != 0 {
			return start - i + bits.LeadingZeros32(x)>>3
		}
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
	if l := &e.last; l.ok && len(src) == l.srcLen && len(dst) <= l.dstLen && bytes.Equal(src[:len(l.read)], l.read) {
		// The last block's input again, into no more room: its
		// sequences, until the block is full.
		for _, q := range l.seqs {
			if !b.sequence(src, int(q.ip), int(q.ip-q.ref), int(q.ml)) {
				break
			}
		}
		c, n := b.finish(src)
		return c, n, nil
	}
	e.reset(src)
	e.far = 0
	l := &e.last
	l.ok = false
	l.seqs = l.seqs[:0]
	defer func() {
		e.src = nil
		l.srcLen, l.dstLen = len(src), len(dst)
		l.read = append(l.read[:0], src[:min(e.far, len(src))]...)
		l.ok = true
	}()

	mflimit := len(src) - lz4MFLimit // matches start at or before this
	matchLimit := len(src) - lz4LastLiterals

	// emit writes one sequence; false means the block is full.
	emit := func(ip, ml, ref int) bool {
		l.seqs = append(l.seqs, lz4hcSeq{int32(ip), int32(ml), int32(ref)})
		return b.sequence(src, ip, ip-ref, ml)
	}
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

// lz4CountBack returns how many bytes before src[a] and src[b] are
// equal, at most maxBack (a < b, maxBack <= a).
func lz4CountBack(src []byte, a, b, maxBack int) int {
	back := 0
	for back+8 <= maxBack {
		x := load64(src, a-back-8) ^ load64(src, b-back-8)
		if x != 0 {
			return back + bits.LeadingZeros64(x)>>3
		}
		back += 8
	}
	for back < maxBack && src[a-back-1] == src[b-back-1] {
		back++
	}
	return back
}

// lz4hcMatchLen returns the length of the match of src[ip:] with src[mp:]
// extended back by up to maxBack bytes, and how far back. Kept out of
// widerMatch's chain walk, which it would crowd out of registers.
//
//go:noinline
func lz4hcMatchLen(src []byte, mp, ip, maxBack, highLimit int) (l, back int) {
	back = lz4CountBack(src, mp, ip, maxBack)
	return lz4MinMatch + lz4Count(src, mp+lz4MinMatch, ip+lz4MinMatch, highLimit) + back, back
}
