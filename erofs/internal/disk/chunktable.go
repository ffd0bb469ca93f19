package disk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
)

// The chunk digest table is erofsd's own extension: it records, for every
// chunk an image references in an external blob, the chunk's sha256, so a
// daemon can verify each chunk fetched from an untrusted store before the
// kernel sees it. It is stored right after the last block the superblock
// counts (at byte Blocks << BlkSzBits), a place every EROFS reader ignores.
//
//	header (64 bytes):
//	  0x00  8  magic "EROFSDCT"
//	  0x08  4  version (1)
//	  0x0C  4  entry size (48)
//	  0x10  8  entry count
//	  0x18 32  sha256 of the encoded entries
//	  0x38  8  reserved
//	entries, sorted by (device, blkaddr), 48 bytes each:
//	  0x00  2  device id (1..N: device table slot + 1)
//	  0x02  2  reserved
//	  0x04  4  start block in that device
//	  0x08  4  length in bytes (the chunk occupies ceil(length/blksz) blocks, zero padded)
//	  0x0C  4  reserved
//	  0x10 32  sha256 of the chunk's length bytes
const (
	ChunkTableMagic      = "EROFSDCT"
	ChunkTableVersion    = 1
	ChunkTableHeaderSize = SectionHeaderSize
	ChunkTableEntrySize  = 48
)

// ErrNoChunkTable reports that an image carries no chunk digest table.
var ErrNoChunkTable = errors.New("erofs: no chunk digest table")

// SectionHeader is the 64-byte header of erofsd's sections after the
// filesystem, the chunk digest table and the start set: a magic, a
// version, the entry size and count, and the sha256 of the entries.
type SectionHeader struct {
	Version     uint32
	EntrySize   uint32
	Count       uint64
	EntryDigest [32]byte
}

// SectionHeaderSize is the size of a SectionHeader.
const SectionHeaderSize = 64

// ChunkTableHeader is the header of the chunk digest table.
type ChunkTableHeader = SectionHeader

// DecodeChunkTableHeader decodes the table header. It returns
// ErrNoChunkTable when the magic is absent.
func DecodeChunkTableHeader(b []byte) (ChunkTableHeader, error) {
	return decodeSection(b, ChunkTableMagic, ChunkTableVersion, ChunkTableEntrySize, ErrNoChunkTable, "chunk table")
}

// decodeSection decodes a section header with magic, or returns absent;
// a version or entry size other than the ones given is an error.
func decodeSection(b []byte, magic string, version, entrySize uint32, absent error, what string) (SectionHeader, error) {
	var h SectionHeader
	if err := need(b, SectionHeaderSize, what+" header"); err != nil {
		return h, err
	}
	if !bytes.Equal(b[:8], []byte(magic)) {
		return h, absent
	}
	h.Version = le.Uint32(b[0x08:])
	h.EntrySize = le.Uint32(b[0x0C:])
	h.Count = le.Uint64(b[0x10:])
	copy(h.EntryDigest[:], b[0x18:0x38])
	if h.Version != version || h.EntrySize != entrySize {
		return h, fmt.Errorf("erofs: unsupported %s version %d entry size %d", what, h.Version, h.EntrySize)
	}
	return h, nil
}

// EncodeSection encodes a section: count entries of entrySize bytes,
// each written by entry into its slice, after their header with magic
// and version and the entries' sha256.
func EncodeSection(magic string, version uint32, entrySize, count int, entry func(i int, b []byte)) []byte {
	out := make([]byte, SectionHeaderSize+count*entrySize)
	body := out[SectionHeaderSize:]
	for i := range count {
		entry(i, body[i*entrySize:(i+1)*entrySize])
	}
	h := SectionHeader{Version: version, EntrySize: uint32(entrySize), Count: uint64(count), EntryDigest: sha256.Sum256(body)}
	h.encode(out, magic)
	return out
}

// encode writes the header with magic into b[:SectionHeaderSize].
func (h *SectionHeader) encode(b []byte, magic string) {
	_ = b[SectionHeaderSize-1]
	copy(b[:8], magic)
	le.PutUint32(b[0x08:], h.Version)
	le.PutUint32(b[0x0C:], h.EntrySize)
	le.PutUint64(b[0x10:], h.Count)
	copy(b[0x18:0x38], h.EntryDigest[:])
	clear(b[0x38:0x40])
}

// ChunkEntry is one chunk digest table entry.
type ChunkEntry struct {
	DeviceID uint16
	BlkAddr  uint32
	Length   uint32
	Digest   [32]byte
}

// DecodeChunkEntry decodes one table entry.
func DecodeChunkEntry(b []byte) (ChunkEntry, error) {
	var e ChunkEntry
	if err := need(b, ChunkTableEntrySize, "chunk table entry"); err != nil {
		return e, err
	}
	e.DeviceID = le.Uint16(b[0x00:])
	e.BlkAddr = le.Uint32(b[0x04:])
	e.Length = le.Uint32(b[0x08:])
	copy(e.Digest[:], b[0x10:0x30])
	return e, nil
}

// Encode writes the entry into b[:ChunkTableEntrySize].
func (e *ChunkEntry) Encode(b []byte) {
	_ = b[ChunkTableEntrySize-1]
	le.PutUint16(b[0x00:], e.DeviceID)
	clear(b[0x02:0x04])
	le.PutUint32(b[0x04:], e.BlkAddr)
	le.PutUint32(b[0x08:], e.Length)
	clear(b[0x0C:0x10])
	copy(b[0x10:0x30], e.Digest[:])
}

// Less orders entries by device, then start block.
func (e *ChunkEntry) Less(o *ChunkEntry) bool {
	if e.DeviceID != o.DeviceID {
		return e.DeviceID < o.DeviceID
	}
	return e.BlkAddr < o.BlkAddr
}
