package disk

import "errors"

// The start set is erofsd's second extension, stored right after the
// chunk digest table: the extents of the blobs a workload reads first
// (recorded from a prefetch list at build time, its data laid out at the
// front of each blob), in the order it reads them, so a daemon can fetch
// them in a few large requests as soon as the image is mounted.
//
//	header (64 bytes):
//	  0x00  8  magic "EROFSDSS"
//	  0x08  4  version (1)
//	  0x0C  4  entry size (16)
//	  0x10  8  entry count
//	  0x18 32  sha256 of the encoded entries
//	  0x38  8  reserved
//	entries, in first-read order, 16 bytes each:
//	  0x00  2  device id (1..N)
//	  0x02  2  reserved
//	  0x04  4  start block in that device
//	  0x08  4  block count (> 0)
//	  0x0C  4  reserved
const (
	StartSetMagic      = "EROFSDSS"
	StartSetVersion    = 1
	StartSetHeaderSize = SectionHeaderSize
	StartSetEntrySize  = 16
	// MaxStartExtents bounds the entries a reader accepts and a builder
	// writes.
	MaxStartExtents = 1 << 16
)

// ErrNoStartSet reports that an image records no start set.
var ErrNoStartSet = errors.New("erofs: no start set")

// StartSetHeader is the header of the start set.
type StartSetHeader = SectionHeader

// DecodeStartSetHeader decodes the header. It returns ErrNoStartSet when
// the magic is absent.
func DecodeStartSetHeader(b []byte) (StartSetHeader, error) {
	return decodeSection(b, StartSetMagic, StartSetVersion, StartSetEntrySize, ErrNoStartSet, "start set")
}

// StartExtent is one start set entry: Blocks blocks from BlkAddr of
// device DeviceID.
type StartExtent struct {
	DeviceID uint16
	BlkAddr  uint32
	Blocks   uint32
}

// DecodeStartExtent decodes one entry.
func DecodeStartExtent(b []byte) (StartExtent, error) {
	var e StartExtent
	if err := need(b, StartSetEntrySize, "start set entry"); err != nil {
		return e, err
	}
	e.DeviceID = le.Uint16(b[0x00:])
	e.BlkAddr = le.Uint32(b[0x04:])
	e.Blocks = le.Uint32(b[0x08:])
	return e, nil
}

// Encode writes the entry into b[:StartSetEntrySize].
func (e *StartExtent) Encode(b []byte) {
	_ = b[StartSetEntrySize-1]
	le.PutUint16(b[0x00:], e.DeviceID)
	clear(b[0x02:0x04])
	le.PutUint32(b[0x04:], e.BlkAddr)
	le.PutUint32(b[0x08:], e.Blocks)
	clear(b[0x0C:0x10])
}
