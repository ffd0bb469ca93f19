package zcodec

import "encoding/binary"

// LZ4 block format limits (lz4_decompress.c, LZ4 block format spec).
const (
	lz4MinMatch     = 4  // MINMATCH
	lz4LastLiterals = 5  // LASTLITERALS: the last 5 bytes are literals
	lz4MFLimit      = 12 // MFLIMIT: the last match starts >= 12 bytes before the end
)

// lz4Decoder decodes raw LZ4 blocks the way the kernel's
// LZ4_decompress_safe does for a 0padding pcluster: the stream must be
// consumed exactly and produce exactly the extent length.
type lz4Decoder struct{}

func (lz4Decoder) Decode(dst, src []byte, zeroPadding bool) error {
	if zeroPadding {
		var err error
		if src, err = skipZeros(src); err != nil {
			return err
		}
		return lz4DecodeBlock(dst, src)
	}
	// Without 0padding (the legacy layout) the stream starts at byte 0
	// and the kernel decodes partially, stopping once dst is full;
	// whatever follows in the pcluster is ignored.
	return lz4DecodePartial(dst, src)
}

// lz4DecodeBlock decodes src into exactly len(dst) bytes, enforcing the
// end-of-block rules LZ4_decompress_safe enforces: a literal run that ends
// within MFLIMIT of the output end (or too close to the input end to be
// followed by a sequence) must be the last one and end the input exactly,
// and no match may end within LASTLITERALS of the output end.
func lz4DecodeBlock(dst, src []byte) error {
	if len(dst) == 0 {
		if len(src) == 1 && src[0] == 0 {
			return nil
		}
		return corruptf("lz4: stream for an empty extent")
	}
	oend, iend := len(dst), len(src)
	op, ip := 0, 0
	for {
		if ip >= iend {
			return corruptf("lz4: input ends before a token at %d", ip)
		}
		token := src[ip]
		ip++
		lit := int(token >> 4)
		if lit == 15 {
			// LZ4_decompress_safe wants room for at least one more byte
			// after the length bytes.
			if ip >= iend-15 {
				return corruptf("lz4: literal length runs past the input at %d", ip)
			}
			for {
				s := src[ip]
				ip++
				lit += int(s)
				if s != 255 || ip >= iend-15 {
					break
				}
			}
		}
		if lit > oend-op || lit > iend-ip {
			if lit > oend-op {
				return corruptf("lz4: literals overrun the output at %d", op)
			}
			return corruptf("lz4: literals overrun the input at %d", ip)
		}
		if op+lit > oend-lz4MFLimit || ip+lit > iend-(2+1+lz4LastLiterals) {
			// The last literal run: it must end both buffers exactly.
			if ip+lit != iend {
				return corruptf("lz4: %d input bytes after the last literals", iend-ip-lit)
			}
			copy(dst[op:], src[ip:iend])
			op += lit
			if op != oend {
				return corruptf("lz4: decoded %d bytes, want %d", op, oend)
			}
			return nil
		}
		if lit <= 16 && op+16 <= oend && ip+16 <= iend {
			// Short literals: two word copies beat a memmove call. The
			// bytes past op+lit are overwritten by what follows.
			binary.LittleEndian.PutUint64(dst[op:], binary.LittleEndian.Uint64(src[ip:]))
			binary.LittleEndian.PutUint64(dst[op+8:], binary.LittleEndian.Uint64(src[ip+8:]))
		} else {
			copy(dst[op:], src[ip:ip+lit])
		}
		op += lit
		ip += lit

		offset := int(binary.LittleEndian.Uint16(src[ip:]))
		ip += 2
		if offset == 0 || offset > op {
			return corruptf("lz4: match offset %d at output %d", offset, op)
		}
		mlen := int(token & 15)
		if mlen == 15 {
			for {
				if ip >= iend {
					return corruptf("lz4: match length runs past the input")
				}
				s := src[ip]
				ip++
				if ip > iend-lz4LastLiterals {
					return corruptf("lz4: match length runs past the input")
				}
				mlen += int(s)
				if s != 255 {
					break
				}
			}
		}
		mlen += lz4MinMatch
		if mlen > oend-lz4LastLiterals-op {
			return corruptf("lz4: match ends within the last %d bytes at %d", lz4LastLiterals, op)
		}
		lz4CopyMatch(dst, op, offset, mlen)
		op += mlen
	}
}

// lz4DecodePartial decodes src until dst is full, as
// LZ4_decompress_safe_partial does for the legacy layout: the stream may
// stop mid-sequence once the output is complete, and trailing input is
// ignored. It still reports a stream that cannot fill dst.
func lz4DecodePartial(dst, src []byte) error {
	oend, iend := len(dst), len(src)
	op, ip := 0, 0
	for op < oend {
		if ip >= iend {
			return corruptf("lz4: input ends at output %d of %d", op, oend)
		}
		token := src[ip]
		ip++
		lit := int(token >> 4)
		if lit == 15 {
			for {
				if ip >= iend {
					return corruptf("lz4: literal length runs past the input")
				}
				s := src[ip]
				ip++
				lit += int(s)
				if s != 255 {
					break
				}
			}
		}
		lit = min(lit, oend-op)
		if lit > iend-ip {
			return corruptf("lz4: literals overrun the input at %d", ip)
		}
		copy(dst[op:], src[ip:ip+lit])
		op += lit
		ip += lit
		if op == oend {
			return nil
		}
		if ip+2 > iend {
			return corruptf("lz4: input ends at output %d of %d", op, oend)
		}
		offset := int(binary.LittleEndian.Uint16(src[ip:]))
		ip += 2
		if offset == 0 || offset > op {
			return corruptf("lz4: match offset %d at output %d", offset, op)
		}
		mlen := int(token & 15)
		if mlen == 15 {
			for {
				if ip >= iend {
					return corruptf("lz4: match length runs past the input")
				}
				s := src[ip]
				ip++
				mlen += int(s)
				if s != 255 {
					break
				}
			}
		}
		mlen = min(mlen+lz4MinMatch, oend-op)
		lz4CopyMatch(dst, op, offset, mlen)
		op += mlen
	}
	return nil
}

// lz4CopyMatch copies mlen bytes from offset back to dst[op:], byte by
// byte semantics for overlapping matches (offset < mlen repeats the
// pattern).
func lz4CopyMatch(dst []byte, op, offset, mlen int) {
	from := op - offset
	if offset >= 8 && op+mlen+8 <= len(dst) {
		// Word copies: each reads 8 bytes that are all written already
		// (offset >= 8), and the last may spill up to 7 bytes past the
		// match, which what follows overwrites.
		for end := op + mlen; op < end; op, from = op+8, from+8 {
			binary.LittleEndian.PutUint64(dst[op:], binary.LittleEndian.Uint64(dst[from:]))
		}
		return
	}
	if offset >= mlen {
		copy(dst[op:op+mlen], dst[from:from+mlen])
		return
	}
	// Overlapping: doubling copies repeat the offset-byte pattern.
	end := op + mlen
	for op < end {
		n := copy(dst[op:end], dst[from:op])
		op += n
	}
}
