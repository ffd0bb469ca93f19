package erofs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"slices"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/internal/sha256chain"
)

// CheckOptions configures Check.
type CheckOptions struct {
	// Blobs supplies the extra devices. With it, chunk addresses are also
	// checked against each blob's real size.
	Blobs BlobResolver
	// VerifyData reads every data block and chunk. With Blobs and a chunk
	// table, every referenced blob chunk's sha256 is verified.
	VerifyData bool
	// Size is the image size in bytes; 0 means ask the reader (see WithSize).
	Size int64
}

// CheckReport summarises a checked image.
type CheckReport struct {
	Inodes   int // distinct inodes reached from the root
	Dirs     int
	Files    int // regular files
	Symlinks int
	Devices  int // character and block devices
	Others   int // FIFOs and sockets
	Xattrs   int // xattrs over all inodes (shared ones counted per inode)

	Chunks         int   // chunk entries of chunk-based files, holes included
	HoleChunks     int   // chunk entries that are holes
	ChunksVerified int   // distinct blob chunks whose sha256 was verified
	DataBytes      int64 // sum of regular file sizes

	CompressedFiles int   // regular files with a compressed layout
	Extents         int   // extents of compressed inodes (files, directories, symlinks)
	EncodedBytes    int64 // bytes of their pclusters (inline ones included, fragments not)
	ExtentsDecoded  int   // distinct extents decoded (VerifyData)
}

// Check verifies a whole image like fsck: the superblock and device table,
// the chunk digest table and start set if present, and everything reachable from the
// root directory:
//
//   - every inode decodes and has a layout valid for its type (special
//     files: flat with i_size 0; symlinks: 1..4095-byte targets); the
//     reserved field at 0x06 of extended inodes is 0 (Linux >= 6.15 reads
//     it as address bits);
//   - a compressed inode's map header and every index entry decode as the
//     kernel's, its extents tile the file, each pcluster lies inside its
//     device (and, in an extra device, is listed in the chunk table), and
//     with VerifyData every extent is decoded (each distinct one once),
//     as fsck.erofs does;
//   - inodes, xattr areas, inline tails and chunk arrays lie inside the
//     superblock's block count, data blocks inside their device (the
//     primary's block count; an extra device's device-table block count,
//     and its real size when opts.Blobs is given); inline tails do not
//     cross a block; unified address ranges lie beyond the primary;
//   - xattrs are well formed, shared ids inside the image and not repeated;
//   - directory blocks are well formed and sorted across the directory,
//     "." and ".." name the directory and its parent, each entry's file
//     type matches its inode, no directory is reachable twice;
//   - a non-directory's nlink equals the number of entries naming it, a
//     directory's nlink is 2 + its subdirectories;
//   - if the image has a chunk table, every chunk in an extra device has an
//     entry starting at the same block that covers the chunk's bytes, and
//     with VerifyData and Blobs each such chunk's sha256 is verified once.
//
// The superblock's inode count must equal the number of distinct inodes
// reached from the root, plus the packed inode of fragments if no
// directory names it (mkfs.erofs counts it), and so cannot exceed the
// 32-byte inode slots the image holds. The kernel only reports it in
// statfs and mounts images whatever it says, so Open accepts any count;
// Check reports it. The packed inode is checked like a file.
//
// Relaxations, for images from mkfs.erofs 1.5: a device-table block count
// of 0 means unknown (mkfs writes 0 for --blobdev), and images without a
// chunk table are accepted.
//
// The work is bounded by the image size (plus the data read with
// VerifyData; each device range is read at most once); ctx is checked
// between directory blocks, chunk batches and data reads.
//
// Check stops at the first problem and returns it, wrapping ErrCorrupt
// for malformed images and ErrUnsupported for unsupported features, with
// the nid, path and offset involved, together with the counts gathered so
// far. Metadata stored on an extra device that cannot be opened gives an
// error wrapping ErrNoBlob or the resolver's error. Check does not close
// opts.Blobs.
func Check(ctx context.Context, r io.ReaderAt, opts CheckOptions) (*CheckReport, error) {
	var o []Option
	if opts.Size > 0 {
		o = append(o, WithSize(opts.Size))
	}
	if opts.Blobs != nil {
		o = append(o, WithBlobs(BlobResolverFunc(opts.Blobs.OpenBlob))) // hides Close
	}
	img, err := Open(r, o...)
	if err != nil {
		return &CheckReport{}, err
	}
	defer img.Close()
	c := &checker{
		ctx:        ctx,
		img:        img,
		opts:       opts,
		primaryEnd: int64(img.sb.Blocks) << img.blkBits,
		dirs:       make(map[uint64]string),
		files:      make(map[uint64]*fileRef),
		verified:   make(map[[2]uint64]bool),
		read:       make(map[int]*spanSet),
		decoded:    make(map[zdecodeKey]zdecoded),
	}
	err = c.run()
	return &c.rep, err
}

type checker struct {
	ctx        context.Context
	img        *Image
	opts       CheckOptions
	rep        CheckReport
	primaryEnd int64

	dirs     map[uint64]string   // directory nid -> path where it was found
	files    map[uint64]*fileRef // non-directory nid -> link accounting
	table    []ChunkDigest
	states   []sha256chain.State // the table's chunk states, if recorded
	hasTable bool
	verified map[[2]uint64]bool      // blob chunks whose digest was checked
	read     map[int]*spanSet        // device ranges already read (VerifyData)
	decoded  map[zdecodeKey]zdecoded // pcluster decodes already done (VerifyData)
	buf      []byte
	ents     []dirent
}

type fileRef struct {
	path  string
	nlink uint32
	refs  uint32
	ftype uint8
}

type dirWork struct {
	nid, parent uint64
	path        string
}

func (c *checker) run() error {
	img := c.img
	table, err := img.chunkTable()
	switch {
	case err == nil:
		c.table, c.hasTable = table, true
		if err := c.checkTableBlobs(); err != nil {
			return err
		}
		if _, err := img.StartSet(); err != nil && !errors.Is(err, ErrNoStartSet) {
			return err
		}
		switch c.states, err = img.ChunkStates(); {
		case errors.Is(err, ErrNoChunkStates):
		case err != nil:
			return err
		}
	case errors.Is(err, ErrNoChunkTable):
	default:
		return err
	}

	for _, m := range img.mapped {
		if m.start < c.primaryEnd {
			return corruptf("device %d is mapped at block %d, inside the primary's %d blocks", m.dev, m.start>>img.blkBits, img.sb.Blocks)
		}
	}
	if slots := c.inodeSlots(); img.sb.Inos > slots {
		return corruptf("superblock claims %d inodes, more than the %d 32-byte inode slots between meta_blkaddr %d and the image's %d blocks", img.sb.Inos, slots, img.sb.MetaBlkAddr, img.sb.Blocks)
	}

	root := img.root.nid
	c.dirs[root] = "/"
	stack := []dirWork{{nid: root, parent: root, path: "/"}}
	for len(stack) > 0 {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		w := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ino, err := img.inode(w.nid)
		if err != nil {
			return fmt.Errorf("%s: %w", w.path, err)
		}
		sub, err := c.checkDir(ino, w)
		if err != nil {
			return err
		}
		stack = append(stack, sub...)
	}

	nids := make([]uint64, 0, len(c.files))
	for nid := range c.files {
		nids = append(nids, nid)
	}
	slices.Sort(nids)
	for _, nid := range nids {
		f := c.files[nid]
		if f.refs != f.nlink {
			return corruptf("nid %d (%s): nlink %d but %d directory entries name it", nid, f.path, f.nlink, f.refs)
		}
	}
	c.rep.Inodes = c.rep.Dirs + len(c.files)
	packed, err := c.checkPacked()
	if err != nil {
		return err
	}
	// Distinct nids: hard links name one inode, which mkfs.erofs and
	// erofsd's builder count once; both count exactly the inodes
	// reachable from the root, and mkfs.erofs the packed inode too.
	if n := uint64(c.rep.Inodes); img.sb.Inos != n && (!packed || img.sb.Inos != n+1) {
		return corruptf("superblock claims %d inodes, %d are reachable from the root", img.sb.Inos, c.rep.Inodes)
	}
	// Last: a corrupt chunk is better named by the file reading it.
	return c.checkChunkStates()
}

// checkPacked checks the packed inode (fragments) when no directory
// names it, and reports whether there is such an inode.
func (c *checker) checkPacked() (bool, error) {
	nid := c.img.packedNid()
	if nid == 0 {
		return false, nil
	}
	if _, ok := c.dirs[nid]; ok {
		return false, nil
	}
	if _, ok := c.files[nid]; ok {
		return false, nil
	}
	ino, err := c.img.packedInode()
	if err != nil {
		return false, err
	}
	if err := c.checkInode(ino, "(packed inode)"); err != nil {
		return false, err
	}
	return true, nil
}

// inodeSlots returns how many inodes the image can hold: each takes at
// least one 32-byte slot between meta_blkaddr and the end of the blocks
// the superblock counts (Check requires every inode to lie there).
func (c *checker) inodeSlots() uint64 {
	if c.img.metaBase >= c.primaryEnd {
		return 0
	}
	return uint64(c.primaryEnd-c.img.metaBase) / disk.InodeSlotSize
}

// checkTableBlobs checks the chunk table against the blobs' real sizes.
func (c *checker) checkTableBlobs() error {
	if c.opts.Blobs == nil {
		return nil
	}
	for i := range c.table {
		e := &c.table[i]
		b, err := c.img.blob(int(e.Device))
		if err != nil {
			return err
		}
		end := int64(e.BlkAddr)<<c.img.blkBits + int64(e.Length)
		if b.size >= 0 && end > b.size {
			return corruptf("chunk table entry %d: device %d bytes [%d, %d) beyond blob end %d", i, e.Device, end-int64(e.Length), end, b.size)
		}
	}
	return nil
}

// checkDir checks a directory inode and its entries and returns the
// subdirectories to visit.
func (c *checker) checkDir(ino *inode, w dirWork) ([]dirWork, error) {
	img := c.img
	c.rep.Dirs++
	if err := c.checkInode(ino, w.path); err != nil {
		return nil, err
	}
	var sub []dirWork
	var dot, dotdot bool
	it := img.newDirIter(ino)
	for {
		if err := c.ctx.Err(); err != nil {
			return nil, err
		}
		ents, err := it.next()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.path, err)
		}
		if ents == nil {
			break
		}
		for _, e := range ents {
			switch {
			case bytes.Equal(e.name, []byte(".")):
				if e.nid != ino.nid || e.ftype != disk.FTDir {
					return nil, corruptf("directory nid %d (%s): \".\" names nid %d type %d", ino.nid, w.path, e.nid, e.ftype)
				}
				dot = true
				continue
			case bytes.Equal(e.name, []byte("..")):
				if e.nid != w.parent || e.ftype != disk.FTDir {
					return nil, corruptf("directory nid %d (%s): \"..\" names nid %d type %d, parent is nid %d", ino.nid, w.path, e.nid, e.ftype, w.parent)
				}
				dotdot = true
				continue
			}
			p := path.Join(w.path, string(e.name))
			if prev, ok := c.dirs[e.nid]; ok {
				return nil, corruptf("%s: directory nid %d is reachable twice (also at %s)", p, e.nid, prev)
			}
			if f := c.files[e.nid]; f != nil {
				if e.ftype != f.ftype {
					return nil, corruptf("%s: entry file type %d, inode nid %d has type %d", p, e.ftype, e.nid, f.ftype)
				}
				f.refs++
				continue
			}
			child, err := img.inode(e.nid)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if ft := ftypeOfMode(child.d.Mode); e.ftype != ft {
				return nil, corruptf("%s: entry file type %d, inode nid %d has type %d", p, e.ftype, e.nid, ft)
			}
			if child.isDir() {
				c.dirs[e.nid] = p
				sub = append(sub, dirWork{nid: e.nid, parent: ino.nid, path: p})
				continue
			}
			c.files[e.nid] = &fileRef{path: p, nlink: child.d.Nlink, refs: 1, ftype: e.ftype}
			if err := c.checkNonDir(child, p); err != nil {
				return nil, err
			}
		}
	}
	if !dot || !dotdot {
		return nil, corruptf("directory nid %d (%s): missing \".\" or \"..\"", ino.nid, w.path)
	}
	if want := 2 + uint64(len(sub)); uint64(ino.d.Nlink) != want {
		return nil, corruptf("directory nid %d (%s): nlink %d, want %d (2 + %d subdirectories)", ino.nid, w.path, ino.d.Nlink, want, len(sub))
	}
	return sub, nil
}

func (c *checker) checkNonDir(ino *inode, p string) error {
	switch {
	case ino.isReg():
		c.rep.Files++
		c.rep.DataBytes += ino.size
	case ino.isSymlink():
		c.rep.Symlinks++
	case ino.typ() == sIFCHR || ino.typ() == sIFBLK:
		c.rep.Devices++
	default:
		c.rep.Others++
	}
	if err := c.checkInode(ino, p); err != nil {
		return err
	}
	if ino.isSymlink() {
		if _, err := c.img.readlink(ino); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// checkInode checks what all inode types share: layout, xattrs and the
// data mapping.
func (c *checker) checkInode(ino *inode, p string) error {
	img := c.img
	if ino.d.Extended() && ino.d.Reserved06 != 0 {
		return corruptf("nid %d (%s): reserved field at 0x06 is %#x (newer kernels read it as address bits)", ino.nid, p, ino.d.Reserved06)
	}
	if end := ino.tailOff(); end > c.primaryEnd {
		return corruptf("nid %d (%s): inode and xattrs [%d, %d) beyond the image's %d blocks", ino.nid, p, ino.off, end, img.sb.Blocks)
	}
	layout := ino.layout()
	if ino.isSpecial() {
		if layout != disk.LayoutFlatPlain && layout != disk.LayoutFlatInline {
			return corruptf("nid %d (%s): special file with layout %d", ino.nid, p, layout)
		}
		if ino.size != 0 {
			return corruptf("nid %d (%s): special file with i_size %d", ino.nid, p, ino.size)
		}
	}
	if ino.isSymlink() && (ino.size == 0 || ino.size > maxSymlinkSize) {
		return corruptf("nid %d (%s): symlink target length %d", ino.nid, p, ino.size)
	}
	if ino.isDir() && ino.size == 0 {
		return corruptf("nid %d (%s): empty directory (no \".\" and \"..\")", ino.nid, p)
	}
	xi, err := img.readXattrs(ino)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	c.rep.Xattrs += len(xi.attrs)
	for i, id := range xi.shared {
		if slices.Contains(xi.shared[:i], id) {
			return corruptf("nid %d (%s): shared xattr id %d listed twice", ino.nid, p, id)
		}
	}
	if ino.isSpecial() {
		return nil
	}
	switch {
	case layout == disk.LayoutChunkBased:
		return c.checkChunks(ino, p)
	case ino.compressed():
		return c.checkCompressed(ino, p)
	}
	return c.checkFlat(ino, p)
}

// checkRange checks a device range: blockLen bytes (whole blocks) must be
// inside the device as the image describes it, dataLen bytes inside the
// blob actually supplied.
func (c *checker) checkRange(dev int, start, blockLen, dataLen int64) error {
	end := start + blockLen
	if dev == 0 {
		if end > c.primaryEnd {
			return corruptf("blocks [%d, %d) beyond the image's %d blocks", start>>c.img.blkBits, (end+c.img.blkSize-1)>>c.img.blkBits, c.img.sb.Blocks)
		}
		return nil
	}
	if lim := c.img.devLimit(dev); lim >= 0 && end > lim {
		return corruptf("device %d blocks [%d, %d) beyond its %d blocks", dev, start>>c.img.blkBits, (end+c.img.blkSize-1)>>c.img.blkBits, c.img.slots[dev-1].Blocks)
	}
	if c.opts.Blobs != nil {
		b, err := c.img.blob(dev)
		if err != nil {
			return err
		}
		if b.size >= 0 && start+dataLen > b.size {
			return corruptf("device %d bytes [%d, %d) beyond blob end %d", dev, start, start+dataLen, b.size)
		}
	}
	return nil
}

func (c *checker) roundBlock(n int64) int64 {
	return (n + c.img.blkSize - 1) &^ (c.img.blkSize - 1)
}

func (c *checker) checkFlat(ino *inode, p string) error {
	exts, err := c.img.flatExtents(ino)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	for i := range exts {
		e := &exts[i]
		if e.inline {
			if e.pstart+e.llen > c.primaryEnd {
				return corruptf("nid %d (%s): inline data [%d, %d) beyond the image's %d blocks", ino.nid, p, e.pstart, e.pstart+e.llen, c.img.sb.Blocks)
			}
		} else if err := c.checkRange(e.dev, e.pstart, c.roundBlock(e.llen), e.llen); err != nil {
			return fmt.Errorf("nid %d (%s): %w", ino.nid, p, err)
		}
		if c.opts.VerifyData {
			if err := c.readRange(e.dev, e.pstart, e.llen); err != nil {
				return fmt.Errorf("nid %d (%s): %w", ino.nid, p, err)
			}
		}
	}
	return nil
}

func (c *checker) checkChunks(ino *inode, p string) error {
	img := c.img
	cl, err := img.chunkLayout(ino)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if end := cl.base + cl.count*cl.unit; end > c.primaryEnd {
		return corruptf("nid %d (%s): chunk array [%d, %d) beyond the image's %d blocks", ino.nid, p, cl.base, end, img.sb.Blocks)
	}
	var batch [maxChunkBatch]chunkEntry
	for k := int64(0); k < cl.count; {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n := min(cl.count-k, maxChunkBatch)
		if err := img.readChunkEntries(ino, &cl, k, batch[:n]); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for i := int64(0); i < n; i++ {
			if err := c.checkChunk(ino, &cl, k+i, batch[i]); err != nil {
				return fmt.Errorf("nid %d (%s) chunk %d: %w", ino.nid, p, k+i, err)
			}
		}
		k += n
	}
	return nil
}

func (c *checker) checkChunk(ino *inode, cl *chunkLayout, k int64, e chunkEntry) error {
	img := c.img
	c.rep.Chunks++
	if e.hole {
		c.rep.HoleChunks++
		return nil
	}
	ext, err := img.chunkExtent(ino, cl, k, e)
	if err != nil {
		return err
	}
	dataLen := ext.llen
	blockLen := c.roundBlock(dataLen)
	if err := c.checkRange(ext.dev, ext.pstart, blockLen, dataLen); err != nil {
		return err
	}
	if ext.dev == 0 {
		if c.opts.VerifyData {
			return c.readRange(0, ext.pstart, dataLen)
		}
		return nil
	}
	blk := uint64(ext.pstart >> img.blkBits)
	if c.hasTable {
		if blk > 1<<32-1 {
			return corruptf("device %d block %d out of range", ext.dev, blk)
		}
		d, err := dataEntry(c.table, ext.dev, ext.pstart, dataLen, img.blkBits)
		if err != nil {
			return err
		}
		if !c.opts.VerifyData || c.opts.Blobs == nil {
			return nil
		}
		key := [2]uint64{uint64(ext.dev), uint64(d.BlkAddr)}
		if c.verified[key] {
			return nil
		}
		if err := c.verifyDigest(d); err != nil {
			return err
		}
		c.verified[key] = true
		c.rep.ChunksVerified++
		return nil
	}
	if c.opts.VerifyData && c.opts.Blobs != nil {
		return c.readRange(ext.dev, ext.pstart, dataLen)
	}
	return nil
}

const checkBufSize = 1 << 20

func (c *checker) buffer() []byte {
	if c.buf == nil {
		c.buf = make([]byte, checkBufSize)
	}
	return c.buf
}

// readRange reads [start, start+n) of device dev, skipping parts read
// before.
func (c *checker) readRange(dev int, start, n int64) error {
	ss := c.read[dev]
	if ss == nil {
		ss = &spanSet{}
		c.read[dev] = ss
	}
	buf := c.buffer()
	for _, sp := range ss.missing(start, start+n) {
		for off := sp.start; off < sp.end; {
			if err := c.ctx.Err(); err != nil {
				return err
			}
			m := min(int64(len(buf)), sp.end-off)
			if err := c.img.readDev(dev, buf[:m], off); err != nil {
				return err
			}
			off += m
		}
	}
	ss.add(start, start+n)
	return nil
}

// checkChunkStates hashes, with VerifyData and Blobs, each blob whose
// chunks record states, comparing each state with sha256's there, and
// the whole blob's sha256 with its tag when the last chunk has a state
// (the step a daemon checks last).
func (c *checker) checkChunkStates() error {
	states := c.states
	if states == nil || !c.opts.VerifyData || c.opts.Blobs == nil {
		return nil
	}
	var h hash.Hash
	var pos int64 // hashed so far of the current device
	for i, e := range c.table {
		if i == 0 || e.Device != c.table[i-1].Device {
			h, pos = sha256.New(), 0
		}
		if states[i] == (sha256chain.State{}) {
			continue
		}
		start := int64(e.BlkAddr) << c.img.blkBits
		if err := c.hashDev(h, int(e.Device), pos, start); err != nil {
			return err
		}
		pos = max(pos, start)
		if got, err := sha256chain.Of(h); err != nil || got != states[i] {
			return corruptf("chunk states: device %d block %d: recorded %x, the blob's is %x", e.Device, e.BlkAddr, states[i], got)
		}
		if i+1 == len(c.table) || c.table[i+1].Device != e.Device {
			if err := c.checkBlobEnd(h, int(e.Device), pos); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkBlobEnd hashes the rest of device dev's blob from pos into h and
// compares the sha256 with the device's tag, if the tag is a digest and
// the blob's size is known.
func (c *checker) checkBlobEnd(h hash.Hash, dev int, pos int64) error {
	tag := c.img.slots[dev-1].TagString()
	want, err := hex.DecodeString(tag)
	if err != nil || len(want) != sha256.Size {
		return nil
	}
	b, err := c.img.blob(dev)
	if err != nil {
		return err
	}
	if b.size < 0 {
		return nil
	}
	if err := c.hashDev(h, dev, pos, b.size); err != nil {
		return err
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return corruptf("chunk states: device %d: the blob's sha256 is %x, not its tag %s", dev, got, tag)
	}
	return nil
}

// hashDev writes bytes [from, to) of device dev to h.
func (c *checker) hashDev(h hash.Hash, dev int, from, to int64) error {
	buf := c.buffer()
	for off := from; off < to; {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		m := min(int64(len(buf)), to-off)
		if err := c.img.readDev(dev, buf[:m], off); err != nil {
			return err
		}
		h.Write(buf[:m])
		off += m
	}
	return nil
}

// verifyDigest reads a blob chunk and compares its sha256 with the table.
func (c *checker) verifyDigest(d *ChunkDigest) error {
	h := sha256.New()
	start := int64(d.BlkAddr) << c.img.blkBits
	if err := c.hashDev(h, int(d.Device), start, start+int64(d.Length)); err != nil {
		return err
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if sum != d.Digest {
		return &ChunkDigestError{Device: int(d.Device), BlkAddr: d.BlkAddr, Length: d.Length, Want: d.Digest, Got: sum}
	}
	return nil
}
