package zcodec

import (
	"fmt"
	"math/bits"

	"github.com/klauspost/compress/zstd"
)

// zstdEncoder writes single Zstandard frames with klauspost/compress/zstd:
// no checksum (4 bytes a pcluster, and mkfs.erofs writes none), the frame
// content size set, a window no larger than the config record announces.
type zstdEncoder struct {
	windowLog int
	enc       *zstd.Encoder
	buf       []byte
	fitter    prefixFitter
}

func newZstdEncoder(level, maxInput int) (*zstdEncoder, error) {
	if level == 0 {
		level = ZstdDefaultLevel // libzstd's level 0 is its default
	}
	wlog := MaxZstdWindowLog
	if maxInput > 0 {
		wlog = min(max(bits.Len(uint(maxInput-1)), MinZstdWindowLog), MaxZstdWindowLog)
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(1<<wlog),
		zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return &zstdEncoder{windowLog: wlog, enc: enc}, nil
}

func (e *zstdEncoder) Algorithm() Algorithm { return Zstd }
func (e *zstdEncoder) Params() Params       { return Params{ZstdWindowLog: uint8(e.windowLog)} }

// Reset forgets the last call's compression ratio.
func (e *zstdEncoder) Reset() { e.fitter = prefixFitter{} }

func (e *zstdEncoder) EncodeDestSize(dst, src []byte) (consumed, n int, err error) {
	if len(dst) == 0 || len(src) == 0 {
		return 0, 0, nil
	}
	return e.fitter.fit(dst, src, e.compress)
}

func (e *zstdEncoder) compress(src []byte) ([]byte, error) {
	e.buf = e.enc.EncodeAll(src, e.buf[:0])
	return e.buf, nil
}
