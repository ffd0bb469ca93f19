package erofs

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// ChunkDigest is one entry of erofsd's chunk digest table: the chunk
// starting at block BlkAddr of extra device Device (1..N) holds Length
// bytes (zero padded to whole blocks) whose sha256 is Digest.
type ChunkDigest struct {
	Device  uint16
	BlkAddr uint32
	Length  uint32
	Digest  [32]byte
}

// ChunkTable decodes and validates the chunk digest table stored after
// the last block the superblock counts. It returns ErrNoChunkTable if the
// image has none. The table's entry count is checked against the image
// size before anything is allocated; the entries' sha256 must match the
// header, entries must name existing devices, be sorted by (device,
// block), not overlap, and lie inside their device's block count.
func (img *Image) ChunkTable() ([]ChunkDigest, error) {
	if err := img.checkOpen(); err != nil {
		return nil, err
	}
	img.ctMu.Lock()
	defer img.ctMu.Unlock()
	if !img.ctDone {
		img.ct, img.ctErr = img.loadChunkTable()
		if img.ctErr == nil || errors.Is(img.ctErr, ErrCorrupt) || errors.Is(img.ctErr, ErrNoChunkTable) || errors.Is(img.ctErr, ErrUnsupported) {
			img.ctDone = true
		}
	}
	if img.ctErr != nil {
		return nil, img.ctErr
	}
	return slices.Clone(img.ct), nil
}

// chunkTable returns the cached table without copying (nil if absent).
func (img *Image) chunkTable() ([]ChunkDigest, error) {
	if _, err := img.ChunkTable(); err != nil {
		return nil, err
	}
	return img.ct, nil
}

// chunkBatch is the number of table entries read at once.
const chunkBatch = 1024

// sectionHeader reads the header of one of erofsd's sections at off
// (decode says which), and checks that its entries fit in the image. An
// image that ends before a whole header, or has another magic there,
// gives absent.
func (img *Image) sectionHeader(off int64, decode func([]byte) (disk.SectionHeader, error), absent error, what string) (disk.SectionHeader, error) {
	var h disk.SectionHeader
	if img.size >= 0 && off+disk.SectionHeaderSize > img.size {
		return h, absent
	}
	var hb [disk.SectionHeaderSize]byte
	n, err := img.r.ReadAt(hb[:], off)
	if n < len(hb) {
		if err == nil || errors.Is(err, io.EOF) {
			return h, absent
		}
		return h, fmt.Errorf("erofs: %s header at byte %d: %w", what, off, err)
	}
	h, err = decode(hb[:])
	if errors.Is(err, absent) {
		return h, err
	}
	if err != nil {
		return h, fmt.Errorf("%w: %s at byte %d: %w", ErrUnsupported, what, off, err)
	}
	start := off + disk.SectionHeaderSize
	if img.size >= 0 && h.Count > uint64(img.size-start)/uint64(h.EntrySize) {
		return h, corruptf("%s at byte %d: %d entries do not fit in the %d bytes left", what, off, h.Count, img.size-start)
	}
	return h, nil
}

func (img *Image) loadChunkTable() ([]ChunkDigest, error) {
	off := int64(img.sb.Blocks) << img.blkBits
	h, err := img.sectionHeader(off, disk.DecodeChunkTableHeader, ErrNoChunkTable, "chunk table")
	if err != nil {
		return nil, err
	}
	start := off + disk.ChunkTableHeaderSize
	if h.Count > (1<<63-1-uint64(start))/disk.ChunkTableEntrySize {
		return nil, corruptf("chunk table at byte %d: entry count %d too large", off, h.Count)
	}
	count := int64(h.Count)
	table := make([]ChunkDigest, 0, min(count, chunkBatch))
	sum := sha256.New()
	buf := make([]byte, min(count, chunkBatch)*disk.ChunkTableEntrySize)
	var prev *ChunkDigest
	for i := int64(0); i < count; {
		m := min(count-i, chunkBatch)
		b := buf[:m*disk.ChunkTableEntrySize]
		if err := readFull(img.r, b, start+i*disk.ChunkTableEntrySize); err != nil {
			return nil, fmt.Errorf("chunk table entries: %w", err)
		}
		sum.Write(b)
		for j := int64(0); j < m; j++ {
			e, err := disk.DecodeChunkEntry(b[j*disk.ChunkTableEntrySize:])
			if err != nil {
				return nil, fmt.Errorf("%w: chunk table entry %d: %w", ErrCorrupt, i+j, err)
			}
			cd := ChunkDigest{Device: e.DeviceID, BlkAddr: e.BlkAddr, Length: e.Length, Digest: e.Digest}
			if err := img.checkChunkDigest(&cd, prev); err != nil {
				return nil, fmt.Errorf("chunk table entry %d: %w", i+j, err)
			}
			table = append(table, cd)
			prev = &table[len(table)-1]
		}
		i += m
	}
	if got := sum.Sum(nil); [32]byte(got) != h.EntryDigest {
		return nil, corruptf("chunk table at byte %d: entries sha256 %x, header says %x", off, got, h.EntryDigest)
	}
	return table, nil
}

// chunkBlocks returns the number of blocks a chunk of length bytes uses.
func (img *Image) chunkBlocks(length uint32) uint64 {
	return (uint64(length) + uint64(img.blkSize) - 1) >> img.blkBits
}

func (img *Image) checkChunkDigest(cd, prev *ChunkDigest) error {
	if cd.Device == 0 || int(cd.Device) > len(img.slots) {
		return corruptf("device %d not in 1..%d", cd.Device, len(img.slots))
	}
	if cd.Length == 0 {
		return corruptf("device %d block %d: zero length", cd.Device, cd.BlkAddr)
	}
	end := uint64(cd.BlkAddr) + img.chunkBlocks(cd.Length)
	if blocks := img.slots[cd.Device-1].Blocks; blocks != 0 && end > uint64(blocks) {
		return corruptf("device %d blocks [%d, %d) beyond the device's %d blocks", cd.Device, cd.BlkAddr, end, blocks)
	}
	if prev == nil {
		return nil
	}
	if cd.Device < prev.Device || cd.Device == prev.Device && cd.BlkAddr <= prev.BlkAddr {
		return corruptf("device %d block %d not sorted after device %d block %d", cd.Device, cd.BlkAddr, prev.Device, prev.BlkAddr)
	}
	if cd.Device == prev.Device && uint64(prev.BlkAddr)+img.chunkBlocks(prev.Length) > uint64(cd.BlkAddr) {
		return corruptf("device %d block %d overlaps the chunk at block %d (%d bytes)", cd.Device, cd.BlkAddr, prev.BlkAddr, prev.Length)
	}
	return nil
}
