package zcodec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Algorithm is a compression algorithm, numbered as on disk (the
// superblock's available_compr_algs bits and the map header's
// h_algorithmtype nibbles).
type Algorithm uint8

const (
	LZ4     Algorithm = 0
	LZMA    Algorithm = 1 // MicroLZMA
	Deflate Algorithm = 2 // raw DEFLATE, no zlib header
	Zstd    Algorithm = 3 // Zstandard frame
)

// String returns the algorithm's name as mkfs.erofs spells it.
func (a Algorithm) String() string {
	switch a {
	case LZ4:
		return "lz4"
	case LZMA:
		return "lzma"
	case Deflate:
		return "deflate"
	case Zstd:
		return "zstd"
	}
	return "algorithm(" + strconv.Itoa(int(a)) + ")"
}

// ErrCorrupt is wrapped by every error that reports a stream the kernel
// would refuse (EFSCORRUPTED): truncated, overlong, short or malformed.
var ErrCorrupt = errors.New("zcodec: corrupt compressed data")

// ErrUnsupported is wrapped by errors for algorithms, levels and
// parameters this package (or the kernel) does not support.
var ErrUnsupported = errors.New("zcodec: unsupported")

// Params are what the superblock's per-algorithm config record tells a
// decoder (and what an encoder needs written there). Zero values mean the
// kernel's defaults.
type Params struct {
	LZ4MaxDistance    uint16 // 0: 65535 (64 KiB window)
	LZMADictSize      uint32 // 0: 8 MiB, mkfs.erofs's default (the kernel needs a record for LZMA)
	DeflateWindowBits uint8  // 0: 15
	ZstdWindowLog     uint8  // the real log (stored on disk as windowlog-10); 0: 20
}

// Kernel limits for the config records (fs/erofs/erofs_fs.h).
const (
	// MaxPclusterSize is Z_EROFS_PCLUSTER_MAX_SIZE.
	MaxPclusterSize = 1 << 20
	// MinLZMADictSize and MaxLZMADictSize bound a LZMA record's dict_size.
	MinLZMADictSize = 4096
	MaxLZMADictSize = 8 * MaxPclusterSize
	// MinZstdWindowLog and MaxZstdWindowLog bound a Zstd record's window
	// (on disk windowlog-10, at most ilog2(Z_EROFS_ZSTD_MAX_DICT_SIZE)-10).
	MinZstdWindowLog = 10
	MaxZstdWindowLog = 20
	// MinDeflateWindowBits and MaxDeflateWindowBits bound a DEFLATE record.
	MinDeflateWindowBits = 8
	MaxDeflateWindowBits = 15
)

// lz4Distance returns the LZ4 window the params allow.
func (p Params) lz4Distance() int {
	if p.LZ4MaxDistance == 0 {
		return 65535
	}
	return int(p.LZ4MaxDistance)
}

// lzmaDict returns the LZMA dictionary size the params allow.
func (p Params) lzmaDict() int {
	if p.LZMADictSize == 0 {
		return MaxLZMADictSize
	}
	return int(p.LZMADictSize)
}

// deflateWindowBits returns the DEFLATE window log the params allow.
func (p Params) deflateWindowBits() int {
	if p.DeflateWindowBits == 0 {
		return MaxDeflateWindowBits
	}
	return int(p.DeflateWindowBits)
}

// zstdWindowLog returns the Zstandard window log the params allow.
func (p Params) zstdWindowLog() int {
	if p.ZstdWindowLog == 0 {
		return MaxZstdWindowLog
	}
	return int(p.ZstdWindowLog)
}

// validate checks the params for alg against the ranges the kernel's
// config loaders accept.
func (p Params) validate(alg Algorithm) error {
	switch alg {
	case LZ4:
		return nil
	case LZMA:
		if d := p.lzmaDict(); d < MinLZMADictSize || d > MaxLZMADictSize {
			return fmt.Errorf("%w: lzma dictionary size %d (kernel accepts %d..%d)", ErrUnsupported, d, MinLZMADictSize, MaxLZMADictSize)
		}
	case Deflate:
		// The kernel refuses only windowbits above 15 and then inflates
		// with a 32 KiB window whatever the record says.
		if w := p.deflateWindowBits(); w > MaxDeflateWindowBits {
			return fmt.Errorf("%w: deflate window bits %d (kernel accepts up to %d)", ErrUnsupported, w, MaxDeflateWindowBits)
		}
	case Zstd:
		if w := p.zstdWindowLog(); w < MinZstdWindowLog || w > MaxZstdWindowLog {
			return fmt.Errorf("%w: zstd window log %d (kernel accepts %d..%d)", ErrUnsupported, w, MinZstdWindowLog, MaxZstdWindowLog)
		}
	default:
		return fmt.Errorf("%w: algorithm %d", ErrUnsupported, alg)
	}
	return nil
}

// ParseSpec parses mkfs.erofs's -z spelling: "lz4", "lz4hc[,LEVEL]",
// "lzma[,LEVEL]", "deflate[,LEVEL]", "zstd[,LEVEL]". level is -1 when the
// spec names none (the algorithm's default).
func ParseSpec(s string) (alg Algorithm, hc bool, level int, err error) {
	name, lv, hasLevel := strings.Cut(strings.TrimSpace(s), ",")
	switch strings.ToLower(name) {
	case "lz4":
		alg = LZ4
	case "lz4hc":
		alg, hc = LZ4, true
	case "lzma":
		alg = LZMA
	case "deflate":
		alg = Deflate
	case "zstd":
		alg = Zstd
	default:
		return 0, false, 0, fmt.Errorf("%w: compressor %q", ErrUnsupported, s)
	}
	level = -1
	if hasLevel {
		level, err = strconv.Atoi(strings.TrimPrefix(lv, "level="))
		if err != nil || level < 0 {
			return 0, false, 0, fmt.Errorf("%w: compression level in %q", ErrUnsupported, s)
		}
	}
	if err := checkLevel(alg, hc, level); err != nil {
		return 0, false, 0, err
	}
	return alg, hc, level, nil
}
