package zcodec

import (
	"bytes"
	"fmt"
	"math/bits"

	"github.com/ulikunitz/xz/lzma"
)

// lzmaEncoder writes MicroLZMA streams by driving ulikunitz/xz's LZMA1
// encoder: it writes a classic .lzma file with the exact size in the
// header and no end marker, which is a 13-byte header followed by exactly
// the LZMA1 range-coder stream MicroLZMA wants (flushed with the usual
// five bytes, so the decoder ends with code 0 on the last byte). The
// header goes, and the stream's first byte, always 0x00 in LZMA1, becomes
// the bitwise NOT of the properties byte.
//
// The library cannot stop at an output size, so prefixFitter searches for the
// longest prefix that fits.
type lzmaEncoder struct {
	dictSize int
	matcher  lzma.MatchAlgorithm
	buf      bytes.Buffer
	fitter   prefixFitter
}

// lzmaHeaderLen is the size of a classic .lzma header: properties byte,
// 32-bit dictionary size, 64-bit uncompressed size.
const lzmaHeaderLen = 13

// lzmaEncProps are liblzma's defaults (lc=3, lp=0, pb=2), which
// mkfs.erofs's presets use too.
var lzmaEncProps = lzmaProps{lc: 3, lp: 0, pb: 2}

func newLZMAEncoder(level, maxInput int) (*lzmaEncoder, error) {
	if level < 0 || level > LZMAMaxLevel {
		return nil, fmt.Errorf("%w: lzma level %d (0..%d)", ErrUnsupported, level, LZMAMaxLevel)
	}
	dict := MaxLZMADictSize
	if maxInput > 0 {
		dict = min(max(1<<bits.Len(uint(maxInput-1)), MinLZMADictSize), MaxLZMADictSize)
	}
	// The library's other match finder, its binary tree, degenerates on
	// long runs (minutes for 256 KiB of zeros), so every level uses the
	// hash table and level only selects the dictionary.
	return &lzmaEncoder{dictSize: dict, matcher: lzma.HashTable4}, nil
}

func (e *lzmaEncoder) Algorithm() Algorithm { return LZMA }
func (e *lzmaEncoder) Params() Params       { return Params{LZMADictSize: uint32(e.dictSize)} }

func (e *lzmaEncoder) EncodeDestSize(dst, src []byte) (consumed, n int, err error) {
	if len(dst) == 0 || len(src) == 0 {
		return 0, 0, nil
	}
	return e.fitter.fit(dst, src, e.compress)
}

func (e *lzmaEncoder) compress(src []byte) ([]byte, error) {
	e.buf.Reset()
	cfg := lzma.WriterConfig{
		Properties: &lzma.Properties{LC: int(lzmaEncProps.lc), LP: int(lzmaEncProps.lp), PB: int(lzmaEncProps.pb)},
		// The dictionary never needs to reach beyond the input.
		DictCap:      min(e.dictSize, max(len(src), lzma.MinDictCap)),
		Matcher:      e.matcher,
		SizeInHeader: true,
		Size:         int64(len(src)),
		EOSMarker:    false,
	}
	w, err := cfg.NewWriter(&e.buf)
	if err != nil {
		return nil, fmt.Errorf("lzma: %w", err)
	}
	if _, err := w.Write(src); err != nil {
		return nil, fmt.Errorf("lzma: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("lzma: %w", err)
	}
	out := e.buf.Bytes()
	if len(out) <= lzmaHeaderLen || out[lzmaHeaderLen] != 0 {
		return nil, fmt.Errorf("lzma: unexpected LZMA1 stream from the library")
	}
	out = out[lzmaHeaderLen:]
	out[0] = ^lzmaEncProps.byte()
	return out, nil
}
