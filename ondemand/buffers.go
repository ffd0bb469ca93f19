package ondemand

import (
	"sync"
	"unsafe"
)

// bufferPool hands out page-aligned buffers. The kernel writes cache
// files with direct I/O, which fails with EINVAL for buffers that are not
// suitably aligned. Buffers larger than the pool's size, up to large,
// come from a second pool, so that coalesced runs do not allocate (and
// clear) megabytes per fetch.
type bufferPool struct {
	size int
	pool sync.Pool
	big  *bufferPool // buffers of up to large bytes; nil in the big pool itself
}

func newBufferPool(size int) *bufferPool {
	p := newPool(size)
	p.big = newPool(MaxRun)
	return p
}

func newPool(size int) *bufferPool {
	p := &bufferPool{size: alignUpInt(size)}
	p.pool.New = func() any { return alignedBuffer(p.size) }
	return p
}

// get returns a buffer of the pool's size.
func (p *bufferPool) get() []byte { return p.pool.Get().([]byte) }

// getSize returns a buffer of at least n bytes (a fresh one when n
// exceeds the pool's size).
func (p *bufferPool) getSize(n int) []byte {
	if n <= p.size {
		return p.get()[:n]
	}
	if p.big != nil && n <= p.big.size {
		return p.big.get()[:n]
	}
	return alignedBuffer(n)
}

func (p *bufferPool) put(b []byte) {
	switch {
	case cap(b) == p.size:
		p.pool.Put(b[:p.size])
	case p.big != nil && cap(b) == p.big.size:
		p.big.pool.Put(b[:p.big.size])
	}
}

func alignUpInt(n int) int { return (n + BlockSize - 1) &^ (BlockSize - 1) }

// alignedBuffer returns a BlockSize-aligned buffer of alignUp(n) bytes,
// carved out of a slightly larger Go allocation so the garbage collector
// owns it (pools may drop it at any time).
func alignedBuffer(n int) []byte {
	size := alignUpInt(n)
	raw := make([]byte, size+BlockSize)
	off := int(-uintptr(unsafe.Pointer(&raw[0])) & (BlockSize - 1))
	return raw[off : off+size : off+size]
}
