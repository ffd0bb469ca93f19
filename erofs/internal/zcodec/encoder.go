package zcodec

import "fmt"

// Encoder compresses with fixed-sized output (what EROFS pclusters are).
// Not safe for concurrent use: use one per goroutine.
type Encoder interface {
	// EncodeDestSize compresses the longest prefix of src it can fit into
	// at most len(dst) bytes, and returns how many bytes of src it
	// consumed and the stream length. The stream decodes (Decoder.Decode,
	// and the kernel) to exactly src[:consumed] and never begins with a
	// 0x00 byte (0padding places it at the end of the pcluster after
	// zeros). consumed may be 0 when nothing useful fits.
	EncodeDestSize(dst, src []byte) (consumed, n int, err error)
	Algorithm() Algorithm
	// Params are what the superblock's config record must say for the
	// streams this encoder writes to decode.
	Params() Params
	// Reset forgets what earlier calls taught the encoder (DEFLATE's and
	// Zstd's fixed-output search starts from the last call's ratio), so
	// that what the next calls produce depends on their input alone:
	// identical files are cut identically wherever they are compressed.
	Reset()
}

// Default and maximum levels, as mkfs.erofs takes them.
const (
	LZ4HCDefaultLevel   = 9
	LZ4HCMaxLevel       = 12
	LZMADefaultLevel    = 6
	LZMAMaxLevel        = 9
	DeflateDefaultLevel = 6
	DeflateMaxLevel     = 9
	ZstdDefaultLevel    = 3
	ZstdMaxLevel        = 22
)

// NewEncoder returns an encoder for alg with the kernel's default windows
// (LZ4 64 KiB, LZMA 8 MiB, DEFLATE 32 KiB, Zstd 1 MiB). level < 0 means
// the algorithm's default. hc selects LZ4HC for LZ4 (mkfs.erofs's "lz4hc",
// default level 9, up to 12).
func NewEncoder(alg Algorithm, hc bool, level int) (Encoder, error) {
	return NewEncoderFor(alg, hc, level, 0)
}

// NewEncoderFor is NewEncoder for inputs of at most maxInput bytes per
// EncodeDestSize call (the builder's max extent; 0 means unknown): LZMA's
// dictionary and Zstd's window are then sized to cover maxInput rather
// than the kernel maximum, which keeps the kernel's per-CPU decompression
// buffers small. Params reports the sizes chosen.
func NewEncoderFor(alg Algorithm, hc bool, level, maxInput int) (Encoder, error) {
	if maxInput < 0 {
		return nil, fmt.Errorf("%w: negative maxInput %d", ErrUnsupported, maxInput)
	}
	if err := checkLevel(alg, hc, level); err != nil {
		return nil, err
	}
	switch alg {
	case LZ4:
		if hc {
			if level < 0 {
				level = LZ4HCDefaultLevel
			}
			return newLZ4HCEncoder(level)
		}
		return newLZ4Encoder(), nil
	case LZMA:
		if level < 0 {
			level = LZMADefaultLevel
		}
		return newLZMAEncoder(level, maxInput)
	case Deflate:
		if level < 0 {
			level = DeflateDefaultLevel
		}
		return newDeflateEncoder(level)
	case Zstd:
		if level < 0 {
			level = ZstdDefaultLevel
		}
		return newZstdEncoder(level, maxInput)
	}
	return nil, fmt.Errorf("%w: algorithm %d", ErrUnsupported, alg)
}

// checkLevel reports whether level (<0: default) is valid for alg.
func checkLevel(alg Algorithm, hc bool, level int) error {
	if hc && alg != LZ4 {
		return fmt.Errorf("%w: hc is only for lz4, not %v", ErrUnsupported, alg)
	}
	var maxLevel int
	switch alg {
	case LZ4:
		if !hc {
			if level >= 0 {
				return fmt.Errorf("%w: lz4 takes no level (%d); lz4hc does", ErrUnsupported, level)
			}
			return nil
		}
		maxLevel = LZ4HCMaxLevel
	case LZMA:
		maxLevel = LZMAMaxLevel
	case Deflate:
		maxLevel = DeflateMaxLevel
	case Zstd:
		maxLevel = ZstdMaxLevel
	default:
		return fmt.Errorf("%w: algorithm %d", ErrUnsupported, alg)
	}
	if level > maxLevel {
		return fmt.Errorf("%w: level %d for %v (at most %d)", ErrUnsupported, level, alg, maxLevel)
	}
	return nil
}
