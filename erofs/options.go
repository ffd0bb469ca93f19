package erofs

import "io"

// Option configures Open.
type Option func(*options)

type options struct {
	blobs   BlobResolver
	size    int64
	sizeSet bool
	verify  bool
}

// WithBlobs supplies the extra devices (blobs) of the device table. Without
// it, reading data that lives on an extra device fails with ErrNoBlob.
func WithBlobs(b BlobResolver) Option {
	return func(o *options) { o.blobs = b }
}

// WithVerifiedBlobs makes reads of file data stored in extra devices
// (blobs) return only bytes verified against the image's chunk digest
// table: the first read of a chunk reads the whole chunk and checks its
// sha256, and a mismatch fails the read with a *ChunkDigestError
// (errors.Is ErrDigestMismatch and ErrCorrupt) and returns no bytes.
// Chunks of up to 16 MiB are kept after verification, the most recently
// used ones up to 32 MiB per Image, so reading a chunk in small pieces
// hashes it once and later reads get the verified bytes even if the blob
// changes; larger chunks are hashed whole on every read that touches them.
//
// Open then requires a valid chunk digest table if the image has extra
// devices: it fails with an error wrapping ErrNoChunkTable when there is
// none, or ErrCorrupt or ErrUnsupported when it is invalid. Images without
// extra devices need no table. Blob data the table does not cover (a
// chunk without an entry, or flat data that unified addressing puts in a
// blob) cannot be read.
func WithVerifiedBlobs() Option {
	return func(o *options) { o.verify = true }
}

// WithSize tells Open the image size in bytes, used for bounds checks. If
// it is not given, Open asks the reader: a Size() int64 method (as on
// *bytes.Reader and *io.SectionReader) or, for regular files, Stat.
// Without a known size, out-of-range addresses show up as short reads,
// which are reported as corruption too.
func WithSize(n int64) Option {
	return func(o *options) { o.size, o.sizeSet = n, true }
}

// BlobResolver provides the extra devices listed in an image's device
// table.
//
// OpenBlob is called with device in 1..N (device table slot + 1) and the
// slot's tag as the kernel reads it (up to 64 bytes, cut at the first NUL;
// possibly empty). An Image calls it at most once per device while the
// returned reader works, and never closes the returned reader; if the
// resolver implements io.Closer, Image.Close calls its Close.
type BlobResolver interface {
	OpenBlob(device int, tag string) (io.ReaderAt, error)
}

// BlobResolverFunc adapts a function to BlobResolver.
type BlobResolverFunc func(device int, tag string) (io.ReaderAt, error)

// OpenBlob calls f(device, tag).
func (f BlobResolverFunc) OpenBlob(device int, tag string) (io.ReaderAt, error) {
	return f(device, tag)
}
