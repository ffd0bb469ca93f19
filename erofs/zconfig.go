package erofs

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// zconfig is what the superblock says about compression: the algorithms
// compressed inodes may use and their decoder parameters. The kernel
// reads it at mount (z_erofs_parse_cfgs); so does Open.
type zconfig struct {
	algs    uint16 // available_compr_algs (LZ4 only without COMPR_CFGS)
	params  zcodec.Params
	lz4Blks uint16 // LZ4 max_pclusterblks (1 without a config record)

	mu       sync.Mutex
	decoders [disk.ComprMax]zcodec.Decoder
}

// comprCfgsProbe is how much Open reads first for the configuration
// records; mkfs writes 16 bytes per algorithm, so one read is the rule.
const comprCfgsProbe = 512

// comprCfgsMax bounds the records: one per algorithm, each at most a
// u16 length, 65536 payload bytes and 3 bytes of alignment.
const comprCfgsMax = disk.ComprMax * (2 + 65536 + 3)

// loadComprCfgs reads the compression configuration after the
// superblock, whose size (with extension slots) is sbSize.
func (img *Image) loadComprCfgs(sbSize int) error {
	zc := &img.z
	zc.lz4Blks = 1
	if img.sb.FeatureIncompat&disk.IncompatComprCfgs == 0 {
		// Only LZ4, and U1 is lz4_max_distance.
		zc.algs = 1 << disk.ComprLZ4
		zc.params.LZ4MaxDistance = img.sb.U1
		return nil
	}
	zc.algs = img.sb.U1
	if unknown := zc.algs &^ disk.AllComprAlgs; unknown != 0 {
		return unsupportedf("superblock: unknown compression algorithms %#x", unknown)
	}
	if zc.algs == 0 {
		return nil
	}
	off := int64(disk.SuperOffset + sbSize)
	recs, err := img.readComprCfgs(off, zc.algs)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := zc.apply(r, img.blkSize); err != nil {
			return err
		}
	}
	return nil
}

// readComprCfgs reads and splits the records at off, reading more only
// when the first read does not hold them all.
func (img *Image) readComprCfgs(off int64, algs uint16) ([]disk.ComprCfgRecord, error) {
	for _, n := range []int64{comprCfgsProbe, comprCfgsMax} {
		if img.size >= 0 {
			n = min(n, img.size-off)
		}
		if n <= 0 {
			return nil, corruptf("compression configs at byte %d beyond image end %d", off, img.size)
		}
		buf := make([]byte, n)
		got, err := img.r.ReadAt(buf, off)
		if got < len(buf) && err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("erofs: compression configs at byte %d: %w", off, err)
		}
		recs, _, err := disk.DecodeComprCfgs(buf[:got], algs)
		if err == nil {
			return recs, nil
		}
		if !errors.Is(err, disk.ErrShort) || got < len(buf) {
			return nil, fmt.Errorf("%w: superblock compression configs: %w", ErrCorrupt, err)
		}
	}
	return nil, corruptf("superblock compression configs longer than %d bytes", comprCfgsMax)
}

// apply checks one configuration record as the kernel's per-algorithm
// config loaders do and records its parameters.
func (zc *zconfig) apply(r disk.ComprCfgRecord, blkSize int64) error {
	switch r.Alg {
	case disk.ComprLZ4:
		c, err := disk.DecodeLZ4Cfgs(r.Data)
		if err != nil {
			return fmt.Errorf("%w: lz4 config: %w", ErrCorrupt, err)
		}
		zc.params.LZ4MaxDistance = c.MaxDistance
		zc.lz4Blks = max(c.MaxPclusterBlks, 1)
		if int64(zc.lz4Blks)*blkSize > disk.PclusterMaxSize {
			return corruptf("lz4 config: max_pclusterblks %d above %d bytes", c.MaxPclusterBlks, disk.PclusterMaxSize)
		}
	case disk.ComprLZMA:
		c, err := disk.DecodeLZMACfgs(r.Data)
		if err != nil {
			return fmt.Errorf("%w: lzma config: %w", ErrCorrupt, err)
		}
		if c.Format != 0 {
			return unsupportedf("lzma config: format %d", c.Format)
		}
		if c.DictSize < disk.LZMAMinDictSize || c.DictSize > disk.LZMAMaxDictSize {
			return unsupportedf("lzma config: dictionary size %d", c.DictSize)
		}
		zc.params.LZMADictSize = c.DictSize
	case disk.ComprDeflate:
		c, err := disk.DecodeDeflateCfgs(r.Data)
		if err != nil {
			return fmt.Errorf("%w: deflate config: %w", ErrCorrupt, err)
		}
		if c.WindowBits > disk.DeflateWindowBitsMax {
			return unsupportedf("deflate config: window bits %d", c.WindowBits)
		}
		zc.params.DeflateWindowBits = c.WindowBits
	case disk.ComprZstd:
		c, err := disk.DecodeZstdCfgs(r.Data)
		if err != nil {
			return fmt.Errorf("%w: zstd config: %w", ErrCorrupt, err)
		}
		if c.Format != 0 {
			return unsupportedf("zstd config: format %d", c.Format)
		}
		if c.WindowLog > 20-disk.ZstdWindowLogMin { // window at most ZstdMaxDictSize
			return unsupportedf("zstd config: window log %d", int(c.WindowLog)+disk.ZstdWindowLogMin)
		}
		zc.params.ZstdWindowLog = c.WindowLog + disk.ZstdWindowLogMin
	}
	return nil
}

// decoder returns the (shared, concurrency-safe) decoder of alg.
func (zc *zconfig) decoder(alg uint8) (zcodec.Decoder, error) {
	if alg >= disk.ComprMax {
		return nil, unsupportedf("compression algorithm %d", alg)
	}
	zc.mu.Lock()
	defer zc.mu.Unlock()
	if d := zc.decoders[alg]; d != nil {
		return d, nil
	}
	d, err := zcodec.NewDecoder(zcodec.Algorithm(alg), zc.params)
	if err != nil {
		if errors.Is(err, zcodec.ErrUnsupported) {
			return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		return nil, err
	}
	zc.decoders[alg] = d
	return d, nil
}

// CompressionAlgorithms names the algorithms the superblock makes
// available to compressed inodes ("lz4", "lzma", "deflate", "zstd"). An
// image without COMPR_CFGS allows LZ4 only, whether or not it compresses
// anything.
func (i Info) CompressionAlgorithms() []string {
	var names []string
	for a := 0; a < 16; a++ {
		if i.ComprAlgs&(1<<a) != 0 {
			names = append(names, zcodec.Algorithm(a).String())
		}
	}
	return names
}
