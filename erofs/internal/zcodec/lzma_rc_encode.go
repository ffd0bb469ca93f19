package zcodec

import "math/bits"

// The LZMA range encoder and symbol coding, mirroring the decoder in
// lzma_decode.go bit for bit. Every probability it changes is logged, so
// that a symbol that would overflow the pcluster can be taken back
// (checkpoint, rollback).

// lzmaMatchLenMax is the longest match a symbol codes.
const lzmaMatchLenMax = lzmaMatchLenMin + 1<<lzmaLenLowBits + 1<<lzmaLenMidBits + 1<<lzmaLenHighBits - 1 // 273

// rangeEncoder is LZMA's range encoder writing to out.
type rangeEncoder struct {
	low       uint64
	rng       uint32
	cache     byte
	cacheSize int
	out       []byte
}

func (rc *rangeEncoder) reset(out []byte) {
	*rc = rangeEncoder{rng: 0xFFFFFFFF, cacheSize: 1, out: out[:0]}
}

func (rc *rangeEncoder) shiftLow() {
	if uint32(rc.low) < 0xFF000000 || rc.low>>32 != 0 {
		carry := byte(rc.low >> 32)
		b := rc.cache
		for {
			rc.out = append(rc.out, b+carry)
			b = 0xFF
			rc.cacheSize--
			if rc.cacheSize == 0 {
				break
			}
		}
		rc.cache = byte(uint32(rc.low) >> 24)
	}
	rc.cacheSize++
	rc.low = uint64(uint32(rc.low) << 8)
}

// flushedLen is the stream length if it were flushed now.
func (rc *rangeEncoder) flushedLen() int { return len(rc.out) + rc.cacheSize + 4 }

func (rc *rangeEncoder) flush() {
	for range 5 {
		rc.shiftLow()
	}
}

// lzmaEncState is the encoder: its range coder and state around the
// probability model it shares with the decoder.
type lzmaEncState struct {
	rc    rangeEncoder
	props lzmaProps
	state uint32
	reps  [4]uint32
	// undo records every probability changed since the last checkpoint,
	// so a symbol that overflows the pcluster can be taken back.
	undo []probUndo

	lzmaProbs
}

type probUndo struct {
	p   *uint16
	old uint16
}

func (s *lzmaEncState) bit(p *uint16, b uint32) {
	s.undo = append(s.undo, probUndo{p, *p})
	rc := &s.rc
	bound := (rc.rng >> probBits) * uint32(*p)
	if b == 0 {
		rc.rng = bound
		*p += (1<<probBits - *p) >> probMoveBit
	} else {
		rc.low += uint64(bound)
		rc.rng -= bound
		*p -= *p >> probMoveBit
	}
	if rc.rng < rcTopValue {
		rc.rng <<= 8
		rc.shiftLow()
	}
}

func (s *lzmaEncState) direct(v uint32, n uint) {
	rc := &s.rc
	for i := int(n) - 1; i >= 0; i-- {
		rc.rng >>= 1
		if v>>uint(i)&1 != 0 {
			rc.low += uint64(rc.rng)
		}
		if rc.rng < rcTopValue {
			rc.rng <<= 8
			rc.shiftLow()
		}
	}
}

func (s *lzmaEncState) bitTree(probs []uint16, n uint, sym uint32) {
	m := uint32(1)
	for i := int(n) - 1; i >= 0; i-- {
		b := sym >> uint(i) & 1
		s.bit(&probs[m], b)
		m = m<<1 | b
	}
}

func (s *lzmaEncState) bitTreeReverse(probs []uint16, n uint, sym uint32) {
	m := uint32(1)
	for range n {
		b := sym & 1
		sym >>= 1
		s.bit(&probs[m], b)
		m = m<<1 | b
	}
}

func (s *lzmaEncState) length(l *lenDecoder, n, posState uint32) {
	n -= lzmaMatchLenMin
	switch {
	case n < 1<<lzmaLenLowBits:
		s.bit(&l.choice, 0)
		s.bitTree(l.low[posState][:], lzmaLenLowBits, n)
	case n < 1<<lzmaLenLowBits+1<<lzmaLenMidBits:
		s.bit(&l.choice, 1)
		s.bit(&l.choice2, 0)
		s.bitTree(l.mid[posState][:], lzmaLenMidBits, n-1<<lzmaLenLowBits)
	default:
		s.bit(&l.choice, 1)
		s.bit(&l.choice2, 1)
		s.bitTree(l.high[:], lzmaLenHighBits, n-1<<lzmaLenLowBits-1<<lzmaLenMidBits)
	}
}

func (s *lzmaEncState) init(p lzmaProps, out []byte) {
	s.rc.reset(out)
	s.props, s.state, s.reps, s.undo = p, 0, [4]uint32{}, s.undo[:0]
	s.lzmaProbs.reset(p)
}

// literal encodes src[pos].
func (s *lzmaEncState) literalAt(src []byte, pos int) {
	posState := uint32(pos) & (1<<s.props.pb - 1)
	s.bit(&s.isMatch[s.state][posState], 0)
	var prev uint32
	if pos > 0 {
		prev = uint32(src[pos-1])
	}
	lc, lp := s.props.lc, s.props.lp
	idx := ((uint32(pos)&(1<<lp-1))<<lc + prev>>(8-lc)) * lzmaLiteralCoderLen
	probs := s.literal[idx : idx+lzmaLiteralCoderLen]
	b := uint32(src[pos])
	if s.state >= 7 {
		match := uint32(src[pos-int(s.reps[0])-1])
		sym, offset := uint32(1), uint32(0x100)
		for i := 7; i >= 0; i-- {
			match <<= 1
			matchBit := match & offset
			bit := b >> uint(i) & 1
			s.bit(&probs[offset+matchBit+sym], bit)
			sym = sym<<1 | bit
			if bit != 0 {
				offset &= matchBit
			} else {
				offset &= ^matchBit
			}
		}
	} else {
		s.bitTree(probs, 8, b)
	}
	switch {
	case s.state < 4:
		s.state = 0
	case s.state < 10:
		s.state -= 3
	default:
		s.state -= 6
	}
}

// match encodes a match of length n at distance dist+1.
func (s *lzmaEncState) match(pos int, dist, n uint32) {
	posState := uint32(pos) & (1<<s.props.pb - 1)
	s.bit(&s.isMatch[s.state][posState], 1)
	s.bit(&s.isRep[s.state], 0)
	if s.state < 7 {
		s.state = 7
	} else {
		s.state = 10
	}
	s.reps[3], s.reps[2], s.reps[1], s.reps[0] = s.reps[2], s.reps[1], s.reps[0], dist
	s.length(&s.matchLen, n, posState)
	lenState := min(n-lzmaMatchLenMin, lzmaLenStates-1)
	var slot uint32
	if dist < lzmaDistModelStart {
		slot = dist
	} else {
		k := uint32(bits.Len32(dist)) - 1
		slot = 2*k + (dist>>(k-1))&1
	}
	s.bitTree(s.distSlot[lenState][:], 6, slot)
	if slot >= lzmaDistModelStart {
		footer := uint(slot>>1) - 1
		base := (2 | slot&1) << footer
		reduced := dist - base
		if slot < lzmaDistModelEnd {
			s.bitTreeReverse(s.distSpec[base-slot:], footer, reduced)
		} else {
			s.direct(reduced>>lzmaAlignBits, footer-lzmaAlignBits)
			s.bitTreeReverse(s.align[:], lzmaAlignBits, reduced&(1<<lzmaAlignBits-1))
		}
	}
}

// rep encodes a match of length n (1: a short rep) with reps[r].
func (s *lzmaEncState) rep(pos int, r int, n uint32) {
	posState := uint32(pos) & (1<<s.props.pb - 1)
	s.bit(&s.isMatch[s.state][posState], 1)
	s.bit(&s.isRep[s.state], 1)
	if r == 0 {
		s.bit(&s.isRepG0[s.state], 0)
		if n == 1 {
			s.bit(&s.isRep0Long[s.state][posState], 0)
			if s.state < 7 {
				s.state = 9
			} else {
				s.state = 11
			}
			return
		}
		s.bit(&s.isRep0Long[s.state][posState], 1)
	} else {
		s.bit(&s.isRepG0[s.state], 1)
		dist := s.reps[r]
		if r == 1 {
			s.bit(&s.isRepG1[s.state], 0)
		} else {
			s.bit(&s.isRepG1[s.state], 1)
			s.bit(&s.isRepG2[s.state], uint32(r-2))
			if r == 3 {
				s.reps[3] = s.reps[2]
			}
			s.reps[2] = s.reps[1]
		}
		s.reps[1] = s.reps[0]
		s.reps[0] = dist
	}
	if s.state < 7 {
		s.state = 8
	} else {
		s.state = 11
	}
	s.length(&s.repLen, n, posState)
}

// lzmaCheckpoint is what undoing a symbol restores besides probabilities.
type lzmaCheckpoint struct {
	low       uint64
	rng       uint32
	cache     byte
	cacheSize int
	outLen    int
	state     uint32
	reps      [4]uint32
}

func (s *lzmaEncState) checkpoint() lzmaCheckpoint {
	s.undo = s.undo[:0]
	return lzmaCheckpoint{s.rc.low, s.rc.rng, s.rc.cache, s.rc.cacheSize, len(s.rc.out), s.state, s.reps}
}

func (s *lzmaEncState) rollback(c lzmaCheckpoint) {
	for i := len(s.undo) - 1; i >= 0; i-- {
		*s.undo[i].p = s.undo[i].old
	}
	s.undo = s.undo[:0]
	s.rc.low, s.rc.rng, s.rc.cache, s.rc.cacheSize = c.low, c.rng, c.cache, c.cacheSize
	s.rc.out = s.rc.out[:c.outLen]
	s.state, s.reps = c.state, c.reps
}
