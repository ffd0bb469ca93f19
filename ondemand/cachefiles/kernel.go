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
func HolesReadWrong(release string) bool {
	major, rest, _ := strings.Cut(release, ".")
	minor, _, _ := strings.Cut(rest, ".")
	minor, _, _ = strings.Cut(minor, "-")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil {
		return true
	}
	return ma < 6 || ma == 6 && mi < 2
}

// KernelRelease returns the running kernel's release (uname -r).
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
