// Package control is erofsd's control API: HTTP with JSON bodies over a
// unix socket (mode 0600), shared by the daemon (Handler) and erofsctl
// (Client).
package control

import (
	"time"

	"github.com/erofsd/erofsd/prefetchlist"
)

// DefaultSocket is where erofsd listens unless told otherwise.
const DefaultSocket = "/run/erofsd/erofsd.sock"

// RegisterRequest registers an image for serving.
type RegisterRequest struct {
	FSID     string `json:"fsid"`
	DomainID string `json:"domain_id,omitempty"`
	// Bootstrap is the image: an absolute path, sha256:DIGEST of an
	// image in the blob store, or oci://HOST/REPO:TAG (or @DIGEST) of an
	// image converted by erofs-image convert, whose blobs then come from
	// that repository.
	Bootstrap string `json:"bootstrap"`
	BlobDir   string `json:"blob_dir,omitempty"`   // blob store: a directory or an http(s):// or oci:// URL; default: the daemon's --blob-dir
	PlainHTTP bool   `json:"plain_http,omitempty"` // oci://: talk plain HTTP to the registry
	Insecure  bool   `json:"insecure,omitempty"`   // skip TLS verification of the blob store
	Platform  string `json:"platform,omitempty"`   // oci:// index: os/arch to mount (default: the daemon's)
}

// MountRequest registers (if Bootstrap is set) and mounts an image.
type MountRequest struct {
	RegisterRequest
	Mountpoint string `json:"mountpoint"`
	Frontend   string `json:"frontend,omitempty"` // auto (default), cachefiles or fanotify
	// Prefetch, after the mount, fetches in the background: "whole"
	// every blob, "off" nothing; empty: the daemon's --prefetch. The
	// files of PrefetchList (paths in the image, directories for the
	// files under them) come first, in order, unless Prefetch is "off".
	Prefetch     string               `json:"prefetch,omitempty"`
	PrefetchList []prefetchlist.Entry `json:"prefetch_list,omitempty"`
}

// Image describes a registered image.
type Image struct {
	FSID        string   `json:"fsid"`
	DomainID    string   `json:"domain_id,omitempty"`
	Bootstrap   string   `json:"bootstrap"`
	Source      string   `json:"source,omitempty"` // oci:// images: the manifest resolved
	Size        int64    `json:"size"`
	Blobs       []Blob   `json:"blobs"`
	OpenObjects int      `json:"open_objects"`
	Mounts      []string `json:"mounts"`
	// Containers are the containerd snapshots (the root filesystems of
	// containers) above a mount of the snapshotter.
	Containers []string  `json:"containers,omitempty"`
	Registered time.Time `json:"registered"`
}

// Blob describes one blob of an image.
type Blob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Chunks int    `json:"chunks"`
}

// Mount is a mount made through the daemon.
type Mount struct {
	Mountpoint string `json:"mountpoint"`
	FSID       string `json:"fsid"`
	DomainID   string `json:"domain_id,omitempty"`
	Frontend   string `json:"frontend"`
	// Owner is "snapshotter" for a mount of containerd's snapshotter
	// (Image then names the image: REPO@MANIFEST-DIGEST): containerd
	// unmounts it when it removes the image, erofsctl umount refuses.
	Owner string `json:"owner,omitempty"`
	Image string `json:"image,omitempty"`
}

// Status reports the daemon's state and counters.
type Status struct {
	Version  string           `json:"version"`
	PID      int              `json:"pid"`
	Started  time.Time        `json:"started"`
	Frontend string           `json:"frontend"`
	CacheDir string           `json:"cache_dir"`
	Images   int              `json:"images"`
	Mounts   int              `json:"mounts"`
	Counters map[string]int64 `json:"counters"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"` // not_found, exists, in_use, bad_request, unavailable, internal
}
