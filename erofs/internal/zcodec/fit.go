package zcodec

// Fixed-output compression for codecs whose libraries cannot stop at an
// output size (DEFLATE, Zstd, MicroLZMA through ulikunitz/xz): compress
// prefixes of the input and search for the longest one whose stream fits,
// as erofs-utils does for libzstd. The first guess and every guess after
// a fit are estimated from the compression ratio seen so far, so a
// typical call needs a handful of trials; maxFitTrials bounds the CPU
// spent on pathological inputs.

const maxFitTrials = 16

// prefixCompressor compresses src into a stream; the slice it returns may
// be reused by the next call.
type prefixCompressor func(src []byte) ([]byte, error)

// fitPrefix finds the longest prefix of src whose stream fits in dst and
// does not start with 0x00, copies that stream to dst, and returns the
// prefix length and the stream length. guess is the first prefix length
// to try.
func fitPrefix(dst, src []byte, guess int, compress prefixCompressor) (consumed, n int, err error) {
	lo, hi := 0, len(src)+1 // lo fits (0 trivially), hi does not
	m := guess
	for range maxFitTrials {
		m = min(max(m, lo+1), hi-1)
		if m <= lo {
			break
		}
		out, err := compress(src[:m])
		if err != nil {
			return 0, 0, err
		}
		if len(out) <= len(dst) && out[0] != 0 {
			lo = m
			n = copy(dst, out)
			if hi <= lo+1 || len(out)+1 >= len(dst) {
				break
			}
			// Extrapolate from this ratio, reaching a little beyond it
			// so that the next trial is more likely to overshoot than to
			// fall short again (a fit only raises lo by what it gains).
			m = int(int64(m) * int64(len(dst)) / int64(len(out)))
			m += m / 64
		} else {
			hi = m
			m = lo + (hi-lo)/2
			if n > 0 {
				// Interpolate between the last fit and this miss by size.
				m = lo + int(int64(hi-lo)*int64(len(dst)-n)/int64(max(len(out)-n, 1)))
			}
		}
	}
	return lo, n, nil
}
