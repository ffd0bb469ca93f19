package build

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// Finish lays out the metadata, writes it and the superblock, finishes the
// blob (if any) and returns a summary. The Builder cannot be used after.
func (b *Builder) Finish(ctx context.Context) (res *Result, err error) {
	if b.finished {
		return nil, errFinished
	}
	defer func() {
		if err != nil {
			b.Abort()
		}
		b.finished = true
	}()
	// Compressed data still in the pipeline is placed first.
	if err := b.zdrain(ctx); err != nil {
		return nil, err
	}
	if b.zpipe != nil {
		b.zpipe.stop()
	}
	if err := b.data.flush(); err != nil {
		return nil, fmt.Errorf("writing image: %w", err)
	}
	// Blobs first: the device table needs their digests and sizes.
	var slots []disk.DeviceSlot
	var table []disk.ChunkEntry
	for _, bl := range b.blobs {
		if bl.digest == "" {
			if _, _, err := bl.finish(); err != nil {
				return nil, err
			}
		}
		var slot disk.DeviceSlot
		copy(slot.Tag[:], bl.digest)
		slot.Blocks = uint32(bl.size / blockSize)
		slots = append(slots, slot)
		table = append(table, bl.table...)
	}
	b.blob = nil
	if b.blobMode() {
		b.headBlocks = uint64(disk.AlignUp(b.devtSlotOff()*disk.DeviceSlotSize+len(slots)*disk.DeviceSlotSize, blockSize) / blockSize)
		b.data.next = b.headBlocks // no file data in the image itself
	}

	order, dents := orderNodes(b.tree.root)
	b.relocateBack(order)
	for _, n := range order {
		if n.data.z != nil {
			n.data.z.resolve()
		}
		if l := n.data.packed; l != nil {
			n.data.chunks = []chunkRef{{dev: l.pack.ref.dev, blk: l.pack.ref.blk + l.blk}}
			n.data.packed = nil
		}
	}
	if len(order) > 1<<32-2 {
		return nil, fmt.Errorf("%w: %d inodes", ErrTooLarge, len(order))
	}
	buildTime, buildNsec := b.buildTime(order)
	res = &Result{Inodes: len(order), BuildTime: time.Unix(buildTime, int64(buildNsec)).UTC()}

	// Decide every inode's shape, then place them.
	shared := buildSharedXattrs(order)
	for _, n := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var dsize uint64
		if n.isDir() {
			dsize = dirSize(dents[n])
		}
		if err := b.planInode(n, shared, buildTime, buildNsec, dsize); err != nil {
			return nil, err
		}
		switch {
		case n.isDir():
			res.Dirs++
		case n.isReg():
			res.Files++
		case n.isLink():
			res.Symlinks++
		default:
			res.Others++
		}
	}
	metaSize, err := placeInodes(order)
	if err != nil {
		return nil, err
	}

	// Directory and symlink data: the full blocks go to the block area
	// right after the file data, the tail stays inline.
	mw := newBlockWriter(io.NewOffsetWriter(b.out, int64(b.data.next)*blockSize), b.data.next, nil)
	uuidHash := sha256.New()
	for _, n := range order {
		var data []byte
		switch {
		case n.isDir():
			data = encodeDir(dents[n], n.size)
		case n.isLink():
			data = []byte(n.link)
		default:
			continue
		}
		full := len(data)
		if n.layout == disk.LayoutFlatInline {
			full -= len(data) % blockSize
			n.inline = data[full:]
		}
		if full > 0 {
			blk, err := mw.write(data[:full])
			if err != nil {
				return nil, fmt.Errorf("writing directory data: %w", err)
			}
			n.blkaddr = uint32(blk)
			uuidHash.Write(data[:full])
		}
	}

	// Shared xattrs, then the inode area.
	var xattrBlk uint64
	if len(shared.area) > 0 {
		if xattrBlk, err = mw.write(shared.area); err != nil {
			return nil, fmt.Errorf("writing shared xattrs: %w", err)
		}
	}
	// Compressed pclusters in blobs are addressed through the unified
	// address space: each blob is mapped right after the image's own
	// blocks (which end with the inode area), in device order.
	devBase := make([]uint32, len(slots)+1)
	if b.z != nil && len(slots) > 0 {
		next := mw.next + uint64(metaSize/blockSize)
		for i := range slots {
			if next+uint64(slots[i].Blocks) > disk.NullAddr {
				return nil, fmt.Errorf("%w: blobs end beyond block 2^32-1 of the unified address space", ErrTooLarge)
			}
			slots[i].MappedBlkAddr = uint32(next)
			devBase[i+1] = uint32(next)
			next += uint64(slots[i].Blocks)
		}
	}
	meta := make([]byte, metaSize)
	for _, n := range order {
		if err := b.encodeInode(meta, n, buildTime, devBase); err != nil {
			return nil, err
		}
	}
	metaBlk, err := mw.write(meta)
	if err != nil {
		return nil, fmt.Errorf("writing inodes: %w", err)
	}
	if err := mw.flush(); err != nil {
		return nil, fmt.Errorf("writing image: %w", err)
	}
	totalBlocks := mw.next
	uuidHash.Write(shared.area)
	uuidHash.Write(meta)

	// Chunk digest table.
	for _, bl := range b.blobs {
		res.Blobs = append(res.Blobs, BlobInfo{Digest: bl.digest, Size: bl.size, Layer: bl.layer})
		uuidHash.Write([]byte(bl.digest))
	}
	var tableBytes []byte
	if len(table) > 0 {
		slices.SortFunc(table, func(a, b disk.ChunkEntry) int {
			switch {
			case a.Less(&b):
				return -1
			case b.Less(&a):
				return 1
			}
			return 0
		})
		tableBytes = encodeChunkTable(table)
		if b.start != nil {
			tableBytes = append(tableBytes, encodeStartSet(b.blobs)...)
		}
		tableBytes = append(tableBytes, b.encodeChunkStates(table)...)
		if _, err := b.out.WriteAt(tableBytes, int64(totalBlocks)*blockSize); err != nil {
			return nil, fmt.Errorf("writing chunk table: %w", err)
		}
	}
	binary.Write(uuidHash, binary.LittleEndian, b.dataCRC)

	// Superblock, device table, checksum.
	sb := disk.Superblock{
		FeatureCompat: disk.CompatSuperChecksum | disk.CompatMtime,
		BlkSzBits:     blockSizeBits,
		RootNid:       uint16(order[0].nid),
		Inos:          uint64(len(order)),
		BuildTime:     uint64(buildTime),
		BuildTimeNsec: buildNsec,
		Blocks:        uint32(totalBlocks),
		MetaBlkAddr:   uint32(metaBlk),
		XattrBlkAddr:  uint32(xattrBlk),
		ExtraDevices:  uint16(len(slots)),
	}
	copy(sb.VolumeName[:], b.opts.Label)
	if b.opts.UUID != nil {
		sb.UUID = *b.opts.UUID
	} else {
		h := uuidHash.Sum(nil)
		copy(sb.UUID[:], h)
		sb.UUID[6] = sb.UUID[6]&0x0f | 0x80 // RFC 9562 version 8 (custom)
		sb.UUID[8] = sb.UUID[8]&0x3f | 0x80
	}
	for _, n := range order {
		if n.layout == disk.LayoutChunkBased {
			sb.FeatureIncompat |= disk.IncompatChunkedFile
			break
		}
	}
	if len(slots) > 0 {
		sb.FeatureIncompat |= disk.IncompatDeviceTable
		sb.DevtSlotOff = uint16(b.devtSlotOff())
	}
	head := make([]byte, b.headBlocks*blockSize)
	if b.z != nil {
		if err := b.zsuper(&sb, head, order); err != nil {
			return nil, err
		}
	}
	sb.Encode(head[disk.SuperOffset:])
	for i := range slots {
		slots[i].Encode(head[int(sb.DevtSlotOff)*disk.DeviceSlotSize+i*disk.DeviceSlotSize:])
	}
	sb.Checksum = disk.SuperChecksum(head[:blockSize])
	binary.LittleEndian.PutUint32(head[disk.SuperOffset+4:], sb.Checksum)
	if _, err := b.out.WriteAt(head, 0); err != nil {
		return nil, fmt.Errorf("writing superblock: %w", err)
	}

	res.DataBytes = b.stats.bytes
	res.ImageSize = int64(totalBlocks)*blockSize + int64(len(tableBytes))
	res.Chunks = b.stats.chunks
	res.UniqueChunk = b.stats.unique
	res.DedupeSaved = b.stats.dedupeSaved
	res.HoleBytes = b.stats.holeBytes
	res.CompressedFiles = b.stats.zfiles
	res.InlineTails = b.stats.zinline
	res.ExtentDedupeSaved = b.stats.zdedupeSaved
	res.UUID = sb.UUID
	return res, nil
}

// buildTime returns the configured build time, or the newest mtime in
// the tree so that the default is reproducible.
func (b *Builder) buildTime(order []*node) (int64, uint32) {
	if !b.opts.BuildTime.IsZero() {
		return b.opts.BuildTime.Unix(), uint32(b.opts.BuildTime.Nanosecond())
	}
	var sec int64
	var nsec uint32
	for i, n := range order {
		if i == 0 || n.mtime > sec || (n.mtime == sec && n.nsec > nsec) {
			sec, nsec = n.mtime, n.nsec
		}
	}
	if sec < 0 {
		sec, nsec = 0, 0
	}
	return sec, nsec
}

// relocateBack points the chunk references into blobs' scratch segments
// at their final blocks: the front's where assemble put them, the back's
// after the front.
func (b *Builder) relocateBack(order []*node) {
	if b.start == nil {
		return
	}
	for _, p := range b.zpacks {
		p.ref = b.relocate(p.ref)
	}
	for _, n := range order {
		for i, ref := range n.data.chunks {
			n.data.chunks[i] = b.relocate(ref)
		}
	}
}

// relocate returns where a chunk reference into a blob's scratch segment
// ended up.
func (b *Builder) relocate(ref chunkRef) chunkRef {
	switch {
	case ref.front:
		return chunkRef{dev: ref.dev, blk: b.blobs[ref.dev-1].frontMap[ref.blk]}
	case ref.back:
		return chunkRef{dev: ref.dev, blk: ref.blk + b.blobs[ref.dev-1].frontBlocks}
	}
	return ref
}

// encodeChunkStates encodes each chunk's blob state before it, in the
// order of the table.
func (b *Builder) encodeChunkStates(table []disk.ChunkEntry) []byte {
	return disk.EncodeSection(disk.ChunkStatesMagic, disk.ChunkStatesVersion, disk.ChunkStatesEntrySize, len(table),
		func(i int, out []byte) {
			e := table[i]
			st := b.blobs[e.DeviceID-1].bw.states[uint64(e.BlkAddr)] // zero: not recorded
			copy(out, st[:])
		})
}

// encodeChunkTable encodes the chunk digest table, whose entries must be
// sorted.
func encodeChunkTable(entries []disk.ChunkEntry) []byte {
	return disk.EncodeSection(disk.ChunkTableMagic, disk.ChunkTableVersion, disk.ChunkTableEntrySize, len(entries),
		func(i int, b []byte) { entries[i].Encode(b) })
}
