package zcodec

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// deflateDecoder inflates raw DEFLATE streams (the kernel's
// zlib_inflateInit2(-MAX_WBITS): no zlib header, and always a 32 KiB
// window whatever the config record says, which DEFLATE's own distance
// limit makes the most any stream can use).
type deflateDecoder struct {
	// readers recycles inflaters: each holds a 32 KiB window and Huffman
	// tables that are worth reusing across pclusters.
	readers *sync.Pool
}

func newDeflateDecoder() deflateDecoder {
	return deflateDecoder{readers: &sync.Pool{}}
}

// deflateReader is a pooled inflater with its input reader.
type deflateReader struct {
	in bytes.Reader
	fr io.ReadCloser
}

func (d deflateDecoder) Decode(dst, src []byte, _ bool) error {
	// DEFLATE pclusters are always zero-padded in front.
	src, err := skipZeros(src)
	if err != nil {
		return err
	}
	r, _ := d.readers.Get().(*deflateReader)
	if r == nil {
		r = &deflateReader{}
		r.in.Reset(src)
		r.fr = flate.NewReader(&r.in)
	} else {
		r.in.Reset(src)
		if err := r.fr.(flate.Resetter).Reset(&r.in, nil); err != nil {
			return corruptf("deflate: %v", err)
		}
	}
	defer func() {
		r.in.Reset(nil)
		d.readers.Put(r)
	}()

	if n, err := io.ReadFull(r.fr, dst); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corruptf("deflate: decoded %d bytes, want %d", n, len(dst))
		}
		return corruptf("deflate: %v", err)
	}
	// The kernel wants the final block's end exactly when the output is
	// full (Z_STREAM_END); more data, or a stream cut short, is corrupt.
	var probe [1]byte
	switch n, err := r.fr.Read(probe[:]); {
	case n > 0:
		return corruptf("deflate: stream decodes to more than %d bytes", len(dst))
	case errors.Is(err, io.EOF):
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return corruptf("deflate: stream ends before its final block")
	case err != nil:
		return corruptf("deflate: %v", err)
	default:
		return corruptf("deflate: no end of stream after %d bytes", len(dst))
	}
}
