package zcodec

import "sync"

// A MicroLZMA decoder with the kernel's checks (lib/xz/xz_dec_lzma2.c,
// xz_dec_microlzma_run with uncomp_size_is_exact): MicroLZMA is a raw LZMA1
// stream without header or end marker whose first byte, always 0x00 in
// LZMA1 (the range coder's cache byte), carries the bitwise NOT of the
// properties byte. The compressed and decoded sizes are known exactly: the
// stream must decode to exactly len(dst) bytes, consume exactly all input
// bytes, leave no match pending, and finish with the range decoder's code
// at zero (what a range encoder flush produces).
//
// It is written here rather than driven through a library so that these
// end-of-stream checks and the dictionary-distance check match the kernel
// exactly, and so that it decodes straight into dst without a dictionary
// buffer of its own.

const (
	lzmaStates          = 12
	lzmaPosStatesMax    = 1 << 4
	lzmaLenStates       = 4 // distance slots are coded per length (2, 3, 4, 5+)
	lzmaDistSlots       = 64
	lzmaDistModelStart  = 4
	lzmaDistModelEnd    = 14
	lzmaFullDistances   = 1 << (lzmaDistModelEnd >> 1)
	lzmaAlignBits       = 4
	lzmaMatchLenMin     = 2
	lzmaLenLowBits      = 3
	lzmaLenMidBits      = 3
	lzmaLenHighBits     = 8
	lzmaLiteralCoderLen = 0x300
	lzmaRCInitBytes     = 5

	probBits    = 11
	probInit    = 1 << (probBits - 1)
	probMoveBit = 5
	rcTopValue  = 1 << 24
)

// lzmaProps are the lc/lp/pb properties of an LZMA1 stream.
type lzmaProps struct{ lc, lp, pb uint }

// parseLZMAProps decodes a properties byte, refusing what the kernel's
// lzma_props refuses (LZMA2's lc+lp <= 4 limit applies to MicroLZMA too).
func parseLZMAProps(b byte) (lzmaProps, bool) {
	if b > (4*5+4)*9+8 {
		return lzmaProps{}, false
	}
	p := lzmaProps{pb: uint(b) / 45, lp: uint(b) % 45 / 9, lc: uint(b) % 9}
	return p, p.lc+p.lp <= 4
}

// byte returns the properties byte of p.
func (p lzmaProps) byte() byte { return byte((p.pb*5+p.lp)*9 + p.lc) }

// lzmaDecoder decodes MicroLZMA streams with a dictionary of dictSize bytes.
type lzmaDecoder struct {
	dictSize int
	// states recycles decoding states: about 30 KiB of probabilities
	// each, worth keeping away from the garbage collector.
	states *sync.Pool
}

func newLZMADecoder(dictSize int) lzmaDecoder {
	return lzmaDecoder{dictSize: dictSize, states: &sync.Pool{New: func() any { return new(lzmaState) }}}
}

func (d lzmaDecoder) Decode(dst, src []byte, _ bool) error {
	// LZMA pclusters are always zero-padded in front.
	src, err := skipZeros(src)
	if err != nil {
		return err
	}
	if len(src) < lzmaRCInitBytes {
		return corruptf("lzma: %d-byte stream", len(src))
	}
	props, ok := parseLZMAProps(^src[0])
	if !ok {
		return corruptf("lzma: properties byte %#x", ^src[0])
	}
	s := d.states.Get().(*lzmaState)
	defer func() {
		s.rc.in, s.out = nil, nil
		d.states.Put(s)
	}()
	s.init(props, src, dst, d.dictSize)
	return s.run()
}

// rangeDecoder is the LZMA range decoder over an exactly sized input.
type rangeDecoder struct {
	in      []byte
	pos     int
	rng     uint32
	code    uint32
	overrun bool // a byte past the end was needed
}

func (rc *rangeDecoder) init(in []byte) {
	// The first byte (the properties byte in MicroLZMA) shifts out of
	// the 32-bit code, as in rc_read_init.
	rc.in, rc.pos, rc.rng, rc.code, rc.overrun = in, lzmaRCInitBytes, 0xFFFFFFFF, 0, false
	for _, b := range in[1:lzmaRCInitBytes] {
		rc.code = rc.code<<8 | uint32(b)
	}
}

func (rc *rangeDecoder) normalize() {
	if rc.rng < rcTopValue {
		rc.shift()
	}
}

// shift takes in the next input byte; kept out of line so that bit
// stays small enough to be inlined.
func (rc *rangeDecoder) shift() {
	rc.rng <<= 8
	var b byte
	if rc.pos < len(rc.in) {
		b = rc.in[rc.pos]
	} else {
		rc.overrun = true
	}
	rc.pos++
	rc.code = rc.code<<8 | uint32(b)
}

// bit decodes one bit with the adaptive probability *p.
func (rc *rangeDecoder) bit(p *uint16) uint32 {
	if rc.rng < rcTopValue {
		rc.shift()
	}
	prob := uint32(*p)
	bound := (rc.rng >> probBits) * prob
	if rc.code < bound {
		rc.rng = bound
		*p = uint16(prob + (1<<probBits-prob)>>probMoveBit)
		return 0
	}
	rc.rng -= bound
	rc.code -= bound
	*p = uint16(prob - prob>>probMoveBit)
	return 1
}

// bitTree decodes an n-bit symbol MSB first with probs[1:1<<n].
func (rc *rangeDecoder) bitTree(probs []uint16, n uint) uint32 {
	m := uint32(1)
	for range n {
		m = m<<1 | rc.bit(&probs[m])
	}
	return m - 1<<n
}

// bitTreeReverse decodes an n-bit symbol LSB first with probs[1:1<<n].
func (rc *rangeDecoder) bitTreeReverse(probs []uint16, n uint) uint32 {
	m, sym := uint32(1), uint32(0)
	for i := range n {
		b := rc.bit(&probs[m])
		m = m<<1 | b
		sym |= b << i
	}
	return sym
}

// direct decodes n bits with fixed probability one half.
func (rc *rangeDecoder) direct(n uint) uint32 {
	var v uint32
	for range n {
		rc.normalize()
		rc.rng >>= 1
		rc.code -= rc.rng
		// The subtraction wrapped (code < rng): a zero bit, undo it.
		mask := uint32(0) - rc.code>>31
		rc.code += rc.rng & mask
		v = v<<1 + mask + 1
	}
	return v
}

// lenDecoder decodes match lengths (minus lzmaMatchLenMin).
type lenDecoder struct {
	choice, choice2 uint16
	low             [lzmaPosStatesMax][1 << lzmaLenLowBits]uint16
	mid             [lzmaPosStatesMax][1 << lzmaLenMidBits]uint16
	high            [1 << lzmaLenHighBits]uint16
}

func (l *lenDecoder) reset() {
	l.choice, l.choice2 = probInit, probInit
	fill(l.low[:])
	fill(l.mid[:])
	fillProbs(l.high[:])
}

func (l *lenDecoder) decode(rc *rangeDecoder, posState uint32) uint32 {
	if rc.bit(&l.choice) == 0 {
		return rc.bitTree(l.low[posState][:], lzmaLenLowBits)
	}
	if rc.bit(&l.choice2) == 0 {
		return 1<<lzmaLenLowBits + rc.bitTree(l.mid[posState][:], lzmaLenMidBits)
	}
	return 1<<lzmaLenLowBits + 1<<lzmaLenMidBits + rc.bitTree(l.high[:], lzmaLenHighBits)
}

func fill[T ~[8]uint16](a []T) {
	for i := range a {
		fillProbs(a[i][:])
	}
}

func fillProbs(p []uint16) {
	for i := range p {
		p[i] = probInit
	}
}

// lzmaState is one stream's decoding state.
type lzmaState struct {
	rc       rangeDecoder
	out      []byte
	pos      int
	dictSize int
	props    lzmaProps
	state    uint32
	reps     [4]uint32

	lzmaProbs
}

// lzmaProbs is the adaptive probability model, the same for the encoder
// and the decoder.
type lzmaProbs struct {
	isMatch    [lzmaStates][lzmaPosStatesMax]uint16
	isRep      [lzmaStates]uint16
	isRepG0    [lzmaStates]uint16
	isRepG1    [lzmaStates]uint16
	isRepG2    [lzmaStates]uint16
	isRep0Long [lzmaStates][lzmaPosStatesMax]uint16
	distSlot   [lzmaLenStates][lzmaDistSlots]uint16
	distSpec   [lzmaFullDistances - lzmaDistModelEnd + 1]uint16 // [0] unused: trees index from 1
	align      [1 << lzmaAlignBits]uint16
	matchLen   lenDecoder
	repLen     lenDecoder
	literal    []uint16
}

// reset sets every probability to one half, with literal coders for p.
func (s *lzmaProbs) reset(p lzmaProps) {
	for i := range s.isMatch {
		fillProbs(s.isMatch[i][:])
		fillProbs(s.isRep0Long[i][:])
	}
	fillProbs(s.isRep[:])
	fillProbs(s.isRepG0[:])
	fillProbs(s.isRepG1[:])
	fillProbs(s.isRepG2[:])
	for i := range s.distSlot {
		fillProbs(s.distSlot[i][:])
	}
	fillProbs(s.distSpec[:])
	fillProbs(s.align[:])
	s.matchLen.reset()
	s.repLen.reset()
	n := lzmaLiteralCoderLen << (p.lc + p.lp)
	if cap(s.literal) < n {
		s.literal = make([]uint16, n)
	}
	s.literal = s.literal[:n]
	fillProbs(s.literal)
}

func (s *lzmaState) init(p lzmaProps, src, dst []byte, dictSize int) {
	s.rc.init(src)
	s.out, s.pos, s.dictSize, s.props = dst, 0, dictSize, p
	s.state, s.reps = 0, [4]uint32{}
	s.lzmaProbs.reset(p)
}

// run decodes the whole stream and applies the kernel's end checks.
func (s *lzmaState) run() error {
	pbMask := uint32(1)<<s.props.pb - 1
	for s.pos < len(s.out) {
		posState := uint32(s.pos) & pbMask
		if s.rc.bit(&s.isMatch[s.state][posState]) == 0 {
			s.decodeLiteral()
		} else {
			var n uint32
			if s.rc.bit(&s.isRep[s.state]) != 0 {
				n = s.decodeRep(posState)
			} else {
				n = s.decodeMatch(posState)
			}
			if err := s.repeat(n); err != nil {
				return err
			}
		}
		if s.rc.overrun {
			return corruptf("lzma: stream ends early (%d of %d bytes decoded)", s.pos, len(s.out))
		}
	}
	s.rc.normalize()
	switch {
	case s.rc.overrun:
		return corruptf("lzma: stream ends early")
	case s.rc.pos != len(s.rc.in):
		return corruptf("lzma: %d bytes left after the stream", len(s.rc.in)-s.rc.pos)
	case s.rc.code != 0:
		return corruptf("lzma: range decoder not finished")
	}
	return nil
}

func (s *lzmaState) decodeLiteral() {
	var prev uint32
	if s.pos > 0 {
		prev = uint32(s.out[s.pos-1])
	}
	lc, lp := s.props.lc, s.props.lp
	idx := ((uint32(s.pos)&(1<<lp-1))<<lc + prev>>(8-lc)) * lzmaLiteralCoderLen
	probs := s.literal[idx : idx+lzmaLiteralCoderLen]
	sym := uint32(1)
	if s.state >= 7 && int(s.reps[0]) < s.pos {
		// After a match the literal is coded relative to the byte at
		// rep0 ("matched literal"). rep0 < pos holds after any match the
		// decoder accepted.
		match := uint32(s.out[s.pos-int(s.reps[0])-1])
		offset := uint32(0x100)
		for sym < 0x100 {
			match <<= 1
			matchBit := match & offset
			b := s.rc.bit(&probs[offset+matchBit+sym])
			sym = sym<<1 | b
			if b != 0 {
				offset &= matchBit
			} else {
				offset &= ^matchBit
			}
		}
	} else {
		for sym < 0x100 {
			sym = sym<<1 | s.rc.bit(&probs[sym])
		}
	}
	s.out[s.pos] = byte(sym)
	s.pos++
	switch {
	case s.state < 4:
		s.state = 0
	case s.state < 10:
		s.state -= 3
	default:
		s.state -= 6
	}
}

// decodeMatch decodes a new match; it returns the match length.
func (s *lzmaState) decodeMatch(posState uint32) uint32 {
	if s.state < 7 {
		s.state = 7
	} else {
		s.state = 10
	}
	s.reps[3], s.reps[2], s.reps[1] = s.reps[2], s.reps[1], s.reps[0]
	n := s.matchLen.decode(&s.rc, posState)
	lenState := min(n, lzmaLenStates-1)
	slot := s.rc.bitTree(s.distSlot[lenState][:], 6)
	if slot < lzmaDistModelStart {
		s.reps[0] = slot
	} else {
		bits := uint(slot>>1) - 1
		dist := (2 | slot&1) << bits
		if slot < lzmaDistModelEnd {
			// Each slot's reverse tree starts right after the previous
			// slot's (distSpec[dist-slot+1:], tree nodes index from 1).
			dist += s.rc.bitTreeReverse(s.distSpec[dist-slot:], bits)
		} else {
			dist += s.rc.direct(bits-lzmaAlignBits) << lzmaAlignBits
			dist += s.rc.bitTreeReverse(s.align[:], lzmaAlignBits)
		}
		s.reps[0] = dist
	}
	return n + lzmaMatchLenMin
}

// decodeRep decodes a repeated match; it returns its length (1 for a
// short rep, one byte at rep0).
func (s *lzmaState) decodeRep(posState uint32) uint32 {
	if s.rc.bit(&s.isRepG0[s.state]) == 0 {
		if s.rc.bit(&s.isRep0Long[s.state][posState]) == 0 {
			if s.state < 7 {
				s.state = 9
			} else {
				s.state = 11
			}
			return 1
		}
	} else {
		var dist uint32
		if s.rc.bit(&s.isRepG1[s.state]) == 0 {
			dist = s.reps[1]
		} else {
			if s.rc.bit(&s.isRepG2[s.state]) == 0 {
				dist = s.reps[2]
			} else {
				dist = s.reps[3]
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
	return s.repLen.decode(&s.rc, posState) + lzmaMatchLenMin
}

// repeat copies n bytes from distance rep0+1, refusing what dict_repeat
// refuses: a distance beyond the data decoded so far or the dictionary,
// and (with the exact size known) a match running past the end.
func (s *lzmaState) repeat(n uint32) error {
	dist := int(s.reps[0])
	if s.reps[0] >= uint32(s.pos) || dist >= s.dictSize {
		return corruptf("lzma: match distance %d at %d (dictionary %d)", uint64(s.reps[0])+1, s.pos, s.dictSize)
	}
	if int(n) > len(s.out)-s.pos {
		return corruptf("lzma: match runs %d bytes past the end", int(n)-(len(s.out)-s.pos))
	}
	lz4CopyMatch(s.out, s.pos, dist+1, int(n))
	s.pos += int(n)
	return nil
}
