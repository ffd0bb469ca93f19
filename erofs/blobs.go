package erofs

import (
	"container/list"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// DirBlobs returns a BlobResolver that opens blob files named after their
// tag in dir: filepath.Join(dir, tag). Only tags of exactly 64 lowercase
// hex characters (a sha256 digest) are accepted, so image bytes can never
// name an arbitrary path. Files are opened on first use and cached; the
// resolver's Close (called by Image.Close) closes them. After Close the
// resolver may be used again and reopens files as needed.
func DirBlobs(dir string) BlobResolver {
	return &dirBlobs{dir: dir, files: make(map[string]*os.File)}
}

type dirBlobs struct {
	dir   string
	mu    sync.Mutex
	files map[string]*os.File
}

func validTag(tag string) bool {
	if len(tag) != 64 {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (d *dirBlobs) OpenBlob(device int, tag string) (io.ReaderAt, error) {
	if !validTag(tag) {
		return nil, fmt.Errorf("erofs: device %d: tag %q is not a 64-character lowercase hex digest", device, tag)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if f := d.files[tag]; f != nil {
		return f, nil
	}
	f, err := os.Open(filepath.Join(d.dir, tag))
	if err != nil {
		return nil, fmt.Errorf("erofs: device %d: %w", device, err)
	}
	d.files[tag] = f
	return f, nil
}

func (d *dirBlobs) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for tag, f := range d.files {
		errs = append(errs, f.Close())
		delete(d.files, tag)
	}
	return errors.Join(errs...)
}

// Verified blob reads (WithVerifiedBlobs). Variables so tests can
// shrink them.
var (
	// maxCachedChunk is the largest chunk read, verified and kept whole;
	// it bounds what one read allocates.
	maxCachedChunk uint32 = 16 << 20
	// verifyCacheBytes bounds the verified chunks an Image keeps.
	verifyCacheBytes int64 = 32 << 20
)

// verifyBufSize is the piece size larger chunks are hashed in.
const verifyBufSize = 1 << 20

var verifyBufs = sync.Pool{New: func() any { b := make([]byte, verifyBufSize); return &b }}

// readVerified copies the part of the blob chunk ext overlapping
// [off, off+len(p)) into p, from the whole chunk verified against the
// chunk digest table. On error p holds no blob bytes.
func (img *Image) readVerified(ext *extent, p []byte, off int64) error {
	blk := ext.pstart >> img.blkBits
	if ext.pstart&(img.blkSize-1) != 0 || blk > 1<<32-1 {
		return corruptf("device %d: chunk at byte %d is not at a block address", ext.dev, ext.pstart)
	}
	d, err := dataEntry(img.vtable, ext.dev, ext.pstart, ext.llen, img.blkBits)
	if err != nil {
		return err
	}
	// Where the bytes at off are in the entry's.
	rel := ext.pstart - int64(d.BlkAddr)<<img.blkBits + off - ext.lstart
	if d.Length > maxCachedChunk {
		return img.streamVerified(d, p, rel)
	}
	data, err := img.vcache.get(chunkKey{ext.dev, d.BlkAddr}, func() ([]byte, error) {
		buf := make([]byte, d.Length)
		if err := img.readDev(int(d.Device), buf, int64(d.BlkAddr)<<img.blkBits); err != nil {
			return nil, err
		}
		if sum := sha256.Sum256(buf); sum != d.Digest {
			return nil, &ChunkDigestError{Device: int(d.Device), BlkAddr: d.BlkAddr, Length: d.Length, Want: d.Digest, Got: sum}
		}
		return buf, nil
	})
	if err != nil {
		return err
	}
	copy(p, data[rel:])
	return nil
}

// streamVerified hashes a chunk too large to keep in pieces, copying the
// bytes at [rel, rel+len(p)) of it into p on the way; p is cleared if the
// digest does not match.
func (img *Image) streamVerified(d *ChunkDigest, p []byte, rel int64) error {
	bp := verifyBufs.Get().(*[]byte)
	defer verifyBufs.Put(bp)
	buf := *bp
	h := sha256.New()
	start := int64(d.BlkAddr) << img.blkBits
	for pos, end := int64(0), int64(d.Length); pos < end; {
		m := min(int64(len(buf)), end-pos)
		if err := img.readDev(int(d.Device), buf[:m], start+pos); err != nil {
			clear(p)
			return err
		}
		h.Write(buf[:m])
		if lo, hi := max(pos, rel), min(pos+m, rel+int64(len(p))); lo < hi {
			copy(p[lo-rel:hi-rel], buf[lo-pos:hi-pos])
		}
		pos += m
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if sum != d.Digest {
		clear(p)
		return &ChunkDigestError{Device: int(d.Device), BlkAddr: d.BlkAddr, Length: d.Length, Want: d.Digest, Got: sum}
	}
	return nil
}

type chunkKey struct {
	dev int
	blk uint32
}

// chunkCache keeps the bytes of recently verified chunks (least recently
// used evicted first, verifyCacheBytes in all) and lets concurrent reads
// of one chunk share one verification. Keeping the bytes, not just the
// fact that they were verified, means a blob changed after verification
// still cannot make a read return wrong bytes.
type chunkCache struct {
	mu      sync.Mutex
	lru     list.List // of *cachedChunk, most recently used first
	items   map[chunkKey]*list.Element
	loading map[chunkKey]*chunkLoad
	bytes   int64
	closed  bool
}

type cachedChunk struct {
	key  chunkKey
	data []byte
}

type chunkLoad struct {
	done chan struct{}
	data []byte
	err  error
}

// get returns the chunk's verified bytes, calling load (once for all
// concurrent callers) if they are not cached. Errors are not cached.
func (c *chunkCache) get(key chunkKey, load func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if e := c.items[key]; e != nil {
		c.lru.MoveToFront(e)
		data := e.Value.(*cachedChunk).data
		c.mu.Unlock()
		return data, nil
	}
	if l := c.loading[key]; l != nil {
		c.mu.Unlock()
		<-l.done
		return l.data, l.err
	}
	if c.loading == nil {
		c.loading = make(map[chunkKey]*chunkLoad)
		c.items = make(map[chunkKey]*list.Element)
	}
	l := &chunkLoad{done: make(chan struct{})}
	c.loading[key] = l
	c.mu.Unlock()

	l.data, l.err = load()

	c.mu.Lock()
	delete(c.loading, key)
	if l.err == nil && !c.closed {
		c.add(key, l.data)
	}
	c.mu.Unlock()
	close(l.done)
	return l.data, l.err
}

// add inserts a chunk and evicts the least recently used ones beyond
// the budget. c.mu is held.
func (c *chunkCache) add(key chunkKey, data []byte) {
	c.items[key] = c.lru.PushFront(&cachedChunk{key: key, data: data})
	c.bytes += int64(len(data))
	for c.bytes > verifyCacheBytes && c.lru.Len() > 1 {
		e := c.lru.Back()
		cc := c.lru.Remove(e).(*cachedChunk)
		delete(c.items, cc.key)
		c.bytes -= int64(len(cc.data))
	}
}

// close drops the cached chunks and keeps loads still running from
// adding theirs.
func (c *chunkCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.lru.Init()
	clear(c.items)
	c.bytes = 0
}
