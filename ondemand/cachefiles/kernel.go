package cachefiles

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HolesReadWrong reports whether EROFS in fscache mode on the kernel of
// this release (as uname -r prints it) reads a sparse hole wrongly: from
// 5.19, when fscache mode came, to 6.1.y, erofs_fscache_data_read
// zero-fills the whole rest of the read at an unmapped extent, data after
// the hole included ("erofs: get correct count for unmapped range in
// fscache mode" fixed it in 6.2 and was not backported). A release it
// cannot parse counts as affected.
func HolesReadWrong(release string) bool { return releaseBefore(release, 6, 2) }

// CompressedUnreadable reports whether EROFS in fscache mode on the
// kernel of this release refuses compressed inodes (EOPNOTSUPP when they
// are looked up): "erofs: support compressed inodes over fscache" came in
// 6.9. A release it cannot parse counts as affected.
func CompressedUnreadable(release string) bool { return releaseBefore(release, 6, 9) }

// releaseBefore reports whether release is older than major.minor, or
// cannot be parsed.
func releaseBefore(release string, major, minor int) bool {
	maStr, rest, _ := strings.Cut(release, ".")
	miStr, _, _ := strings.Cut(rest, ".")
	miStr, _, _ = strings.Cut(miStr, "-")
	ma, err1 := strconv.Atoi(maStr)
	mi, err2 := strconv.Atoi(miStr)
	if err1 != nil || err2 != nil {
		return true
	}
	return ma < major || ma == major && mi < minor
}

// KernelRelease returns the running kernel's release (uname -r).
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
