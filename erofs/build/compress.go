package build

import (
	"crypto/sha256"
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// DefaultPclusterSize is the pcluster size used when Options.PclusterSize
// is 0: one block, as mkfs.erofs does.
const DefaultPclusterSize = blockSize

// zconfig is a build's compression setup.
type zconfig struct {
	alg      zcodec.Algorithm
	hc       bool
	level    int
	pcluster int           // bytes, a multiple of blockSize
	params   zcodec.Params // what the streams need the superblock to say
}

// maxExtent bounds the bytes one extent decodes to, and so the input of
// one compression call: a run of zeros would otherwise make one 4 KiB
// pcluster out of a megabyte and a big pcluster out of far more than the
// kernel's 12 MiB (newer kernels refuse larger extents).
const maxExtent = 4 << 20

// trailingRemainder is the most a file's last pcluster may leave over
// when it is recompressed one block smaller (see cutSegment): small enough
// to be stored inline after the inode's index.
const trailingRemainder = blockSize / 2

// segmentSize is how much of a file one compression job covers. Files are
// cut at segment boundaries (which are lcluster boundaries), so the
// segments of a large file compress in parallel and a build holds only a
// few of them; the cost is one partly filled pcluster per segment.
const segmentSize = maxExtent

func newZconfig(spec string, pcluster int) (*zconfig, error) {
	alg, hc, level, err := zcodec.ParseSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("compression %q: %w", spec, err)
	}
	if pcluster == 0 {
		pcluster = DefaultPclusterSize
	}
	if pcluster < blockSize || pcluster > disk.PclusterMaxSize || pcluster%blockSize != 0 {
		return nil, fmt.Errorf("pcluster size %d: must be a multiple of %d up to %d", pcluster, blockSize, disk.PclusterMaxSize)
	}
	c := &zconfig{alg: alg, hc: hc, level: level, pcluster: pcluster}
	enc, err := c.newEncoder()
	if err != nil {
		return nil, fmt.Errorf("compression %q: %w", spec, err)
	}
	c.params = enc.Params()
	return c, nil
}

func (c *zconfig) newEncoder() (zcodec.Encoder, error) {
	return zcodec.NewEncoderFor(c.alg, c.hc, c.level, maxExtent)
}

// big reports whether pclusters may span several blocks (BIG_PCLUSTER).
func (c *zconfig) big() bool { return c.pcluster > blockSize }

// needCfgs reports whether the superblock needs configuration records:
// without them a kernel assumes LZ4 with one-block pclusters.
func (c *zconfig) needCfgs() bool { return c.big() || c.alg != zcodec.LZ4 }

// cfgRecords returns the configuration record of the algorithm.
func (c *zconfig) cfgRecords() []disk.ComprCfgRecord {
	var data []byte
	switch c.alg {
	case zcodec.LZ4:
		r := disk.LZ4Cfgs{MaxDistance: c.params.LZ4MaxDistance, MaxPclusterBlks: uint16(c.pcluster / blockSize)}
		data = make([]byte, disk.LZ4CfgsSize)
		r.Encode(data)
	case zcodec.LZMA:
		r := disk.LZMACfgs{DictSize: c.params.LZMADictSize}
		data = make([]byte, disk.LZMACfgsSize)
		r.Encode(data)
	case zcodec.Deflate:
		r := disk.DeflateCfgs{WindowBits: c.params.DeflateWindowBits}
		data = make([]byte, disk.DeflateCfgsSize)
		r.Encode(data)
	case zcodec.Zstd:
		var wl uint8
		if c.params.ZstdWindowLog != 0 {
			wl = c.params.ZstdWindowLog - disk.ZstdWindowLogMin
		}
		r := disk.ZstdCfgs{WindowLog: wl}
		data = make([]byte, disk.ZstdCfgsSize)
		r.Encode(data)
	}
	return []disk.ComprCfgRecord{{Alg: uint8(c.alg), Data: data}}
}

// cutExt is one extent of a segment as a worker cut it.
type cutExt struct {
	off    int64    // logical start in the file
	length int      // decoded bytes
	plain  bool     // stored raw in a one-block pcluster
	stream []byte   // compressed stream: compressed extents, and a final extent that compressed whole (for ztailpacking)
	sum    [32]byte // sha256 of the stream of a compressed extent, of the data of a plain one
}

// blocks is the pcluster size of a stored (not inlined) extent.
func (e *cutExt) blocks() int {
	if e.plain {
		return 1
	}
	return (len(e.stream) + blockSize - 1) / blockSize
}

// zlane is one compression lane's state: its encoder, scratch space of
// twice the pcluster size, and how the all-zero windows it compressed
// came out.
type zlane struct {
	cfg   *zconfig
	enc   zcodec.Encoder
	dst   []byte
	zeros []zeroWindow // the most recent last, at most maxZeroWindows
}

// zeroWindow remembers how a window of n zero bytes compressed: runs of
// zeros (a sparse tar entry expands to gigabytes of them) are then cut at
// memory speed instead of compressed again window by window. A segment's
// windows shrink towards its end, so a few lengths recur.
type zeroWindow struct {
	n, consumed int
	stream      []byte
}

const maxZeroWindows = 8

// encode compresses a prefix of src into l.dst[:c.pcluster] (see
// zcodec.Encoder.EncodeDestSize), answering an all-zero window of a
// length it has seen from what it remembers.
//
// An all-zero window is compressed by a reset encoder, and leaves it
// reset, whether or not the answer was remembered: what the lane did
// before (which segments it cut, which windows it remembers) then
// changes nothing in its output, so any lane may cut any segment.
func (l *zlane) encode(src []byte) (consumed, n int, err error) {
	c := l.cfg
	if !isZero(src) {
		return l.enc.EncodeDestSize(l.dst[:c.pcluster], src)
	}
	l.enc.Reset()
	defer l.enc.Reset()
	for _, z := range l.zeros {
		if z.n == len(src) {
			return z.consumed, copy(l.dst, z.stream), nil
		}
	}
	consumed, n, err = l.enc.EncodeDestSize(l.dst[:c.pcluster], src)
	if err == nil && consumed > 0 {
		if len(l.zeros) == maxZeroWindows {
			l.zeros = l.zeros[1:]
		}
		l.zeros = append(l.zeros, zeroWindow{n: len(src), consumed: consumed, stream: append([]byte(nil), l.dst[:n]...)})
	}
	return consumed, n, err
}

// cutSegment cuts data, the bytes of a file from off on, into extents the
// way mkfs.erofs does: each compression fills one pcluster with as much
// input as fits, and an extent that does not save a whole block is
// stored raw instead, one block of input at a time. The file's last
// pcluster is tried one block smaller, leaving a remainder for the inline
// tail, as mkfs.erofs's trailing recompression does. eof says data runs
// to the end of the file.
//
// Where a compression saves nothing, the first half of the input it
// consumed is stored raw without trying again at every block: with big
// pclusters each try reads a pcluster's worth of input, and trying at
// every block of incompressible data would cost pcluster/4096 times its
// size (mkfs.erofs takes minutes per MiB of random data at -C1048576). A
// one-block pcluster consumes less than two blocks, so its cuts are
// mkfs.erofs's.
func (l *zlane) cutSegment(data []byte, off int64, eof bool) ([]cutExt, error) {
	c, dst := l.cfg, l.dst
	// Cuts must depend on the segment alone, not on what the lane
	// compressed before: identical files are then cut identically and
	// share their pclusters (and the image does not depend on lanes).
	l.enc.Reset()
	var exts []cutExt
	// Compressed streams are shorter than the input they stand for, so
	// one arena of the segment's size holds them all.
	arena := make([]byte, 0, len(data))
	for pos := 0; pos < len(data); {
		rest := data[pos:]
		src := rest[:min(len(rest), maxExtent)]
		consumed, n, err := l.encode(src)
		if err != nil {
			return nil, fmt.Errorf("compressing at %d: %w", off+int64(pos), err)
		}
		if consumed < 0 || consumed > len(src) || n < 0 || n > c.pcluster || (consumed > 0 && n == 0) {
			return nil, fmt.Errorf("internal error: encoder consumed %d of %d bytes into %d of %d", consumed, len(src), n, c.pcluster)
		}
		blocks := (n + blockSize - 1) / blockSize
		if eof && consumed == len(rest) && blocks > 1 {
			// The file's last pcluster: if one block less holds all but
			// a small remainder, that remainder can go inline with the
			// inode (ztailpacking) and the block is saved.
			alt := dst[c.pcluster:][:(blocks-1)*blockSize]
			c2, n2, err := l.enc.EncodeDestSize(alt, src)
			if err != nil {
				return nil, fmt.Errorf("compressing at %d: %w", off+int64(pos), err)
			}
			if c2 > (blocks-1)*blockSize && len(rest)-c2 <= trailingRemainder {
				consumed, n, blocks = c2, n2, blocks-1
				copy(dst, alt[:n])
			}
		}
		if consumed > blocks*blockSize {
			// Equal streams decode to equal bytes, so the stream, half
			// the input's size or less, is what dedupe hashes.
			e := cutExt{off: off + int64(pos), length: consumed, stream: keep(&arena, dst[:n]), sum: sha256.Sum256(dst[:n])}
			exts = append(exts, e)
			pos += consumed
			continue
		}
		// Raw: at most one block of input per extent, so that the
		// pcluster is one block, as Linux 6.1 requires of raw
		// pclusters. Whole blocks before the last one of the data
		// are stored raw up to half of what was consumed.
		raw := max(1, min(consumed/2/blockSize, (len(rest)-1)/blockSize))
		for i := range raw {
			e := cutExt{off: off + int64(pos), plain: true, length: min(len(rest), blockSize)}
			if i == 0 && eof && consumed == len(rest) && consumed == e.length && n < consumed {
				e.stream = keep(&arena, dst[:n]) // a tail that may go inline compressed
			}
			e.sum = sha256.Sum256(data[pos : pos+e.length])
			exts = append(exts, e)
			pos, rest = pos+e.length, rest[e.length:]
		}
	}
	return exts, nil
}

// keep copies p into the arena if it has room, else into a new slice.
func keep(arena *[]byte, p []byte) []byte {
	a := *arena
	if len(a)+len(p) > cap(a) {
		return append([]byte(nil), p...)
	}
	start := len(a)
	a = append(a, p...)
	*arena = a
	return a[start:len(a):len(a)]
}
