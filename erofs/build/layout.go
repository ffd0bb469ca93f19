package build

import (
	"encoding/binary"
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"golang.org/x/sys/unix"
)

// dentry is one directory entry during layout.
type dentry struct {
	name string
	n    *node
}

// orderNodes walks the tree depth first in name order and returns every
// node once, the root first. It also fills in nlink and each directory's
// sorted entries.
func orderNodes(root *node) ([]*node, map[*node][]dentry) {
	var order []*node
	seen := map[*node]bool{}
	dents := map[*node][]dentry{}
	var visit func(dir, parent *node)
	visit = func(dir, parent *node) {
		names := dir.sortedNames()
		ents := make([]dentry, 0, len(names)+2)
		ents = append(ents, dentry{".", dir}, dentry{"..", parent})
		subdirs := uint32(0)
		var children []*node
		for _, name := range names {
			c := dir.entries[name]
			ents = append(ents, dentry{name, c})
			if c.isDir() {
				subdirs++
				children = append(children, c)
				continue
			}
			c.nlink++
			if !seen[c] {
				seen[c] = true
				order = append(order, c)
			}
		}
		sortDentries(ents)
		dents[dir] = ents
		dir.nlink = 2 + subdirs
		for _, c := range children {
			order = append(order, c)
			visit(c, dir)
		}
	}
	order = append(order, root)
	visit(root, root)
	return order, dents
}

// sortDentries puts "." and ".." in their bytewise place among the others.
func sortDentries(ents []dentry) {
	// Names other than "." and ".." are already sorted; both dots sort
	// before any other name that starts with a byte above '.', so an
	// insertion pass suffices.
	for i := 1; i < len(ents); i++ {
		for j := i; j > 0 && ents[j].name < ents[j-1].name; j-- {
			ents[j], ents[j-1] = ents[j-1], ents[j]
		}
	}
}

// dirSize returns the directory's i_size when its entries are packed into
// blocks like the kernel expects: entries never straddle blocks.
func dirSize(ents []dentry) uint64 {
	var size uint64
	used := 0
	for _, e := range ents {
		need := disk.DirentSize + len(e.name)
		if used+need > blockSize {
			size += blockSize
			used = 0
		}
		used += need
	}
	return size + uint64(used)
}

// encodeDir produces the directory's data (i_size bytes; full blocks are
// zero padded after their last name).
func encodeDir(ents []dentry, size uint64) []byte {
	out := make([]byte, size)
	blockStart := 0
	for i := 0; i < len(ents); {
		// Find how many entries fit in this block.
		used, j := 0, i
		for j < len(ents) && used+disk.DirentSize+len(ents[j].name) <= blockSize {
			used += disk.DirentSize + len(ents[j].name)
			j++
		}
		blk := out[blockStart:min(blockStart+blockSize, len(out))]
		nameOff := (j - i) * disk.DirentSize
		for k := i; k < j; k++ {
			d := disk.Dirent{Nid: ents[k].n.nid, NameOff: uint16(nameOff), FileType: fileType(ents[k].n.mode)}
			d.Encode(blk[(k-i)*disk.DirentSize:])
			nameOff += copy(blk[nameOff:], ents[k].name)
		}
		i = j
		blockStart += blockSize
	}
	return out
}

// planInode decides an inode's format, layout, inline data and the size
// of everything that follows it in the metadata area.
func (b *Builder) planInode(n *node, shared *sharedXattrs, buildTime int64, buildNsec uint32, dirData uint64) error {
	body, err := shared.encodeIBody(n.xattr)
	if err != nil {
		return err
	}
	n.xattrBody = body
	n.extended = n.size > 0xFFFFFFFF || n.uid > 0xFFFF || n.gid > 0xFFFF || n.nlink > 0xFFFF ||
		n.mtime != buildTime || n.nsec != buildNsec
	isize := disk.CompactInodeSize
	if n.extended {
		isize = disk.ExtendedInodeSize
	}
	head := isize + len(body)
	n.layout = disk.LayoutFlatPlain
	n.blkaddr = disk.NullAddr
	switch {
	case n.isDir() || n.isLink():
		if n.isDir() {
			n.size = dirData
		} else {
			n.size = uint64(len(n.link))
		}
		tail := int(n.size % blockSize)
		if tail != 0 && head+tail <= blockSize {
			n.layout = disk.LayoutFlatInline
			n.isize = head + tail
		} else {
			n.isize = head
		}
	case n.isReg() && n.data.flat:
		n.blkaddr = n.data.blkaddr
		if len(n.data.tail) > 0 {
			if head+len(n.data.tail) > blockSize {
				// Only possible if ingest's worst case was wrong.
				return fmt.Errorf("internal error: inline tail of %d bytes does not fit", len(n.data.tail))
			}
			n.layout = disk.LayoutFlatInline
			n.inline = n.data.tail
		}
		n.isize = head + len(n.inline)
	case n.isReg() && n.data.z != nil:
		var err error
		if n.layout, n.isize, err = n.data.z.plan(head, b.z.big()); err != nil {
			return fmt.Errorf("planning a compressed inode: %w", err)
		}
	case n.isReg():
		n.layout = disk.LayoutChunkBased
		unit := 4
		if b.blobMode() {
			unit = disk.ChunkIndexSize
		}
		n.isize = disk.AlignUp(head, unit) + unit*len(n.data.chunks)
	default:
		n.isize = head
	}
	return nil
}

// placeInodes assigns nids. Each inode, with its xattrs and inline data,
// goes into the partly used metadata block whose free space fits it most
// tightly (best fit, as mkfs.erofs does), so inline tails waste little
// space; an inode with inline data never crosses a block boundary.
func placeInodes(order []*node) (metaSize int, err error) {
	var a metaAlloc
	for i, n := range order {
		pos := a.alloc(n.isize)
		n.nid = uint64(pos / disk.InodeSlotSize)
		n.ino = uint32(i + 1)
	}
	if order[0].nid != 0 {
		return 0, fmt.Errorf("internal error: root nid %d", order[0].nid)
	}
	return a.blocks * blockSize, nil
}

const slotsPerBlock = blockSize / disk.InodeSlotSize

// metaAlloc hands out slot-aligned space in the metadata area.
type metaAlloc struct {
	blocks int
	fill   map[int]int              // block -> bytes used, for partly used blocks
	free   [slotsPerBlock + 1][]int // free slots -> partly used blocks
}

func (a *metaAlloc) alloc(size int) int {
	slots := (size + disk.InodeSlotSize - 1) / disk.InodeSlotSize
	if a.fill == nil {
		a.fill = map[int]int{}
	}
	for k := slots; k <= slotsPerBlock && slots > 0; k++ {
		if l := len(a.free[k]); l > 0 {
			blk := a.free[k][l-1]
			a.free[k] = a.free[k][:l-1]
			pos := blk*blockSize + a.fill[blk]
			a.fill[blk] += slots * disk.InodeSlotSize
			a.release(blk)
			return pos
		}
	}
	// Start fresh blocks; the last one's unused part becomes free space.
	blk := a.blocks
	need := max(1, (slots+slotsPerBlock-1)/slotsPerBlock)
	a.blocks += need
	last := blk + need - 1
	a.fill[last] = slots*disk.InodeSlotSize - (need-1)*blockSize
	a.release(last)
	return blk * blockSize
}

// release files a partly used block under its free space.
func (a *metaAlloc) release(blk int) {
	freeSlots := (blockSize - a.fill[blk]) / disk.InodeSlotSize
	if freeSlots == 0 {
		delete(a.fill, blk)
		return
	}
	a.free[freeSlots] = append(a.free[freeSlots], blk)
}

// encodeInode writes n's inode, xattrs and inline data, chunk indexes or
// compressed index into meta at its nid. devBase maps a device to the
// start of its blocks in the unified address space.
func (b *Builder) encodeInode(meta []byte, n *node, buildTime int64, devBase []uint32) error {
	off := int(n.nid) * disk.InodeSlotSize
	in := disk.Inode{
		Format:      n.layout << 1,
		XattrICount: disk.XattrICount(len(n.xattrBody)),
		Mode:        uint16(n.mode),
		Nlink:       n.nlink,
		Size:        n.size,
		U:           n.blkaddr,
		Ino:         n.ino,
		UID:         n.uid,
		GID:         n.gid,
	}
	if n.extended {
		in.Format |= 1
		in.Mtime, in.MtimeNsec = uint64(n.mtime), n.nsec
	} else {
		in.Mtime = uint64(n.mtime - buildTime) // 0: compact only when equal
	}
	switch n.mode & unix.S_IFMT {
	case unix.S_IFCHR, unix.S_IFBLK:
		in.U = disk.EncodeRdev(unix.Major(n.rdev), unix.Minor(n.rdev))
	case unix.S_IFIFO, unix.S_IFSOCK:
		in.U = 0
	}
	z := n.data.z
	if z != nil && n.isReg() {
		in.U = z.compressedBlocks()
	}
	if n.layout == disk.LayoutChunkBased {
		f := uint32(n.data.chunkBits)
		if b.blobMode() {
			f |= disk.ChunkFormatIndexes
		}
		in.U = f
	}
	in.Encode(meta[off:])
	p := off + in.OnDiskSize()
	p += copy(meta[p:], n.xattrBody)
	switch n.layout {
	case disk.LayoutCompressedFull, disk.LayoutCompressedCompact:
		if err := z.encode(meta[p:off+n.isize], p-off, b.z, devBase); err != nil {
			return fmt.Errorf("encoding a compressed inode: %w", err)
		}
	case disk.LayoutFlatInline:
		copy(meta[p:], n.inline)
	case disk.LayoutChunkBased:
		if b.blobMode() {
			p = disk.AlignUp(p, disk.ChunkIndexSize)
			for _, c := range n.data.chunks {
				ci := disk.ChunkIndex{DeviceID: c.dev, BlkAddr: c.blk}
				ci.Encode(meta[p:])
				p += disk.ChunkIndexSize
			}
		} else {
			p = disk.AlignUp(p, 4)
			for _, c := range n.data.chunks {
				binary.LittleEndian.PutUint32(meta[p:], c.blk)
				p += 4
			}
		}
	}
	return nil
}
