// Package sha256chain resumes SHA-256 from a recorded chaining value.
//
// SHA-256 digests its input 64 bytes at a time, carrying 32 bytes of
// state from one block to the next. An image that records a blob's state
// at the start of every chunk lets each chunk be checked on its own, as
// the step from its state to the next chunk's (or, for the last chunk,
// to the blob's digest): one hash of each byte then proves the chunk and,
// once every chunk has been checked, the whole blob.
package sha256chain

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// State is a SHA-256 chaining value: the eight state words, big-endian,
// as the digest of an empty message would print them before padding.
type State [32]byte

// Initial is the state before the first byte.
var Initial = State{
	0x6a, 0x09, 0xe6, 0x67, 0xbb, 0x67, 0xae, 0x85,
	0x3c, 0x6e, 0xf3, 0x72, 0xa5, 0x4f, 0xf5, 0x3a,
	0x51, 0x0e, 0x52, 0x7f, 0x9b, 0x05, 0x68, 0x8c,
	0x1f, 0x83, 0xd9, 0xab, 0x5b, 0xe0, 0xcd, 0x19,
}

// BlockSize is the granularity at which a state can be taken or resumed.
const BlockSize = sha256.BlockSize

// ErrUnaligned is a state asked for or resumed at an offset that is not
// a multiple of BlockSize.
var ErrUnaligned = errors.New("sha256chain: offset not a multiple of 64")

// crypto/sha256's marshaled form (stable across Go releases, as
// encoding.BinaryMarshaler promises for hashes): a magic, the state, the
// pending block and the length so far.
const (
	magic         = "sha\x03"
	marshaledSize = len(magic) + 32 + BlockSize + 8
)

// Resume returns a hash that continues a message whose first off bytes
// left state s: writing the rest and calling Sum gives the digest of the
// whole message.
func Resume(s State, off int64) (hash.Hash, error) {
	if off < 0 || off%BlockSize != 0 {
		return nil, fmt.Errorf("%w: %d", ErrUnaligned, off)
	}
	var b [marshaledSize]byte
	copy(b[:], magic)
	copy(b[len(magic):], s[:])
	binary.BigEndian.PutUint64(b[marshaledSize-8:], uint64(off))
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[:]); err != nil {
		return nil, fmt.Errorf("sha256chain: resuming: %w", err)
	}
	return h, nil
}

// Of returns the state of h, which must come from sha256.New or Resume
// and have been written a multiple of BlockSize bytes.
func Of(h hash.Hash) (State, error) {
	var s State
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return s, errors.New("sha256chain: hash does not marshal its state")
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return s, fmt.Errorf("sha256chain: %w", err)
	}
	if len(b) != marshaledSize || string(b[:len(magic)]) != magic {
		return s, errors.New("sha256chain: not a sha256 state")
	}
	if n := binary.BigEndian.Uint64(b[marshaledSize-8:]); n%BlockSize != 0 {
		return s, fmt.Errorf("%w: %d", ErrUnaligned, n)
	}
	copy(s[:], b[len(magic):])
	return s, nil
}
