package erofs

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/internal/sha256chain"
)

// ChunkStates returns, for every entry of ChunkTable in the same order,
// the sha256 state of the entry's blob before the chunk's first byte, or
// the zero State where the builder did not record one. It returns
// ErrNoChunkStates if the image records none. The entries must match the
// sha256 in their header, be as many as the table's, and a chunk at the
// start of its blob must have the initial state.
func (img *Image) ChunkStates() ([]sha256chain.State, error) {
	table, err := img.chunkTable()
	if err != nil {
		if errors.Is(err, ErrNoChunkTable) {
			return nil, ErrNoChunkStates
		}
		return nil, err
	}
	off, err := img.startSetEnd()
	if err != nil {
		return nil, err
	}
	h, err := img.sectionHeader(off, disk.DecodeChunkStatesHeader, ErrNoChunkStates, "chunk states")
	if err != nil {
		return nil, err
	}
	if h.Count != uint64(len(table)) {
		return nil, corruptf("chunk states at byte %d: %d entries for %d chunks", off, h.Count, len(table))
	}
	body := make([]byte, len(table)*disk.ChunkStatesEntrySize)
	if err := readFull(img.r, body, off+disk.ChunkStatesHeaderSize); err != nil {
		return nil, fmt.Errorf("erofs: chunk states: %w", err)
	}
	if got := sha256.Sum256(body); got != h.EntryDigest {
		return nil, corruptf("chunk states at byte %d: entries sha256 %x, header says %x", off, got, h.EntryDigest)
	}
	out := make([]sha256chain.State, len(table))
	for i := range out {
		copy(out[i][:], body[i*disk.ChunkStatesEntrySize:])
		if table[i].BlkAddr == 0 && out[i] != (sha256chain.State{}) && out[i] != sha256chain.Initial {
			return nil, corruptf("chunk states: entry %d starts device %d, but its state is not the initial one", i, table[i].Device)
		}
	}
	return out, nil
}

// startSetEnd returns where the start set ends: where the chunk table
// ends if the image has none.
func (img *Image) startSetEnd() (int64, error) {
	off, h, err := img.startSetHeader()
	switch {
	case errors.Is(err, ErrNoStartSet):
		return off, nil
	case err != nil:
		return 0, fmt.Errorf("locating the chunk states after the start set: %w", err)
	}
	return off + disk.StartSetHeaderSize + int64(h.Count)*disk.StartSetEntrySize, nil
}
