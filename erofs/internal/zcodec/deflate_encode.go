package zcodec

import (
	"bytes"
	"fmt"

	"github.com/klauspost/compress/flate"
)

// deflateEncoder writes raw DEFLATE streams with klauspost/compress/flate.
type deflateEncoder struct {
	level  int
	w      *flate.Writer
	buf    bytes.Buffer
	fitter prefixFitter
}

func newDeflateEncoder(level int) (*deflateEncoder, error) {
	if level < 1 {
		// Level 0 only writes stored blocks, and a non-final stored
		// block starts with a 0x00 byte, which 0padding cannot hold.
		return nil, fmt.Errorf("%w: deflate level %d (1..%d)", ErrUnsupported, level, DeflateMaxLevel)
	}
	w, err := flate.NewWriter(nil, level)
	if err != nil {
		return nil, fmt.Errorf("deflate encoder: %w", err)
	}
	return &deflateEncoder{level: level, w: w}, nil
}

func (e *deflateEncoder) Algorithm() Algorithm { return Deflate }

// Params: flate's window is DEFLATE's full 32 KiB.
func (e *deflateEncoder) Params() Params { return Params{DeflateWindowBits: MaxDeflateWindowBits} }

// Reset forgets the last call's compression ratio.
func (e *deflateEncoder) Reset() { e.fitter = prefixFitter{} }

func (e *deflateEncoder) EncodeDestSize(dst, src []byte) (consumed, n int, err error) {
	if len(dst) == 0 || len(src) == 0 {
		return 0, 0, nil
	}
	return e.fitter.fit(dst, src, e.compress)
}

func (e *deflateEncoder) compress(src []byte) ([]byte, error) {
	e.buf.Reset()
	e.w.Reset(&e.buf)
	if _, err := e.w.Write(src); err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}
	if err := e.w.Close(); err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}
	return e.buf.Bytes(), nil
}
