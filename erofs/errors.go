package erofs

import (
	"errors"
	"fmt"
	"io"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// Sentinel errors. Errors returned by this package wrap one of these (or an
// I/O error of the underlying reader) so callers can test with errors.Is.
var (
	// ErrCorrupt reports malformed image (or blob) contents.
	ErrCorrupt = errors.New("erofs: corrupt image")
	// ErrUnsupported reports a valid but unsupported feature, such as an
	// unknown incompatible feature bit or compressed file data.
	ErrUnsupported = errors.New("erofs: unsupported")
	// ErrNotChunked is returned by Image.Chunks for files whose data is
	// not chunk-based.
	ErrNotChunked = errors.New("erofs: file is not chunk-based")
	// ErrNoChunkTable reports that an image carries no chunk digest table.
	ErrNoChunkTable = disk.ErrNoChunkTable
	// ErrNoStartSet reports that an image records no start set.
	ErrNoStartSet = disk.ErrNoStartSet
	// ErrNoChunkStates reports that an image records no chunk states.
	ErrNoChunkStates = disk.ErrNoChunkStates
	// ErrNoBlob reports that data lives on an extra device but no
	// BlobResolver was given.
	ErrNoBlob = errors.New("erofs: no blob resolver for extra device")
	// ErrTooLarge is returned by ReadFile for files too large to return in
	// one slice; read them with Open instead.
	ErrTooLarge = errors.New("erofs: file too large to read at once")
	// ErrDigestMismatch reports blob chunk bytes whose sha256 differs from
	// the chunk digest table. The error is a *ChunkDigestError, which also
	// matches ErrCorrupt.
	ErrDigestMismatch = errors.New("erofs: chunk digest mismatch")
)

// ChunkDigestError reports a blob chunk whose bytes do not hash to the
// sha256 the chunk digest table records for it. errors.Is matches it
// against ErrDigestMismatch and ErrCorrupt.
type ChunkDigestError struct {
	Device  int    // extra device (1..N)
	BlkAddr uint32 // first block of the chunk on Device
	Length  uint32 // bytes hashed
	Want    [32]byte
	Got     [32]byte
}

func (e *ChunkDigestError) Error() string {
	return fmt.Sprintf("%v: device %d block %d: sha256 of %d bytes is %x, chunk table says %x",
		ErrDigestMismatch, e.Device, e.BlkAddr, e.Length, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrDigestMismatch) and errors.Is(err,
// ErrCorrupt) hold: a blob that does not match its image is corrupt.
func (e *ChunkDigestError) Is(target error) bool {
	return target == ErrDigestMismatch || target == ErrCorrupt
}

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// unsupportedf returns an error wrapping ErrUnsupported.
func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsupported}, args...)...)
}

// readFull reads exactly len(p) bytes at off. A short read means the
// structure extends past the end of the device, which is corruption.
// Callers add what was read to the error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	if off < 0 {
		return corruptf("negative offset %d", off)
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corruptf("short read at offset %d: got %d of %d bytes: %w", off, n, len(p), io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("erofs: read at offset %d: %w", off, err)
}
