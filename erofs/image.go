package erofs

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// supportedIncompat is the set of incompatible features this package reads.
const supportedIncompat = disk.IncompatZeroPadding | disk.IncompatComprCfgs |
	disk.IncompatChunkedFile | disk.IncompatDeviceTable |
	disk.IncompatZtailpacking | disk.IncompatFragments

// incompatNames names the incompatible feature bits for error messages.
var incompatNames = [...]string{
	"zero_padding", "compr_cfgs", "chunked_file", "device_table",
	"ztailpacking", "fragments", "xattr_prefixes", "48bit", "metabox",
}

func featureNames(bitsSet uint32) string {
	var names []string
	for i := 0; i < 32; i++ {
		if bitsSet&(1<<i) == 0 {
			continue
		}
		if i < len(incompatNames) {
			names = append(names, incompatNames[i])
		} else {
			names = append(names, fmt.Sprintf("bit%d", i))
		}
	}
	return strings.Join(names, ",")
}

// Image is an opened EROFS image. It is safe for concurrent use.
//
// Open validates only the superblock, device table and root inode; other
// metadata is checked as it is read, and malformed parts give errors
// wrapping ErrCorrupt. An image that has not passed Check may contain
// directory loops (a directory listed inside itself), which a plain
// fs.WalkDir would follow forever; walkers of untrusted images should run
// Check first or track Stat.Nid of the directories they enter.
type Image struct {
	r        io.ReaderAt
	size     int64 // primary device size in bytes, -1 if unknown
	sb       disk.Superblock
	blkBits  uint
	blkSize  int64
	metaBase int64
	xattrOff int64
	slots    []disk.DeviceSlot
	mapped   []mappedRange // unified address ranges, sorted, disjoint
	devMask  uint16
	root     *inode

	blobs     BlobResolver
	blobMu    sync.Mutex
	blobCache map[int]*blobDev

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	lookupBufs sync.Pool // *lookupBuf

	ctMu   sync.Mutex
	ctDone bool
	ct     []ChunkDigest
	ctErr  error

	verify bool          // WithVerifiedBlobs
	vtable []ChunkDigest // the chunk table blob reads are verified against
	vcache chunkCache    // recently verified chunks

	z      zconfig   // compression algorithms and decoders
	packed packedRef // the packed inode (fragments), loaded on first use
}

type blobDev struct {
	r    io.ReaderAt
	size int64 // -1 if unknown
}

// mappedRange is the unified address range [start, end) (bytes) of an
// extra device.
type mappedRange struct {
	start, end int64
	dev        int
}

// Info holds the superblock facts of an image.
type Info struct {
	BlockSize       int
	Blocks          uint32    // blocks of the primary device
	Inodes          uint64    // as the superblock says; Check compares it with the tree
	BuildTime       time.Time // garbage if BuildTimeSec is beyond what time.Time holds
	BuildTimeSec    int64     // raw seconds, signed as the kernel reads them: any int64
	BuildTimeNsec   uint32
	UUID            [16]byte
	VolumeName      string
	FeatureCompat   uint32
	FeatureIncompat uint32
	RootNid         uint64
	MetaBlkAddr     uint32
	XattrBlkAddr    uint32
	Checksum        uint32
	HasChecksum     bool // FeatureCompat has SB_CHKSUM; Open verified it
	ExtraDevices    int
	// ComprAlgs is the bitmap of compression algorithms compressed inodes
	// may use (bit n: zcodec algorithm n; see CompressionAlgorithms).
	ComprAlgs uint16
	// PackedNid is the packed inode holding fragments (0: none).
	PackedNid uint64
}

// Device is one entry of the device table.
type Device struct {
	ID            int // 1..N, as chunk indexes name it
	Tag           string
	Blocks        uint32
	MappedBlkAddr uint32 // unified address of the device's first block, 0 if none
}

// sizer is implemented by *bytes.Reader, *io.SectionReader, *strings.Reader.
type sizer interface{ Size() int64 }

type stater interface{ Stat() (fs.FileInfo, error) }

// probeSize returns the size of r if it can be found cheaply, else -1.
func probeSize(r io.ReaderAt) int64 {
	switch v := r.(type) {
	case sizer:
		if n := v.Size(); n >= 0 {
			return n
		}
	case stater:
		if fi, err := v.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size()
		}
	}
	return -1
}

// Open validates the superblock and root directory of the image in r.
// The Image reads r on demand; r must stay usable until the Image is no
// longer used. Close does not close r.
func Open(r io.ReaderAt, opts ...Option) (*Image, error) {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if r == nil {
		return nil, errors.New("erofs: nil reader")
	}
	img := &Image{r: r, size: -1, blobs: o.blobs, blobCache: make(map[int]*blobDev), verify: o.verify}
	if o.sizeSet {
		if o.size < 0 {
			return nil, fmt.Errorf("erofs: negative image size %d", o.size)
		}
		img.size = o.size
	} else {
		img.size = probeSize(r)
	}
	if err := img.loadSuper(); err != nil {
		return nil, err
	}
	if err := img.loadDevices(); err != nil {
		return nil, err
	}
	root, err := img.inode(uint64(img.sb.RootNid))
	if err != nil {
		return nil, fmt.Errorf("root inode: %w", err)
	}
	if !root.isDir() {
		return nil, corruptf("root inode nid %d is not a directory (mode %#o)", root.nid, root.d.Mode)
	}
	img.root = root
	if img.verify && len(img.slots) > 0 {
		// Refuse now rather than at the first read: without a valid
		// table no blob byte could be returned.
		table, err := img.chunkTable()
		if err != nil {
			return nil, fmt.Errorf("erofs: %d extra device(s) but blob data cannot be verified: %w", len(img.slots), err)
		}
		img.vtable = table
	}
	return img, nil
}

func (img *Image) loadSuper() error {
	if img.size >= 0 && img.size < disk.SuperOffset+disk.SuperSize {
		return corruptf("image of %d bytes is too small for a superblock", img.size)
	}
	var b [disk.SuperSize]byte
	if err := readFull(img.r, b[:], disk.SuperOffset); err != nil {
		return fmt.Errorf("superblock: %w", err)
	}
	sb, err := disk.DecodeSuperblock(b[:])
	if err != nil {
		return fmt.Errorf("%w: superblock: %w", ErrCorrupt, err)
	}
	if sb.BlkSzBits < 9 {
		return corruptf("superblock: blkszbits %d below 9", sb.BlkSzBits)
	}
	if sb.BlkSzBits > 16 {
		return unsupportedf("superblock: blkszbits %d above 16", sb.BlkSzBits)
	}
	img.sb = sb
	img.blkBits = uint(sb.BlkSzBits)
	img.blkSize = 1 << img.blkBits
	sbSize := disk.SuperSize + 16*int(sb.ExtSlots)
	if sbSize > 4096-disk.SuperOffset {
		return corruptf("superblock: sb_extslots %d makes a %d-byte superblock", sb.ExtSlots, sbSize)
	}
	if sb.FeatureCompat&disk.CompatSuperChecksum != 0 {
		if err := img.verifyChecksum(); err != nil {
			return err
		}
	}
	if unknown := sb.FeatureIncompat &^ supportedIncompat; unknown != 0 {
		return unsupportedf("incompatible features %#x (%s)", unknown, featureNames(unknown))
	}
	if sb.DirBlkBits != 0 {
		return unsupportedf("superblock: dirblkbits %d", sb.DirBlkBits)
	}
	if err := img.loadComprCfgs(sbSize); err != nil {
		return err
	}
	img.metaBase = int64(sb.MetaBlkAddr) << img.blkBits
	img.xattrOff = int64(sb.XattrBlkAddr) << img.blkBits
	if end := int64(sb.Blocks) << img.blkBits; img.size >= 0 && img.size < end {
		return corruptf("image truncated: %d bytes, superblock counts %d blocks (%d bytes)", img.size, sb.Blocks, end)
	}
	return nil
}

// verifyChecksum checks the superblock CRC, which covers block 0 from the
// superblock on (or one block from the superblock for blocks <= 1 KiB).
func (img *Image) verifyChecksum() error {
	var block []byte
	if img.blkSize > disk.SuperOffset {
		block = make([]byte, img.blkSize)
		if err := readFull(img.r, block[disk.SuperOffset:], disk.SuperOffset); err != nil {
			return fmt.Errorf("superblock checksum area: %w", err)
		}
	} else {
		block = make([]byte, img.blkSize)
		if err := readFull(img.r, block, disk.SuperOffset); err != nil {
			return fmt.Errorf("superblock checksum area: %w", err)
		}
	}
	if got := disk.SuperChecksum(block); got != img.sb.Checksum {
		return corruptf("superblock checksum mismatch: stored %#08x, computed %#08x", img.sb.Checksum, got)
	}
	return nil
}

func (img *Image) loadDevices() error {
	if img.sb.FeatureIncompat&disk.IncompatDeviceTable == 0 || img.sb.ExtraDevices == 0 {
		return nil
	}
	n := int64(img.sb.ExtraDevices)
	off := int64(img.sb.DevtSlotOff) * disk.DeviceSlotSize
	sbEnd := int64(disk.SuperOffset + disk.SuperSize + 16*int(img.sb.ExtSlots))
	if off < sbEnd {
		return corruptf("device table at byte %d overlaps the superblock (ends at %d)", off, sbEnd)
	}
	end := off + n*disk.DeviceSlotSize
	if img.size >= 0 && end > img.size {
		return corruptf("device table [%d, %d) of %d devices beyond image end %d", off, end, n, img.size)
	}
	var buf [disk.DeviceSlotSize]byte
	slots := make([]disk.DeviceSlot, 0, min(n, 1024))
	for i := int64(0); i < n; i++ {
		at := off + i*disk.DeviceSlotSize
		if err := readFull(img.r, buf[:], at); err != nil {
			return fmt.Errorf("device slot %d: %w", i, err)
		}
		s, err := disk.DecodeDeviceSlot(buf[:])
		if err != nil {
			return fmt.Errorf("%w: device slot %d: %w", ErrCorrupt, i, err)
		}
		slots = append(slots, s)
	}
	img.slots = slots
	for i, s := range slots {
		if s.MappedBlkAddr == 0 || s.Blocks == 0 {
			continue
		}
		start := int64(s.MappedBlkAddr) << img.blkBits
		img.mapped = append(img.mapped, mappedRange{start: start, end: start + int64(s.Blocks)<<img.blkBits, dev: i + 1})
	}
	slices.SortFunc(img.mapped, func(a, b mappedRange) int { return cmp.Compare(a.start, b.start) })
	for i := 1; i < len(img.mapped); i++ {
		if a, b := img.mapped[i-1], img.mapped[i]; b.start < a.end {
			return corruptf("device %d mapped blocks [%d, %d) overlap device %d's [%d, %d)", b.dev, b.start>>img.blkBits, b.end>>img.blkBits, a.dev, a.start>>img.blkBits, a.end>>img.blkBits)
		}
	}
	img.devMask = uint16(1<<bits.Len16(uint16(n)) - 1) // roundup_pow_of_two(n+1) - 1
	return nil
}

// Info returns the superblock facts.
func (img *Image) Info() Info {
	sb := &img.sb
	vol := sb.VolumeName[:]
	for i, c := range vol {
		if c == 0 {
			vol = vol[:i]
			break
		}
	}
	return Info{
		BlockSize:       int(img.blkSize),
		Blocks:          sb.Blocks,
		Inodes:          sb.Inos,
		BuildTime:       unixTime(sb.BuildTime, sb.BuildTimeNsec),
		BuildTimeSec:    int64(sb.BuildTime),
		BuildTimeNsec:   sb.BuildTimeNsec,
		UUID:            sb.UUID,
		VolumeName:      string(vol),
		FeatureCompat:   sb.FeatureCompat,
		FeatureIncompat: sb.FeatureIncompat,
		RootNid:         uint64(sb.RootNid),
		MetaBlkAddr:     sb.MetaBlkAddr,
		XattrBlkAddr:    sb.XattrBlkAddr,
		Checksum:        sb.Checksum,
		HasChecksum:     sb.FeatureCompat&disk.CompatSuperChecksum != 0,
		ExtraDevices:    len(img.slots),
		ComprAlgs:       img.z.algs,
		PackedNid:       img.packedNid(),
	}
}

// unixTime converts an on-disk time. The kernel stores the u64 seconds
// into a signed time64_t, so times before 1970 are negative.
func unixTime(sec uint64, nsec uint32) time.Time {
	return time.Unix(int64(sec), int64(nsec))
}

// Devices returns the device table (empty if the image has none).
func (img *Image) Devices() []Device {
	devs := make([]Device, len(img.slots))
	for i := range img.slots {
		s := &img.slots[i]
		devs[i] = Device{ID: i + 1, Tag: s.TagString(), Blocks: s.Blocks, MappedBlkAddr: s.MappedBlkAddr}
	}
	return devs
}

// Close releases the blob resolver (if it implements io.Closer). The
// image reader itself is not closed. Close is safe to call more than once;
// later calls return the first call's result.
func (img *Image) Close() error {
	img.closeOnce.Do(func() {
		img.closed.Store(true)
		img.blobMu.Lock()
		clear(img.blobCache)
		img.blobMu.Unlock()
		img.vcache.close()
		if c, ok := img.blobs.(io.Closer); ok {
			img.closeErr = c.Close()
		}
	})
	return img.closeErr
}

func (img *Image) checkOpen() error {
	if img.closed.Load() {
		return fs.ErrClosed
	}
	return nil
}

// blob returns the reader of extra device dev (1..N).
func (img *Image) blob(dev int) (*blobDev, error) {
	img.blobMu.Lock()
	defer img.blobMu.Unlock()
	if img.closed.Load() {
		return nil, fs.ErrClosed
	}
	if b := img.blobCache[dev]; b != nil {
		return b, nil
	}
	tag := img.slots[dev-1].TagString()
	if img.blobs == nil {
		return nil, fmt.Errorf("device %d (tag %q): %w", dev, tag, ErrNoBlob)
	}
	r, err := img.blobs.OpenBlob(dev, tag)
	if err != nil {
		return nil, fmt.Errorf("erofs: open device %d (tag %q): %w", dev, tag, err)
	}
	if r == nil {
		return nil, fmt.Errorf("erofs: open device %d (tag %q): resolver returned no reader", dev, tag)
	}
	b := &blobDev{r: r, size: probeSize(r)}
	img.blobCache[dev] = b
	return b, nil
}

// devLimit returns the size in bytes device dev may be addressed up to
// according to the image (-1 if unknown): the primary's size, or an extra
// device's block count from the device table (0 blocks means unknown:
// mkfs.erofs 1.5 writes 0 for --blobdev).
func (img *Image) devLimit(dev int) int64 {
	if dev == 0 {
		return img.size
	}
	if b := img.slots[dev-1].Blocks; b != 0 {
		return int64(b) << img.blkBits
	}
	return -1
}

// readDev reads len(p) bytes at off of device dev (0 = primary).
func (img *Image) readDev(dev int, p []byte, off int64) error {
	if err := img.checkOpen(); err != nil {
		return err
	}
	end := off + int64(len(p))
	if lim := img.devLimit(dev); lim >= 0 && end > lim {
		return corruptf("device %d: data [%d, %d) beyond device end %d", dev, off, end, lim)
	}
	if dev == 0 {
		return readFull(img.r, p, off)
	}
	b, err := img.blob(dev)
	if err != nil {
		return err
	}
	if b.size >= 0 && end > b.size {
		return corruptf("device %d: data [%d, %d) beyond blob end %d", dev, off, end, b.size)
	}
	if err := readFull(b.r, p, off); err != nil {
		return fmt.Errorf("device %d: %w", dev, err)
	}
	return nil
}
