package zcodec

// Fixed-output compression for codecs whose libraries cannot stop at an
// output size (DEFLATE and Zstd through klauspost/compress): compress
// prefixes of the input and search for the longest one whose stream fits,
// as erofs-utils does for libzstd. Guesses are extrapolated from the
// compression ratio seen so far (the previous call's to start with, as
// neighbouring pclusters of a file compress alike), so a typical call
// needs a few trials; maxFitTrials bounds the CPU spent on pathological
// inputs.

const maxFitTrials = 12

// prefixCompressor compresses src into a stream; the slice it returns may
// be reused by the next call.
type prefixCompressor func(src []byte) ([]byte, error)

// prefixFitter remembers the last ratio between input and stream.
type prefixFitter struct {
	ratio float64 // consumed/stream of the last fit; 0 before any
}

// fit finds the longest prefix of src whose stream fits in dst and does
// not start with 0x00, copies that stream to dst, and returns the prefix
// length and the stream length.
func (f *prefixFitter) fit(dst, src []byte, compress prefixCompressor) (consumed, n int, err error) {
	ratio := f.ratio
	if ratio == 0 {
		ratio = 3
	}
	// Streams fill dst to within this many bytes, or the search goes on.
	slack := len(dst) / 1024
	lo, hi := 0, len(src)+1 // lo fits (0 trivially), hi does not
	m := int(float64(len(dst)) * ratio)
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
			if hi <= lo+1 || len(out)+slack >= len(dst) {
				break
			}
			// Extrapolate from this ratio, reaching a little beyond it:
			// the stream grows less than linearly with a longer prefix
			// (more history to match), and an overshoot bounds the
			// search from above.
			m = lo + int(float64(len(dst)-len(out))*float64(m)/float64(len(out))*1.02) + 1
		} else {
			hi = m
			if n > 0 {
				// Interpolate between the last fit and this miss by size.
				m = lo + int(int64(hi-lo)*int64(len(dst)-n)/int64(max(len(out)-n, 1)))
			} else {
				m = lo + (hi-lo)/2
			}
		}
	}
	if lo > 0 {
		f.ratio = float64(lo) / float64(n)
	}
	return lo, n, nil
}
