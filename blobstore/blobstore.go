// Package blobstore fetches content-addressed blobs: the data of EROFS
// images whose chunks live outside the image. A Store opens a blob by its
// sha256 digest; a Blob reads byte ranges of it. Backends (a local
// directory now; HTTP and OCI registries later) report failures with the
// sentinel errors below so callers can tell a missing blob from a
// temporary fault.
package blobstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Errors a backend wraps so that callers can classify failures.
var (
	ErrNotFound     = errors.New("blob not found")
	ErrUnauthorized = errors.New("not authorized")
	ErrTemporary    = errors.New("temporary failure")
	ErrBadDigest    = errors.New("bad digest")
	ErrOutOfRange   = errors.New("read out of range")
)

// Digest names a blob by the sha256 of its content.
type Digest struct {
	hex string // 64 lowercase hex characters
}

// ParseDigest accepts "sha256:<64 hex>" or the bare 64 hex characters
// (as EROFS device tags carry them). Upper case is refused so that one
// blob has exactly one name.
func ParseDigest(s string) (Digest, error) {
	h := strings.TrimPrefix(s, "sha256:")
	if len(h) != 64 {
		return Digest{}, fmt.Errorf("%w: %q: want sha256 and 64 hex characters", ErrBadDigest, s)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return Digest{}, fmt.Errorf("%w: %q: want lowercase hex", ErrBadDigest, s)
		}
	}
	return Digest{h}, nil
}

// DigestOf returns the digest for a raw sha256 sum.
func DigestOf(sum [32]byte) Digest { return Digest{hex.EncodeToString(sum[:])} }

// Hex returns the 64 hex characters (the blob's file name and device tag).
func (d Digest) Hex() string { return d.hex }

// String returns "sha256:<hex>".
func (d Digest) String() string { return "sha256:" + d.hex }

// Sum returns the raw sha256 sum (all zero for the zero Digest).
func (d Digest) Sum() [32]byte {
	var sum [32]byte
	hex.Decode(sum[:], []byte(d.hex))
	return sum
}

// IsZero reports whether d is the zero Digest.
func (d Digest) IsZero() bool { return d.hex == "" }

// Store opens blobs by digest. Implementations are safe for concurrent use.
type Store interface {
	Open(ctx context.Context, d Digest) (Blob, error)
}

// Blob is one opened blob. ReadAt follows io.ReaderAt's contract (a short
// read comes with an error; io.EOF at the end) but takes a context so that
// remote reads can be cancelled. Blobs are safe for concurrent use.
type Blob interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
	Close() error
}

// RangeOpener is implemented by blobs that can stream a range as it
// arrives, so that a caller can use the first bytes of a long read before
// the last ones are in. The reader yields exactly the n bytes at off, or
// fails with an error (a short body is io.ErrUnexpectedEOF). A remote
// store's stream fails when it brings no bytes for the store's timeout;
// however long it goes on delivering, only ctx bounds it.
type RangeOpener interface {
	OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// FileBacked is implemented by blobs kept as local files (Local): File
// returns the open file, so that a caller can copy ranges of it in the
// kernel (copy_file_range) instead of through its own memory. The file
// stays the blob's: the caller must not close it, and must check what it
// copies where it lands, as the file may change under it.
type FileBacked interface {
	File() *os.File
	// Copied counts n bytes the caller read from File itself, as a
	// ReadAt of them would have.
	Copied(n int64)
}

// SizedOpener is implemented by stores that can pass over hosts whose
// copy of a blob is shorter than the caller needs (a stale mirror) and
// open it where it is whole.
type SizedOpener interface {
	OpenSized(ctx context.Context, d Digest, minSize int64) (Blob, error)
}

// Distruster is implemented by blobs read from several hosts (registry
// mirrors): a caller that finds data wrong (a chunk failed its digest)
// names the host that sent it, and later reads ask it last for a while.
type Distruster interface {
	// ReadAtFrom reads like ReadAt and names the host that answered.
	ReadAtFrom(ctx context.Context, p []byte, off int64) (n int, host string, err error)
	Distrust(host string)
}

// StoreOptions configure Open for every kind of spec.
type StoreOptions struct {
	// HTTPOptions tune http(s):// stores and the transport of oci://
	// ones. Its Stats is ignored when Stats is set.
	HTTPOptions
	// OCI holds the options for oci:// stores beyond HTTPOptions (its
	// own HTTPOptions are replaced by the field above). They apply to
	// every registry: leave Auth nil so each gets its credentials from
	// the Keychain; Mirrors there are tried for every registry, after
	// those MirrorsByHost lists for its host.
	OCI OCIOptions
	// MirrorsByHost maps a registry host (as in the spec) to the mirrors
	// tried, in order, before it.
	MirrorsByHost map[string][]string
	// Stats, when set, receives every store's counters by kind.
	Stats *Stats
}

// Open returns the store named by spec: a directory path (or
// file:///path) for a local store, an http(s):// URL, or an OCI
// repository (oci://HOST[:PORT]/REPO, over https; oci+http:// for plain
// HTTP) with credentials from the docker config. It does no network I/O.
func Open(spec string, opts StoreOptions) (Store, error) {
	httpOpts := opts.HTTPOptions
	switch {
	case strings.HasPrefix(spec, "oci://"), strings.HasPrefix(spec, "oci+http://"):
		o := opts.OCI
		o.HTTPOptions = httpOpts
		if opts.Stats != nil {
			o.Stats = &opts.Stats.OCI
		}
		repo := spec
		if r, ok := strings.CutPrefix(spec, "oci+http://"); ok {
			repo, o.PlainHTTP = r, true
		} else {
			repo = strings.TrimPrefix(spec, "oci://")
		}
		host, _, _ := strings.Cut(repo, "/")
		if m := opts.MirrorsByHost[host]; len(m) > 0 {
			o.Mirrors = append(append([]string(nil), m...), o.Mirrors...)
		}
		return NewOCI(repo, o)
	case strings.HasPrefix(spec, "http://"), strings.HasPrefix(spec, "https://"):
		if opts.Stats != nil {
			httpOpts.Stats = &opts.Stats.HTTP
		}
		return NewHTTP(spec, httpOpts)
	}
	var stats *BackendStats
	if opts.Stats != nil {
		stats = &opts.Stats.Local
	}
	return NewLocalStats(strings.TrimPrefix(spec, "file://"), stats)
}
