// Package state is erofsd's persisted state: the images a daemon serves
// and the mounts it made, kept in one JSON file so that a restarted or
// upgraded daemon carries on where the last one stopped.
//
// The format is versioned and owned here, not borrowed from the control
// API, so that the API can change without changing the file. Save writes
// atomically and durably and keeps the previous good file beside the new
// one (path + ".prev"); Load reads every older version, falls back to the
// previous file when the current one is damaged, and otherwise keeps every
// entry that still parses, so that one bad byte does not make the daemon
// forget mounts it must still serve and unmount.
package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/erofsd/erofsd/prefetchlist"
)

const (
	// Version is the format Save writes. Version 1 is the unversioned
	// file of erofsd before this package; Load reads both.
	Version = 2
	// MaxSize bounds what Load reads: a state file of thousands of
	// mounts is well under a megabyte, so anything near this is damage.
	MaxSize = 16 << 20
)

var (
	// ErrNewerVersion is a file written by a newer erofsd: its meaning is
	// unknown, so it is neither read nor overwritten.
	ErrNewerVersion = errors.New("written by a newer erofsd")
	// ErrTooLarge is a file larger than MaxSize, a kind of ErrDamaged.
	ErrTooLarge = errors.New("too large")
	// ErrDamaged is a file that does not parse as a whole.
	ErrDamaged = errors.New("damaged")
	// ErrInvalidEntry is an image or mount that Load skipped.
	ErrInvalidEntry = errors.New("entry skipped")
)

// File is the daemon's state.
type File struct {
	// Version is the format the file had when loaded (Load converts
	// older ones); Save always writes the current Version.
	Version int     `json:"version"`
	Images  []Image `json:"images"`
	Mounts  []Mount `json:"mounts"`
}

// Image is a registered image, as needed to register it again.
type Image struct {
	FSID     string `json:"fsid"`
	DomainID string `json:"domain_id,omitempty"`
	// Bootstrap is the image file; the daemon saves the local copy of a
	// fetched image, so a restart needs no network to serve it again.
	Bootstrap string `json:"bootstrap"`
	BlobDir   string `json:"blob_dir,omitempty"` // as requested; empty: the daemon's default
	PlainHTTP bool   `json:"plain_http,omitempty"`
	Insecure  bool   `json:"insecure,omitempty"`
	Platform  string `json:"platform,omitempty"`
	// ByMount: registered implicitly by a mount, unregistered by its
	// unmount.
	ByMount bool   `json:"by_mount,omitempty"`
	Source  string `json:"source,omitempty"` // oci:// images: the manifest resolved, by digest
}

// Mount is a mount the daemon made.
type Mount struct {
	Mountpoint string    `json:"mountpoint"`
	FSID       string    `json:"fsid"`
	DomainID   string    `json:"domain_id,omitempty"`
	Frontend   string    `json:"frontend"` // cachefiles or fanotify
	Prefetch   *Prefetch `json:"prefetch,omitempty"`
	Owner      string    `json:"owner,omitempty"` // "snapshotter": made for containerd
	Image      string    `json:"image,omitempty"` // the snapshotter's image, REPO@DIGEST
}

// Prefetch is a mount's background prefetch, resumed after a restart.
type Prefetch struct {
	Start bool                 `json:"start,omitempty"` // the image's start set
	Whole bool                 `json:"whole,omitempty"`
	Files []prefetchlist.Entry `json:"files,omitempty"`
}

// validImage says why im cannot be registered again, or "" when it can.
// The checks are the shape the control API accepts; the daemon checks the
// rest when it registers.
func validImage(im *Image) string {
	switch {
	case im.FSID == "":
		return "empty fsid"
	case strings.ContainsRune(im.FSID, 0) || strings.ContainsRune(im.DomainID, 0) || strings.ContainsRune(im.Bootstrap, 0):
		return "NUL byte in fsid, domain id or bootstrap"
	case strings.HasPrefix(im.Bootstrap, "sha256:") || strings.HasPrefix(im.Bootstrap, "oci://"):
		return ""
	case !filepath.IsAbs(im.Bootstrap):
		return fmt.Sprintf("bootstrap %q is not an absolute path, sha256: digest or oci:// reference", im.Bootstrap)
	}
	return ""
}

// validMount says why m cannot be adopted, or "" when it can. The
// mountpoint must be clean as the daemon saves it: a "/mnt/../tmp"
// could only come from tampering.
func validMount(m *Mount) string {
	switch {
	case m.Mountpoint == "":
		return "empty mountpoint"
	case !filepath.IsAbs(m.Mountpoint) || filepath.Clean(m.Mountpoint) != m.Mountpoint:
		return fmt.Sprintf("mountpoint %q is not a clean absolute path", m.Mountpoint)
	case strings.ContainsRune(m.Mountpoint, 0):
		return "NUL byte in mountpoint"
	case m.FSID == "":
		return "empty fsid"
	case strings.ContainsRune(m.FSID, 0) || strings.ContainsRune(m.DomainID, 0):
		return "NUL byte in fsid or domain id"
	case !slices.Contains([]string{"cachefiles", "fanotify"}, m.Frontend):
		return fmt.Sprintf("front end %q is not cachefiles or fanotify", m.Frontend)
	}
	return ""
}
