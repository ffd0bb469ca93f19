package mountinfo

import (
	"errors"
	"fmt"
	"strings"
)

// ErrMismatch is a mount that is not the erofs mount expected.
var ErrMismatch = errors.New("not the erofs mount expected")

// Erofs is an erofs mount as erofsd makes it: in fscache mode by FSID and
// DomainID, which the kernel shows as the super options fsid= and
// domain_id= (Linux 6.1 and later: erofs_show_options), with no source
// ("none"); file-backed by Source, the image file, with no fsid.
type Erofs struct {
	FSID, DomainID string
	Source         string
}

// CheckErofs returns nil when e is the mount want describes, or an error
// (ErrMismatch) naming the mount point and every difference.
func CheckErofs(e Entry, want Erofs) error {
	if want.FSID == "" && want.Source == "" {
		return fmt.Errorf("mountinfo: checking %s: neither fsid nor source to check against", e.MountPoint)
	}
	if e.FSType != "erofs" {
		// Its options would be noise: what is there is the news.
		return fmt.Errorf("%s: %w: %s mount of %q", e.MountPoint, ErrMismatch, e.FSType, e.Source)
	}
	var diffs []string
	fsid, hasFSID := SuperOption(e, "fsid")
	domain, _ := SuperOption(e, "domain_id")
	switch {
	case want.FSID != "" && !hasFSID:
		diffs = append(diffs, fmt.Sprintf("no fsid, want fsid=%s", want.FSID))
	case want.FSID != "" && fsid != want.FSID:
		diffs = append(diffs, fmt.Sprintf("fsid=%s, want fsid=%s", fsid, want.FSID))
	case want.FSID == "" && hasFSID:
		diffs = append(diffs, fmt.Sprintf("fscache mount fsid=%s, want a file-backed one", fsid))
	}
	// The same fsid in another domain is another image.
	if want.FSID != "" && hasFSID && domain != want.DomainID {
		diffs = append(diffs, fmt.Sprintf("domain_id=%q, want %q", domain, want.DomainID))
	}
	if want.Source != "" && e.Source != want.Source {
		diffs = append(diffs, fmt.Sprintf("source %q, want %q", e.Source, want.Source))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s: %w: %s", e.MountPoint, ErrMismatch, strings.Join(diffs, "; "))
	}
	return nil
}
