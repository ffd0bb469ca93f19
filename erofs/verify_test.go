package erofs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// corruptBlob writes a copy of the table image's blob with one byte
// flipped at byte at into a new directory and returns it.
func corruptBlob(t *testing.T, ti *tableImage, at int64) string {
	t.Helper()
	blob, err := os.ReadFile(ti.blobPath)
	if err != nil {
		t.Fatal(err)
	}
	blob[at] ^= 0x20
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(ti.blobPath)), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVerifiedBlobs(t *testing.T) {
	ti := buildTableImage(t)
	plain, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(ti.blobDir)))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	// Chunk 3 of a file of random bytes: a whole 4 KiB chunk of its own.
	const name = "size_100000"
	chunks, err := plain.Chunks(name)
	if err != nil {
		t.Fatal(err)
	}
	off := chunks[3].Offset
	ei := slices.IndexFunc(ti.entries, func(e disk.ChunkEntry) bool { return e.BlkAddr == chunks[3].BlkAddr })
	e := ti.entries[ei]
	if e.Length != 4096 {
		t.Fatalf("entry %+v", e)
	}
	want, err := os.ReadFile(filepath.Join(ti.src, name))
	if err != nil {
		t.Fatal(err)
	}
	badBlob := corruptBlob(t, ti, int64(e.BlkAddr)*4096+int64(e.Length)/2)
	flat, err := readSeed("flat")
	if err != nil {
		t.Fatal(err)
	}
	tableAt := func(f func(b []byte)) []byte {
		b := slices.Clone(ti.data)
		f(b[ti.tableOff:])
		return b
	}
	withEntries := func(f func([]disk.ChunkEntry) []disk.ChunkEntry) []byte {
		return ti.withTable(f(slices.Clone(ti.entries)))
	}

	tests := []struct {
		name    string
		data    []byte
		blobs   string // blob directory, "" for none
		openErr error  // what Open must fail with
		file    string // file to read
		readErr error  // what reading it must fail with; nil: the source bytes
		msg     string // in the read error
		want    []byte // the file's bytes if not the blob file's
	}{
		{name: "clean", data: ti.data, blobs: ti.blobDir, file: name},
		{name: "flipped blob byte", data: ti.data, blobs: badBlob, file: name, readErr: ErrDigestMismatch,
			msg: fmt.Sprintf("read %s: nid %d chunk %d at offset %d: %v", name, nidOf(t, plain, name), off/4096, off, ErrDigestMismatch)},
		{name: "table digest entry wrong", blobs: ti.blobDir, file: name, readErr: ErrDigestMismatch, msg: "chunk table says",
			data: withEntries(func(es []disk.ChunkEntry) []disk.ChunkEntry { es[ei].Digest[3] ^= 1; return es })},
		{name: "table entry missing", blobs: ti.blobDir, file: name, readErr: ErrCorrupt, msg: "no chunk table entry",
			data: withEntries(func(es []disk.ChunkEntry) []disk.ChunkEntry { return slices.Delete(es, ei, ei+1) })},
		{name: "table entry too short", blobs: ti.blobDir, file: name, readErr: ErrCorrupt, msg: "covers 1 bytes",
			data: withEntries(func(es []disk.ChunkEntry) []disk.ChunkEntry { es[ei].Length = 1; return es })},
		{name: "no table", data: ti.data[:ti.tableOff], blobs: ti.blobDir, openErr: ErrNoChunkTable},
		{name: "table entries damaged", data: tableAt(func(b []byte) { b[disk.ChunkTableHeaderSize+0x20] ^= 1 }), blobs: ti.blobDir, openErr: ErrCorrupt},
		{name: "table count too large", data: tableAt(func(b []byte) { b[0x17] = 0x10 }), blobs: ti.blobDir, openErr: ErrCorrupt},
		{name: "table version unknown", data: tableAt(func(b []byte) { b[8] = 9 }), blobs: ti.blobDir, openErr: ErrUnsupported},
		{name: "no blob resolver", data: ti.data, file: name, readErr: ErrNoBlob},
		{name: "self-contained image", data: flat, file: "tail", want: fileData(1, 5000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []Option{WithVerifiedBlobs()}
			if tt.blobs != "" {
				opts = append(opts, WithBlobs(DirBlobs(tt.blobs)))
			}
			img, err := Open(bytes.NewReader(tt.data), opts...)
			if tt.openErr != nil {
				if !errors.Is(err, tt.openErr) {
					t.Fatalf("Open: %v, want %v", err, tt.openErr)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer img.Close()
			got, err := img.ReadFile(tt.file)
			if tt.readErr != nil {
				if !errors.Is(err, tt.readErr) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("ReadFile: %v, want %v containing %q", err, tt.readErr, tt.msg)
				}
				if got != nil {
					t.Fatalf("ReadFile returned %d bytes with its error", len(got))
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatalf("ReadFile: %v", err)
			}
			w := want
			if tt.want != nil {
				w = tt.want
			}
			if !bytes.Equal(got, w) {
				t.Fatalf("ReadFile: wrong bytes")
			}
		})
	}

	t.Run("typed error", func(t *testing.T) {
		img, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(badBlob)), WithVerifiedBlobs())
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		f, err := img.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := bytes.Repeat([]byte{0xAA}, 100)
		_, err = f.(io.ReaderAt).ReadAt(buf, off+10)
		var de *ChunkDigestError
		var pe *fs.PathError
		if !errors.As(err, &de) || de.Device != 1 || de.BlkAddr != e.BlkAddr || de.Length != e.Length || de.Want != e.Digest || de.Got == de.Want {
			t.Fatalf("ReadAt: %v (%+v)", err, de)
		}
		if !errors.As(err, &pe) || pe.Path != name || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadAt: %v", err)
		}
		// Other chunks of the blob still read.
		if _, err := f.(io.ReaderAt).ReadAt(buf, off+4096); err != nil && err != io.EOF && !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("ReadAt of another chunk: %v", err)
		}
		// Check reports the same error type.
		_, err = Check(context.Background(), bytes.NewReader(ti.data), CheckOptions{Blobs: DirBlobs(badBlob), VerifyData: true})
		if !errors.As(err, &de) || !errors.Is(err, ErrDigestMismatch) || de.BlkAddr != e.BlkAddr {
			t.Fatalf("Check: %v", err)
		}
		// Without the option, the reader does not verify.
		unverified, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(badBlob)))
		if err != nil {
			t.Fatal(err)
		}
		defer unverified.Close()
		if b, err := unverified.ReadFile(name); err != nil || bytes.Equal(b, want) {
			t.Fatalf("unverified read: %v", err)
		}
	})

	t.Run("whole tree", func(t *testing.T) {
		img, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(ti.blobDir)), WithVerifiedBlobs())
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		compareTree(t, img, ti.src, variants[3], false)
	})
}

// countingBlob serves a mutable blob and counts the bytes read from it.
type countingBlob struct {
	mu   sync.Mutex
	data []byte
	n    atomic.Int64
}

func (c *countingBlob) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := bytes.NewReader(c.data).ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingBlob) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.data))
}

// readPieces reads name with ReadAt in pieces of n bytes.
func readPieces(img *Image, name string, n int) ([]byte, error) {
	f, err := img.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, n)
	for off := int64(0); ; off += int64(n) {
		m, err := f.(io.ReaderAt).ReadAt(buf, off)
		out = append(out, buf[:m]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// TestVerifiedReadsHashOnce reads a file in small pieces: each chunk is
// read from the blob (and hashed) once, and the verified bytes, not the
// blob's current ones, serve later reads.
func TestVerifiedReadsHashOnce(t *testing.T) {
	ti := buildTableImage(t)
	data, err := os.ReadFile(ti.blobPath)
	if err != nil {
		t.Fatal(err)
	}
	blob := &countingBlob{data: data}
	img, err := Open(bytes.NewReader(ti.data), WithVerifiedBlobs(),
		WithBlobs(BlobResolverFunc(func(int, string) (io.ReaderAt, error) { return blob, nil })))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	const name = "size_100000"
	want, _ := os.ReadFile(filepath.Join(ti.src, name))
	chunks, err := img.Chunks(name)
	if err != nil {
		t.Fatal(err)
	}
	var chunkBytes int64
	seen := map[uint32]bool{}
	for _, c := range chunks {
		if c.Hole || seen[c.BlkAddr] {
			continue
		}
		seen[c.BlkAddr] = true
		d, ok := findChunkDigest(img.vtable, c.Device, c.BlkAddr)
		if !ok {
			t.Fatalf("chunk %+v has no entry", c)
		}
		chunkBytes += int64(d.Length)
	}
	got, err := readPieces(img, name, 512)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read: %v", err)
	}
	if n := blob.n.Load(); n != chunkBytes {
		t.Fatalf("read %d blob bytes for %d bytes of chunks (512-byte reads)", n, chunkBytes)
	}
	// The blob changes under the image: cached chunks stay right.
	blob.mu.Lock()
	for i := range blob.data {
		blob.data[i] ^= 0xFF
	}
	blob.mu.Unlock()
	got, err = readPieces(img, name, 4000)
	if err != nil || !bytes.Equal(got, want) || blob.n.Load() != chunkBytes {
		t.Fatalf("second read: %v, %d blob bytes read", err, blob.n.Load())
	}
	// Other files' chunks are verified on first use and fail now.
	if _, err := img.ReadFile("size_4097"); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("read of changed chunks: %v", err)
	}
	img.Close()
	if _, err := img.ReadFile(name); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

// TestVerifiedLargeChunks covers chunks too large to cache: each read
// hashes the whole chunk, and a failed read leaves no blob bytes behind.
func TestVerifiedLargeChunks(t *testing.T) {
	old := maxCachedChunk
	maxCachedChunk = 1000 // every 4 KiB chunk is streamed
	t.Cleanup(func() { maxCachedChunk = old })
	ti := buildTableImage(t)
	const name = "size_100000"
	want, _ := os.ReadFile(filepath.Join(ti.src, name))
	img, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(ti.blobDir)), WithVerifiedBlobs())
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for _, n := range []int{1, 700, 4096, 5000, 1 << 20} {
		if got, err := readPieces(img, name, n); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d-byte reads: %v", n, err)
		}
	}
	if img.vcache.lru.Len() != 0 {
		t.Fatalf("%d large chunks cached", img.vcache.lru.Len())
	}

	chunks, err := img.Chunks(name)
	if err != nil {
		t.Fatal(err)
	}
	c := chunks[3]
	bad := corruptBlob(t, ti, int64(c.BlkAddr)*4096+100)
	img2, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(bad)), WithVerifiedBlobs())
	if err != nil {
		t.Fatal(err)
	}
	defer img2.Close()
	f, _ := img2.Open(name)
	defer f.Close()
	buf := make([]byte, 3*4096)
	n, err := f.(io.ReaderAt).ReadAt(buf, c.Offset-4096) // chunks 2, 3 and 4
	if !errors.Is(err, ErrDigestMismatch) || n != 0 {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(buf[4096:], make([]byte, len(buf)-4096)) {
		t.Fatal("the failed read left blob bytes of the bad chunk in the buffer")
	}
}

func TestChunkCache(t *testing.T) {
	old := verifyCacheBytes
	verifyCacheBytes = 10
	t.Cleanup(func() { verifyCacheBytes = old })
	var c chunkCache
	loads := 0
	get := func(blk uint32) []byte {
		t.Helper()
		b, err := c.get(chunkKey{1, blk}, func() ([]byte, error) {
			loads++
			return []byte{byte(blk), 0, 0, 0}, nil
		})
		if err != nil || b[0] != byte(blk) {
			t.Fatalf("get %d: %v %v", blk, b, err)
		}
		return b
	}
	get(1)
	get(2)
	get(1) // cached; 1 is now the most recently used
	get(3) // 12 bytes: 2 is evicted
	if loads != 3 || c.bytes != 8 || c.lru.Len() != 2 || c.items[chunkKey{1, 2}] != nil {
		t.Fatalf("loads %d, bytes %d, %d cached", loads, c.bytes, c.lru.Len())
	}
	get(2)
	if loads != 4 || c.items[chunkKey{1, 1}] != nil {
		t.Fatalf("loads %d: LRU order wrong", loads)
	}

	// Errors are not cached.
	boom := errors.New("boom")
	for i := 0; i < 2; i++ {
		if _, err := c.get(chunkKey{1, 9}, func() ([]byte, error) { loads++; return nil, boom }); err != boom {
			t.Fatal(err)
		}
	}
	if loads != 6 {
		t.Fatalf("loads %d: an error was cached", loads)
	}

	// Concurrent readers of one chunk share one load.
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := c.get(chunkKey{2, 1}, func() ([]byte, error) {
				calls.Add(1)
				<-release
				return []byte("x"), nil
			})
			if err != nil || string(b) != "x" {
				t.Errorf("get: %q %v", b, err)
			}
		}()
	}
	for {
		c.mu.Lock()
		n := len(c.loading)
		c.mu.Unlock()
		if n == 1 {
			break
		}
	}
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d loads for one chunk", calls.Load())
	}

	c.close()
	get(5)
	if c.lru.Len() != 0 || c.bytes != 0 {
		t.Fatal("a closed cache keeps chunks")
	}
}

// TestVerifiedConcurrentReads reads one file from many goroutines at
// once, with a cache too small to hold it, so loads, hits and evictions
// interleave (run with -race).
func TestVerifiedConcurrentReads(t *testing.T) {
	old := verifyCacheBytes
	verifyCacheBytes = 3 * 4096
	t.Cleanup(func() { verifyCacheBytes = old })
	ti := buildTableImage(t)
	const name = "size_100000"
	want, _ := os.ReadFile(filepath.Join(ti.src, name))
	img, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(ti.blobDir)), WithVerifiedBlobs())
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	f, err := img.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ra := f.(io.ReaderAt)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for i := 0; i < 200; i++ {
				off := int64((g*7919 + i*3001) % len(want))
				n, err := ra.ReadAt(buf, off)
				if err != nil && err != io.EOF || !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("ReadAt %d: %d, %v", off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if img.vcache.bytes > verifyCacheBytes {
		t.Fatalf("cache holds %d bytes, limit %d", img.vcache.bytes, verifyCacheBytes)
	}
}

// findChunkDigest returns the entry of table starting at (dev, blk).
func findChunkDigest(table []ChunkDigest, dev int, blk uint32) (*ChunkDigest, bool) {
	i, ok := slices.BinarySearchFunc(table, [2]uint64{uint64(dev), uint64(blk)}, func(e ChunkDigest, k [2]uint64) int {
		if uint64(e.Device) != k[0] {
			if uint64(e.Device) < k[0] {
				return -1
			}
			return 1
		}
		switch {
		case uint64(e.BlkAddr) < k[1]:
			return -1
		case uint64(e.BlkAddr) > k[1]:
			return 1
		}
		return 0
	})
	if !ok {
		return nil, false
	}
	return &table[i], true
}
