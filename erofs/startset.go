package erofs

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// StartExtent is one extent of an image's start set: Blocks blocks from
// block BlkAddr of extra device Device (1..N).
type StartExtent struct {
	Device  uint16
	BlkAddr uint32
	Blocks  uint32
}

// MaxStartExtents bounds the start set an image may record.
const MaxStartExtents = disk.MaxStartExtents

// startSetHeader returns where the start set begins, right after the
// chunk table (whose size was checked when it was loaded), and its
// header, whose entry count it bounds; ErrNoStartSet if there is none.
func (img *Image) startSetHeader() (int64, disk.SectionHeader, error) {
	off := int64(img.sb.Blocks)<<img.blkBits + disk.ChunkTableHeaderSize + int64(len(img.ct))*disk.ChunkTableEntrySize
	h, err := img.sectionHeader(off, disk.DecodeStartSetHeader, ErrNoStartSet, "start set")
	if err == nil && h.Count > MaxStartExtents {
		err = corruptf("start set at byte %d: %d entries, at most %d", off, h.Count, MaxStartExtents)
	}
	return off, h, err
}

// StartSet returns the extents of the blobs the image's builder recorded
// as read first by its workload (erofs-image build --prefetch-list), in
// the order they are read. It returns ErrNoStartSet if the image records
// none. Each extent must name an existing device and lie inside it, no
// two may overlap, and the entries must match the sha256 in their header.
func (img *Image) StartSet() ([]StartExtent, error) {
	if err := img.checkOpen(); err != nil {
		return nil, err
	}
	if _, err := img.chunkTable(); err != nil {
		if errors.Is(err, ErrNoChunkTable) {
			return nil, ErrNoStartSet
		}
		return nil, err
	}
	off, h, err := img.startSetHeader()
	if err != nil {
		return nil, err
	}
	start := off + disk.StartSetHeaderSize
	body := make([]byte, int(h.Count)*disk.StartSetEntrySize)
	if err := readFull(img.r, body, start); err != nil {
		return nil, fmt.Errorf("erofs: start set entries: %w", err)
	}
	if got := sha256.Sum256(body); got != h.EntryDigest {
		return nil, corruptf("start set at byte %d: entries sha256 %x, header says %x", off, got, h.EntryDigest)
	}
	out := make([]StartExtent, 0, h.Count)
	for i := range int(h.Count) {
		e, err := disk.DecodeStartExtent(body[i*disk.StartSetEntrySize:])
		if err != nil {
			return nil, fmt.Errorf("%w: start set entry %d: %w", ErrCorrupt, i, err)
		}
		if e.DeviceID == 0 || int(e.DeviceID) > len(img.slots) {
			return nil, corruptf("start set entry %d: device %d not in 1..%d", i, e.DeviceID, len(img.slots))
		}
		end := uint64(e.BlkAddr) + uint64(e.Blocks)
		if blocks := img.slots[e.DeviceID-1].Blocks; e.Blocks == 0 || blocks != 0 && end > uint64(blocks) {
			return nil, corruptf("start set entry %d: device %d blocks [%d, %d) empty or beyond the device's %d blocks", i, e.DeviceID, e.BlkAddr, end, blocks)
		}
		out = append(out, StartExtent{Device: e.DeviceID, BlkAddr: e.BlkAddr, Blocks: e.Blocks})
	}
	// No block twice: a set is at most its blobs, and its size what a
	// daemon fetches.
	sorted := slices.Clone(out)
	slices.SortFunc(sorted, func(a, b StartExtent) int {
		if a.Device != b.Device {
			return cmp.Compare(a.Device, b.Device)
		}
		return cmp.Compare(a.BlkAddr, b.BlkAddr)
	})
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if a.Device == b.Device && uint64(a.BlkAddr)+uint64(a.Blocks) > uint64(b.BlkAddr) {
			return nil, corruptf("start set: device %d blocks [%d, %d) and [%d, %d) overlap", a.Device,
				a.BlkAddr, uint64(a.BlkAddr)+uint64(a.Blocks), b.BlkAddr, uint64(b.BlkAddr)+uint64(b.Blocks))
		}
	}
	return out, nil
}
