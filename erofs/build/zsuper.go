package build

import (
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// devtSlotOff is the device table's position in 128-byte slots: right
// after the superblock and the compression configuration records.
func (b *Builder) devtSlotOff() int {
	end := disk.SuperOffset + disk.SuperSize
	if b.z != nil && b.z.needCfgs() {
		end += disk.ComprCfgsSize(b.z.cfgRecords())
	}
	return disk.AlignUp(end, disk.DeviceSlotSize) / disk.DeviceSlotSize
}

// zsuper sets the superblock's compression features and writes the
// configuration records into head (the image's first blocks).
func (b *Builder) zsuper(sb *disk.Superblock, head []byte, order []*node) error {
	// 0padding whenever compressing, as mkfs.erofs: LZ4 streams are at
	// the end of their pclusters and decoded exactly.
	sb.FeatureIncompat |= disk.IncompatZeroPadding
	for _, n := range order {
		if n.data.z != nil && n.data.z.inline != nil {
			sb.FeatureIncompat |= disk.IncompatZtailpacking
			break
		}
	}
	if !b.z.needCfgs() {
		// LZ4 with one-block pclusters: the field is lz4_max_distance.
		sb.U1 = b.z.params.LZ4MaxDistance
		return nil
	}
	sb.FeatureIncompat |= disk.IncompatComprCfgs // also BIG_PCLUSTER
	sb.U1 = 1 << b.z.alg
	recs := b.z.cfgRecords()
	at := disk.SuperOffset + disk.SuperSize
	if err := disk.EncodeComprCfgs(head[at:at+disk.ComprCfgsSize(recs)], recs); err != nil {
		return fmt.Errorf("compression config: %w", err)
	}
	return nil
}
