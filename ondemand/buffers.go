package ondemand

import (
	"sync"
	"unsafe"
)

// bufferPool hands out page-aligned buffers. The kernel writes cache
// files with direct I/O, which fails with EINVAL for buffers that are not
// suitably aligned. Buffers larger than the pool's size, up to MaxRun,
// come from pools of doubling sizes, so that coalesced runs neither
// allocate (and clear) megabytes per fetch nor hold far more than they
// asked for.
type bufferPool struct {
	size    int
	pool    sync.Pool
	classes []*bufferPool // larger sizes, doubling up to MaxRun; nil in a class
}

func newBufferPool(size int) *bufferPool {
	p := newPool(size)
	for c := p.size * 2; c <= MaxRun; c *= 2 {
		p.classes = append(p.classes, newPool(c))
	}
	return p
}

func newPool(size int) *bufferPool {
	p := &bufferPool{size: alignUpInt(size)}
	p.pool.New = func() any { return alignedBuffer(p.size) }
	return p
}

// get returns a buffer of the pool's size.
func (p *bufferPool) get() []byte { return p.pool.Get().([]byte) }

// getSize returns a buffer of at least n bytes: from the pool, from the
// smallest larger class that fits, or fresh past MaxRun.
func (p *bufferPool) getSize(n int) []byte {
	if n <= p.size {
		return p.get()[:n]
	}
	for _, c := range p.classes {
		if n <= c.size {
			return c.get()[:n]
		}
	}
	return alignedBuffer(n)
}

func (p *bufferPool) put(b []byte) {
	if cap(b) == p.size {
		p.pool.Put(b[:p.size])
		return
	}
	for _, c := range p.classes {
		if cap(b) == c.size {
			c.pool.Put(b[:c.size])
			return
		}
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
