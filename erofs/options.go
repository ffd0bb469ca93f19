package erofs

import "io"

// Option configures Open.
type Option func(*options)

type options struct {
	blobs   BlobResolver
	size    int64
	sizeSet bool
}

// WithBlobs supplies the extra devices (blobs) of the device table. Without
// it, reading data that lives on an extra device fails with ErrNoBlob.
func WithBlobs(b BlobResolver) Option {
	return func(o *options) { o.blobs = b }
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
