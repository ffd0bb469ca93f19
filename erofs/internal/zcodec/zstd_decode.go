package zcodec

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// zstdDecoder decodes Zstandard frames as the kernel's
// decompressor_zstd.c does: a frame (or frames) whose window fits the
// configured window log, decoding to exactly the extent length.
type zstdDecoder struct{ d *zstd.Decoder }

func newZstdDecoder(windowLog int) (zstdDecoder, error) {
	d, err := zstd.NewReader(nil,
		// Hostile frames may ask for any window: refuse anything the
		// kernel would not have a workspace for.
		zstd.WithDecoderMaxWindow(1<<windowLog),
		// DecodeAll writes into the caller's dst and never grows it: an
		// overrunning frame fails instead of allocating.
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderConcurrency(0),
	)
	if err != nil {
		return zstdDecoder{}, fmt.Errorf("zstd decoder: %w", err)
	}
	return zstdDecoder{d: d}, nil
}

func (z zstdDecoder) Decode(dst, src []byte, _ bool) error {
	// Zstd pclusters are always zero-padded in front.
	src, err := skipZeros(src)
	if err != nil {
		return err
	}
	out, err := z.d.DecodeAll(src, dst[:0:len(dst)])
	if err != nil {
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return corruptf("zstd: stream decodes to more than %d bytes", len(dst))
		}
		return corruptf("zstd: %v", err)
	}
	if len(out) != len(dst) {
		return corruptf("zstd: decoded %d bytes, want %d", len(out), len(dst))
	}
	return nil
}
