package disk

import "errors"

// The chunk states are erofsd's third extension, stored right after the
// start set (after the chunk digest table when there is no start set):
// for every chunk digest table entry, in the same order, the sha256
// chaining value of its blob before the chunk's first byte. A daemon
// checks a chunk as the step from its state to the next chunk's (the
// last chunk's step ends in the blob's digest), so the one hash that
// verifies each chunk also proves, once every chunk is in, that the
// blob is whole. Older readers ignore it.
//
//	header (64 bytes):
//	  0x00  8  magic "EROFSDCS"
//	  0x08  4  version (1)
//	  0x0C  4  entry size (32)
//	  0x10  8  entry count (the chunk table's)
//	  0x18 32  sha256 of the encoded entries
//	  0x38  8  reserved
//	entries, 32 bytes each: the eight sha256 state words, big-endian,
//	after the blob's first blkaddr*blksz bytes; all zero: not recorded.
const (
	ChunkStatesMagic      = "EROFSDCS"
	ChunkStatesVersion    = 1
	ChunkStatesHeaderSize = SectionHeaderSize
	ChunkStatesEntrySize  = 32
)

// ErrNoChunkStates reports that an image records no chunk states.
var ErrNoChunkStates = errors.New("erofs: no chunk states")

// DecodeChunkStatesHeader decodes the header. It returns
// ErrNoChunkStates when the magic is absent.
func DecodeChunkStatesHeader(b []byte) (SectionHeader, error) {
	return decodeSection(b, ChunkStatesMagic, ChunkStatesVersion, ChunkStatesEntrySize, ErrNoChunkStates, "chunk states")
}
