package zcodec

import "fmt"

// Decoder decodes pclusters. Safe for concurrent use.
type Decoder interface {
	// Decode decodes one pcluster's stream into exactly len(dst) bytes.
	// src is the pcluster's stored bytes; with zeroPadding the stream
	// starts at the first non-zero byte (leading zeros skipped, as the
	// kernel does; LZMA, DEFLATE and Zstd always use that layout). A
	// stream that decodes to fewer bytes, ends early, overruns, or is
	// corrupt returns an error wrapping ErrCorrupt. Never panics.
	//
	// The kernel only looks for the stream's first byte in the
	// pcluster's first block (z_erofs_fixup_insize): a writer must not
	// put a whole block or more of zeros in front of a stream, which this
	// decoder, not knowing the block size, does not check.
	//
	// Decode is deliberately stricter than the kernel on damaged
	// streams, which can only come from a damaged or hostile image: the
	// kernel zero-fills the rest of an extent whose DEFLATE stream ends
	// short and truncates one that decodes long, and its partial LZ4
	// decoding accepts bytes after the last literals or a match ending in
	// the last five bytes, and a match offset of 0 (copying stale
	// memory). Each of those is an error here, so Check reports an image
	// the kernel would read with made-up bytes.
	Decode(dst, src []byte, zeroPadding bool) error
}

// NewDecoder returns a decoder for alg with the superblock's params.
func NewDecoder(alg Algorithm, p Params) (Decoder, error) {
	if err := p.validate(alg); err != nil {
		return nil, err
	}
	switch alg {
	case LZ4:
		return lz4Decoder{}, nil
	case LZMA:
		return newLZMADecoder(p.lzmaDict()), nil
	case Deflate:
		return newDeflateDecoder(), nil
	case Zstd:
		return newZstdDecoder(p.zstdWindowLog())
	}
	return nil, fmt.Errorf("%w: algorithm %d", ErrUnsupported, alg)
}

// skipZeros returns src from its first non-zero byte: with 0padding the
// stream sits at the end of the pcluster behind zero bytes
// (z_erofs_fixup_insize). An all-zero src holds no stream.
func skipZeros(src []byte) ([]byte, error) {
	for i, b := range src {
		if b != 0 {
			return src[i:], nil
		}
	}
	return nil, fmt.Errorf("%w: pcluster holds only zeros", ErrCorrupt)
}

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}
