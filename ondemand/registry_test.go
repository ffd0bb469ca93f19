package ondemand

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// memObject is a BlockWriter that checks the cache-file rules (aligned
// offsets, lengths and buffers) and records what was written.
type memObject struct {
	t    testing.TB
	mu   sync.Mutex
	data []byte
	seen []bool // per block
}

func newMemObject(t testing.TB, size int64) *memObject {
	return &memObject{t: t, data: make([]byte, alignUp(size)), seen: make([]bool, alignUp(size)/BlockSize)}
}

func (m *memObject) WriteBlocks(p []byte, off int64) error {
	if off%BlockSize != 0 || len(p)%BlockSize != 0 || len(p) == 0 {
		m.t.Errorf("unaligned write: %d bytes at %d", len(p), off)
	}
	if uintptr(unsafe.Pointer(&p[0]))%BlockSize != 0 {
		m.t.Errorf("buffer not page aligned")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+int64(len(p)) > int64(len(m.data)) {
		m.t.Errorf("write past the object: %d bytes at %d of %d", len(p), off, len(m.data))
		return nil
	}
	copy(m.data[off:], p)
	for b := off / BlockSize; b < (off+int64(len(p)))/BlockSize; b++ {
		m.seen[b] = true
	}
	return nil
}

// buildImage makes a blob-mode image of a tree with random and repeated
// content and returns the registry spec for it.
func buildImage(t *testing.T, chunkSize int64) (ImageSpec, string) {
	t.Helper()
	src := t.TempDir()
	r := rand.New(rand.NewSource(1))
	for i, size := range []int{0, 10, 4096, 5000, 300000, 3 << 20} {
		data := make([]byte, size)
		r.Read(data)
		os.WriteFile(filepath.Join(src, "f"+string(rune('a'+i))), data, 0o644)
	}
	blobDir := t.TempDir()
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: chunkSize})
	store, err := blobstore.NewLocal(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	return ImageSpec{FSID: "img1", Bootstrap: img, Store: store}, blobs[0]
}

// serveBlob registers spec and resolves its first blob as the kernel
// would; both are released when the test ends.
func serveBlob(t *testing.T, spec ImageSpec) (*Registry, *Image, *Object) {
	t.Helper()
	reg := NewRegistry()
	t.Cleanup(func() { reg.Close() })
	im, err := reg.Register(spec)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := reg.Resolve("erofs,img1", im.Blobs[0].Digest.Hex())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(obj.Release)
	return reg, im, obj
}

func TestServeBootstrapAndBlob(t *testing.T) {
	spec, blobPath := buildImage(t, 64<<10)
	reg := NewRegistry()
	defer reg.Close()
	im, err := reg.Register(spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Blobs) != 1 {
		t.Fatalf("blobs: %+v", im.Blobs)
	}
	ctx := context.Background()

	// The bootstrap object is the image file.
	obj, err := reg.Resolve("erofs,img1", "img1")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(spec.Bootstrap)
	m := newMemObject(t, obj.Size())
	if err := obj.Fill(ctx, 0, obj.Size(), m); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.data[:len(want)], want) || obj.Size() != int64(len(want)) {
		t.Fatal("bootstrap content differs")
	}
	obj.Release()

	// The blob, filled in random ranges, ends up identical.
	obj, err = reg.Resolve("erofs,img1", im.Blobs[0].Digest.Hex())
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Release()
	blob, _ := os.ReadFile(blobPath)
	m = newMemObject(t, obj.Size())
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 50; i++ {
		off := r.Int63n(obj.Size())
		n := r.Int63n(200000) + 1
		if err := obj.Fill(ctx, off, n, m); err != nil {
			t.Fatal(err)
		}
		for b := off / BlockSize; b <= (off+n-1)/BlockSize && b < int64(len(m.seen)); b++ {
			if !m.seen[b] {
				t.Fatalf("fill %d+%d left block %d unwritten", off, n, b)
			}
		}
	}
	if err := obj.Fill(ctx, 0, obj.Size(), m); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.data, blob) {
		t.Fatal("blob content differs")
	}
	if reg.Stats.Fetches.Load() == 0 || reg.Stats.DigestFailures.Load() != 0 {
		t.Fatalf("stats: fetches %d digest failures %d", reg.Stats.Fetches.Load(), reg.Stats.DigestFailures.Load())
	}
}

func TestCorruptChunkNeverWritten(t *testing.T) {
	spec, blobPath := buildImage(t, 64<<10)
	blob, _ := os.ReadFile(blobPath)
	bad := bytes.Clone(blob)
	bad[100000] ^= 1 // inside some chunk
	os.WriteFile(blobPath, bad, 0o644)

	reg, _, obj := serveBlob(t, spec)
	m := newMemObject(t, obj.Size())
	err := obj.Fill(context.Background(), 0, obj.Size(), m)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("fill of a corrupt blob: %v", err)
	}
	// The corrupt block must not have been written; everything that
	// was written must be correct.
	if m.seen[100000/BlockSize] {
		t.Fatal("corrupt chunk reached the cache")
	}
	for b, ok := range m.seen {
		if ok && !bytes.Equal(m.data[b*BlockSize:(b+1)*BlockSize], blob[b*BlockSize:(b+1)*BlockSize]) {
			t.Fatalf("block %d written with wrong data", b)
		}
	}
	// The coalesced fetch, then the chunk alone and its retry.
	if reg.Stats.DigestFailures.Load() != 3 {
		t.Fatalf("digest failures counted: %d", reg.Stats.DigestFailures.Load())
	}
}

func TestConcurrentFillsCoalesce(t *testing.T) {
	spec, blobPath := buildImage(t, 1<<20)
	reg, im, obj := serveBlob(t, spec)
	m := newMemObject(t, obj.Size())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := obj.Fill(context.Background(), 0, obj.Size(), m); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	blob, _ := os.ReadFile(blobPath)
	if !bytes.Equal(m.data, blob) {
		t.Fatal("content differs")
	}
	chunks := int64(im.Blobs[0].Chunks)
	if f := reg.Stats.Fetches.Load(); f != chunks {
		t.Fatalf("%d fetches for %d chunks: each chunk must be fetched once", f, chunks)
	}
	t.Logf("%d chunks, %d fetches, %d coalesced", chunks, reg.Stats.Fetches.Load(), reg.Stats.Coalesced.Load())
}

func TestRegistryErrors(t *testing.T) {
	spec, _ := buildImage(t, 64<<10)
	reg := NewRegistry()
	defer reg.Close()
	for _, bad := range []string{"", "a/b", "..", "x y", string(make([]byte, 129))} {
		s := spec
		s.FSID = bad
		if _, err := reg.Register(s); !errors.Is(err, ErrBadName) {
			t.Errorf("fsid %q: %v", bad, err)
		}
	}
	noStore := spec
	noStore.Store = nil
	if _, err := reg.Register(noStore); !errors.Is(err, ErrBadImage) {
		t.Errorf("image with blobs but no store: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, make([]byte, 8192), 0o644)
	g := spec
	g.Bootstrap = garbage
	if _, err := reg.Register(g); !errors.Is(err, ErrBadImage) {
		t.Errorf("garbage image: %v", err)
	}
	if _, err := reg.Register(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(spec); !errors.Is(err, ErrExists) {
		t.Errorf("second registration: %v", err)
	}
	if _, err := reg.Resolve("erofs,img1", "unknown"); !errors.Is(err, ErrUnknownObject) {
		t.Errorf("unknown cookie: %v", err)
	}
	if _, err := reg.Resolve("erofs,other", "img1"); !errors.Is(err, ErrUnknownObject) {
		t.Errorf("wrong volume: %v", err)
	}
	obj, _ := reg.Resolve("erofs,img1", "img1")
	if err := reg.Unregister("img1", ""); !errors.Is(err, ErrImageInUse) {
		t.Errorf("unregister while open: %v", err)
	}
	obj.Release()
	if err := reg.Unregister("img1", ""); err != nil {
		t.Errorf("unregister: %v", err)
	}
	if err := reg.Unregister("img1", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("second unregister: %v", err)
	}
}

// countingStore counts the reads that reach the backend.
type countingStore struct {
	blobstore.Store
	reads *atomic.Int64
}

func (c countingStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := c.Store.Open(ctx, d)
	return countingBlob{b, c.reads}, err
}

type countingBlob struct {
	blobstore.Blob
	reads *atomic.Int64
}

func (c countingBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.Blob.ReadAt(ctx, p, off)
}

// TestAdjacentChunksOneRead: a fill covering several adjacent chunks
// reads them from the store in one request, and each is still verified.
func TestAdjacentChunksOneRead(t *testing.T) {
	spec, blobPath := buildImage(t, 64<<10)
	var reads atomic.Int64
	spec.Store = countingStore{spec.Store, &reads}
	reg, _, obj := serveBlob(t, spec)
	m := newMemObject(t, obj.Size())
	if err := obj.Fill(context.Background(), 0, 1<<20, m); err != nil {
		t.Fatal(err)
	}
	blob, _ := os.ReadFile(blobPath)
	if !bytes.Equal(m.data[:1<<20], blob[:1<<20]) {
		t.Fatal("content differs")
	}
	if reads.Load() != 1 || reg.Stats.Fetches.Load() < 2 {
		t.Fatalf("%d store reads for %d chunks; want 1", reads.Load(), reg.Stats.Fetches.Load())
	}
}

// TestMinFetch: with a minimum fetch size, a fill of one small chunk
// reads the chunks after it in the same request, verified and written,
// so that reading them later costs no store read.
func TestMinFetch(t *testing.T) {
	spec, blobPath := buildImage(t, 64<<10)
	var reads atomic.Int64
	spec.Store = countingStore{spec.Store, &reads}
	reg := NewRegistry()
	defer reg.Close()
	reg.MinFetch = 512 << 10
	im, err := reg.Register(spec)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := reg.Resolve("erofs,img1", im.Blobs[0].Digest.Hex())
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Release()
	m := newMemObject(t, obj.Size())
	ctx := context.Background()
	if err := obj.Fill(ctx, 0, 4096, m); err != nil {
		t.Fatal(err)
	}
	if reads.Load() != 1 || reg.Stats.FetchedBytes.Load() < 512<<10-64<<10 {
		t.Fatalf("one 4 KiB fill: %d store reads, %d bytes fetched; want 1 read of about 512 KiB", reads.Load(), reg.Stats.FetchedBytes.Load())
	}
	// The rest of the minimum fetch is in the object already.
	if err := obj.Fill(ctx, 256<<10, 200<<10, m); err != nil {
		t.Fatal(err)
	}
	if reads.Load() != 1 {
		t.Fatalf("reading fetched chunks went to the store: %d reads", reads.Load())
	}
	blob, _ := os.ReadFile(blobPath)
	if !bytes.Equal(m.data[:512<<10-64<<10], blob[:512<<10-64<<10]) {
		t.Fatal("content differs")
	}
}
