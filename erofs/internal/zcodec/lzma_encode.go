package zcodec

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// The MicroLZMA encoder: a hash-chain match finder, liblzma's "fast"
// parser (rep matches first, one position of lookahead), and a range
// encoder that knows at every symbol how long the stream would be if
// flushed there, so it stops exactly when the pcluster is full: no prefix
// search, and the pcluster filled to its last byte.
//
// The stream is a raw LZMA1 stream without end marker, flushed with the
// usual five bytes (the decoder ends on the last byte with code 0), whose
// first byte, always 0x00 in LZMA1, is replaced by the bitwise NOT of the
// properties byte: MicroLZMA as liblzma's lzma_microlzma_encoder writes it.

const (
	// lzmaHashLog sizes the match finder's hash table.
	lzmaHashLog = 16
	// lzmaFar4 is the distance from which a 4-byte match costs more than
	// its four literals: 6 slot bits and 10 or more distance bits on top
	// of the length and flags. Passing them up measured about 1% smaller
	// streams.
	lzmaFar4 = 1 << 12
)

// lzmaEncProps are liblzma's defaults (lc=3, lp=0, pb=2), which
// mkfs.erofs's presets use too.
var lzmaEncProps = lzmaProps{lc: 3, lp: 0, pb: 2}

func newLZMAEncoder(level, maxInput int) (Encoder, error) {
	if level < 0 || level > LZMAMaxLevel {
		return nil, fmt.Errorf("%w: lzma level %d (0..%d)", ErrUnsupported, level, LZMAMaxLevel)
	}
	dict := MaxLZMADictSize
	if maxInput > 0 {
		dict = min(max(1<<bits.Len(uint(maxInput-1)), MinLZMADictSize), MaxLZMADictSize)
	}
	l := lzmaLevels[level]
	return &lzmaEncoder{dictSize: dict, depth: l.depth, nice: l.nice}, nil
}

// lzmaEncoder is the MicroLZMA destSize encoder.
type lzmaEncoder struct {
	dictSize, depth, nice int
	s                     lzmaEncState
	mf                    lzmaMatchFinder
}

// lzmaLevels maps a level to hash chain depth and nice length.
var lzmaLevels = [LZMAMaxLevel + 1]struct{ depth, nice int }{
	{4, 32}, {8, 32}, {12, 48}, {16, 64}, {24, 64}, {32, 96}, {48, 128}, {64, 192}, {128, 273}, {256, 273},
}

// Reset does nothing: every call starts from a fresh state.
func (e *lzmaEncoder) Reset() {}

func (e *lzmaEncoder) Algorithm() Algorithm { return LZMA }
func (e *lzmaEncoder) Params() Params       { return Params{LZMADictSize: uint32(e.dictSize)} }

func (e *lzmaEncoder) EncodeDestSize(dst, src []byte) (consumed, n int, err error) {
	// An LZMA symbol codes at most 273 bytes; more input than this can
	// never fit, and the match finder's positions stay in int32.
	src = src[:min(len(src), len(dst)*2*lzmaMatchLenMax+64, 1<<30)]
	if len(dst) <= lzmaRCInitBytes || len(src) == 0 {
		return 0, 0, nil
	}
	s := &e.s
	s.init(lzmaEncProps, s.rc.out)
	e.mf.reset(e.depth, e.dictSize)
	pos := 0
	for pos < len(src) {
		cp := s.checkpoint()
		adv := e.step(src, pos)
		if s.rc.flushedLen() > len(dst) {
			s.rollback(cp)
			break
		}
		pos += adv
	}
	if pos == 0 {
		return 0, 0, nil
	}
	s.rc.flush()
	out := s.rc.out
	if len(out) > len(dst) || out[0] != 0 {
		return 0, 0, fmt.Errorf("lzma: internal error: %d-byte stream for %d, first byte %#x", len(out), len(dst), out[0])
	}
	n = copy(dst, out)
	dst[0] = ^lzmaEncProps.byte()
	return pos, n, nil
}

// repLenAt is the length of the match with rep distance d at pos.
func repLenAt(src []byte, pos int, d uint32, limit int) int {
	if int(d) >= pos {
		return 0
	}
	return lz4Count(src, pos-int(d)-1, pos, limit)
}

// changePair reports whether a match at distance big is much further than
// one at small (liblzma's change_pair).
func changePair(small, big uint32) bool { return small < big>>7 }

// step encodes one symbol at pos, chosen as liblzma's fast mode
// (lzma_lzma_optimum_fast) does, and returns how many bytes it covers.
func (e *lzmaEncoder) step(src []byte, pos int) int {
	s := &e.s
	limit := pos + min(len(src)-pos, lzmaMatchLenMax)
	repLen, repIdx := 0, 0
	for r, d := range s.reps {
		if l := repLenAt(src, pos, d, limit); l > repLen {
			repLen, repIdx = l, r
		}
	}
	if repLen >= e.nice {
		s.rep(pos, repIdx, uint32(repLen))
		return repLen
	}
	mainLen, mainDist := e.mf.longest(src, pos, e.nice)
	if mainLen >= e.nice {
		s.match(pos, mainDist, uint32(mainLen))
		return mainLen
	}
	if repLen >= 2 && (repLen+1 >= mainLen ||
		repLen+2 >= mainLen && mainDist > 1<<9 ||
		repLen+3 >= mainLen && mainDist > 1<<15) {
		s.rep(pos, repIdx, uint32(repLen))
		return repLen
	}
	if mainLen == 4 && mainDist >= lzmaFar4 {
		mainLen = 0
	}
	if mainLen == 0 {
		if d := s.reps[0]; int(d) < pos && src[pos] == src[pos-int(d)-1] {
			s.rep(pos, 0, 1)
		} else {
			s.literalAt(src, pos)
		}
		return 1
	}
	// One position of lookahead: a literal now may buy a better match.
	if pos+1 < len(src) {
		nextLen, nextDist := e.mf.longest(src, pos+1, e.nice)
		if nextLen >= 4 && (nextLen >= mainLen && nextDist < mainDist ||
			nextLen == mainLen+1 && !changePair(mainDist, nextDist) ||
			nextLen > mainLen+1 ||
			nextLen+1 >= mainLen && changePair(nextDist, mainDist)) {
			s.literalAt(src, pos)
			return 1
		}
		nlimit := pos + 1 + min(len(src)-pos-1, lzmaMatchLenMax)
		want := max(mainLen-1, 2)
		for _, d := range s.reps {
			if repLenAt(src, pos+1, d, nlimit) >= want {
				s.literalAt(src, pos)
				return 1
			}
		}
	}
	s.match(pos, mainDist, uint32(mainLen))
	return mainLen
}

// lzmaMatchFinder is a hash chain over src.
type lzmaMatchFinder struct {
	head     []int32 // hash -> position+1
	prev     []int32 // position -> previous position+1 with the same hash
	next     int     // positions below next are inserted
	depth    int
	dictSize int
}

func (m *lzmaMatchFinder) reset(depth, dictSize int) {
	if m.head == nil {
		m.head = make([]int32, 1<<lzmaHashLog)
	} else {
		clear(m.head)
	}
	m.prev = m.prev[:0]
	m.next, m.depth, m.dictSize = 0, depth, dictSize
}

func lzmaHash4(src []byte, i int) uint32 {
	return binary.LittleEndian.Uint32(src[i:]) * 2654435761 >> (32 - lzmaHashLog)
}

// insertTo inserts positions below pos (those with 4 bytes after them).
func (m *lzmaMatchFinder) insertTo(src []byte, pos int) {
	for ; m.next < pos; m.next++ {
		if m.next+4 > len(src) {
			m.prev = append(m.prev, 0)
			continue
		}
		h := lzmaHash4(src, m.next)
		m.prev = append(m.prev, m.head[h])
		m.head[h] = int32(m.next + 1)
	}
}

// longest returns the longest match at pos (length >= 4, or 0) and its
// distance minus one.
func (m *lzmaMatchFinder) longest(src []byte, pos, nice int) (n int, dist uint32) {
	m.insertTo(src, pos)
	if pos+4 > len(src) {
		return 0, 0
	}
	limit := min(len(src)-pos, lzmaMatchLenMax)
	cand := int(m.head[lzmaHash4(src, pos)]) - 1
	// The lookahead may have inserted pos itself already.
	for cand >= pos {
		cand = int(m.prev[cand]) - 1
	}
	for d := m.depth; d > 0 && cand >= 0; d-- {
		if pos-cand > m.dictSize {
			break
		}
		if n < limit && src[cand+n] == src[pos+n] {
			l := lz4Count(src, cand, pos, pos+limit)
			if l > n {
				n, dist = l, uint32(pos-cand-1)
				if l >= nice {
					break
				}
			}
		}
		cand = int(m.prev[cand]) - 1
	}
	if n < 4 {
		return 0, 0
	}
	return n, dist
}
