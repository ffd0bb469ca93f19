package erofs

import (
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

type featureName struct {
	bit  uint32
	name string
}

var compatFeatures = []featureName{
	{disk.CompatSuperChecksum, "sb_csum"},
	{disk.CompatMtime, "mtime"},
	{disk.CompatXattrFilter, "xattr_filter"},
}

var incompatFeatures = []featureName{
	{disk.IncompatZeroPadding, "0padding"},
	{disk.IncompatComprCfgs, "compr_cfgs"},
	{disk.IncompatChunkedFile, "chunked_file"},
	{disk.IncompatDeviceTable, "device_table"},
	{disk.IncompatZtailpacking, "ztailpacking"},
	{disk.IncompatFragments, "fragments"},
	{disk.IncompatXattrPrefixes, "xattr_prefixes"},
	{disk.Incompat48Bit, "48bit"},
	{disk.IncompatMetabox, "metabox"},
}

// FeatureNames returns the names of the compat and incompat feature bits
// set in an image, as erofs-utils spells them; unknown bits are shown in
// hex.
func (i Info) FeatureNames() (compat, incompat []string) {
	return namesOf(i.FeatureCompat, compatFeatures), namesOf(i.FeatureIncompat, incompatFeatures)
}

// Linux61Compatible reports whether a Linux 6.1 kernel accepts the image's
// feature set, compression algorithms (LZ4 and MicroLZMA) and block size
// (as fscache mode, and compressed inodes, require on 4 KiB pages).
func (i Info) Linux61Compatible() bool {
	return i.FeatureIncompat&^disk.IncompatLinux61 == 0 && i.BlockSize == 4096 &&
		(i.FeatureIncompat&disk.IncompatComprCfgs == 0 || i.ComprAlgs&^disk.ComprAlgsLinux61 == 0)
}

func namesOf(v uint32, table []featureName) []string {
	out := []string{}
	for _, f := range table {
		if v&f.bit != 0 {
			out = append(out, f.name)
			v &^= f.bit
		}
	}
	if v != 0 {
		out = append(out, fmt.Sprintf("unknown(%#x)", v))
	}
	return out
}
