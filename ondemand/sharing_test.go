package ondemand

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// imageOf builds a blob-mode image of files of seeded random content in
// a blob directory of its own.
func imageOf(t *testing.T, seed int64, sizes ...int) (img, blobDir, blob string) {
	t.Helper()
	src := t.TempDir()
	r := rand.New(rand.NewSource(seed))
	for i, size := range sizes {
		data := make([]byte, size)
		r.Read(data)
		os.WriteFile(filepath.Join(src, "f"+string(rune('a'+i))), data, 0o644)
	}
	blobDir = t.TempDir()
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: 64 << 10})
	return img, blobDir, blobs[0]
}

func localStore(t *testing.T, dir string) blobstore.Store {
	t.Helper()
	s, err := blobstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fillAll resolves a kernel object and fills it whole.
func fillAll(t *testing.T, reg *Registry, volume, cookie string) ([]byte, error) {
	t.Helper()
	obj, err := reg.Resolve(volume, cookie)
	if err != nil {
		return nil, err
	}
	defer obj.Release()
	m := newMemObject(t, obj.Size())
	err = obj.Fill(context.Background(), 0, obj.Size(), m)
	return m.data, err
}

// TestForgedDigestGetsItsOwnObject: an image B that names image A's blob
// digest but carries other data (its own chunk table, its own store
// serving that data under A's digest) is a claim erofsd cannot check
// until the whole blob is read. Registered first, in A's domain, it must
// not decide what A reads: their blobs get different names (the cache
// objects the kernel asks for), each filled from its own image's store
// and table, and the bare digest no longer picks one of them.
func TestForgedDigestGetsItsOwnObject(t *testing.T) {
	imgA, dirA, blobA := imageOf(t, 1, 200000, 70000)
	imgB, _, blobB := imageOf(t, 2, 200000, 70000)
	digestA := filepath.Base(blobA)
	testimage.Retag(t, imgB, 1, digestA)
	// Without chunk states: with them, B's last chunk would not be its
	// step to the digest it names (TestChainedChunks/forged_digest).
	testimage.DropChunkStates(t, imgB)
	forged := t.TempDir()
	if err := os.Rename(blobB, filepath.Join(forged, digestA)); err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	defer reg.Close()
	b, err := reg.Register(ImageSpec{FSID: "b", DomainID: "d", Bootstrap: imgB, Store: localStore(t, forged)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := reg.Register(ImageSpec{FSID: "a", DomainID: "d", Bootstrap: imgA, Store: localStore(t, dirA)})
	if err != nil {
		t.Fatal(err)
	}
	if a.Blobs[0].Digest != b.Blobs[0].Digest {
		t.Fatalf("the forged image names %s, not %s", b.Blobs[0].Digest, a.Blobs[0].Digest)
	}
	if a.Blobs[0].Name == b.Blobs[0].Name {
		t.Fatalf("two chunk tables share the cache object name %s", a.Blobs[0].Name)
	}
	wantA, _ := os.ReadFile(blobA)
	gotA, err := fillAll(t, reg, "erofs,d", a.Blobs[0].Name)
	if err != nil || !bytes.Equal(gotA[:len(wantA)], wantA) {
		t.Fatalf("image A's blob object: %v, right bytes %v", err, bytes.Equal(gotA[:len(wantA)], wantA))
	}
	wantB, _ := os.ReadFile(filepath.Join(forged, digestA))
	gotB, err := fillAll(t, reg, "erofs,d", b.Blobs[0].Name)
	if err != nil || !bytes.Equal(gotB[:len(wantB)], wantB) {
		t.Fatalf("image B's blob object: %v", err)
	}
	if _, err := reg.Resolve("erofs,d", digestA); !errors.Is(err, ErrUnknownObject) {
		t.Errorf("the bare digest, named by two tables, resolved: %v", err)
	}
	if reg.Stats.DigestFailures.Load() != 0 {
		t.Errorf("%d digest failures: each object should read from its own store", reg.Stats.DigestFailures.Load())
	}
	// Alone in its volume, a bare digest (a mount made before blob names
	// had a table fingerprint) still resolves.
	if err := reg.Unregister("b", "d"); err != nil {
		t.Fatal(err)
	}
	if got, err := fillAll(t, reg, "erofs,d", digestA); err != nil || !bytes.Equal(got[:len(wantA)], wantA) {
		t.Errorf("bare digest with one table: %v", err)
	}
}

// lyingStore serves every blob with its bytes flipped.
type lyingStore struct {
	blobstore.Store
	reads *atomic.Int64
}

func (s lyingStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := s.Store.Open(ctx, d)
	return lyingBlob{b, s.reads}, err
}

type lyingBlob struct {
	blobstore.Blob
	reads *atomic.Int64
}

func (b lyingBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	b.reads.Add(1)
	n, err := b.Blob.ReadAt(ctx, p, off)
	for i := range p[:n] {
		p[i] ^= 0x5a
	}
	return n, err
}

// TestSharedBlobReadsFromEveryStore: two images that describe a blob
// alike share its object; the first registered has a lying store. A's
// reads still get the right bytes, from A's own store, after the lie
// fails verification; once the liar is gone only A's store is asked.
func TestSharedBlobReadsFromEveryStore(t *testing.T) {
	img, dir, blob := imageOf(t, 3, 300000, 5000)
	var lies atomic.Int64
	reg := NewRegistry()
	defer reg.Close()
	liar, err := reg.Register(ImageSpec{FSID: "liar", DomainID: "d", Bootstrap: img, Store: lyingStore{localStore(t, dir), &lies}})
	if err != nil {
		t.Fatal(err)
	}
	good, err := reg.Register(ImageSpec{FSID: "good", DomainID: "d", Bootstrap: img, Store: localStore(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	if liar.Blobs[0].Name != good.Blobs[0].Name || liar.blobs[0] != good.blobs[0] {
		t.Fatal("images describing a blob alike do not share it")
	}
	want, _ := os.ReadFile(blob)
	got, err := fillAll(t, reg, "erofs,d", good.Blobs[0].Name)
	if err != nil || !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("read through a shared blob whose first store lies: %v", err)
	}
	if lies.Load() == 0 || reg.Stats.DigestFailures.Load() == 0 {
		t.Errorf("the lying store was not asked (%d reads, %d digest failures)", lies.Load(), reg.Stats.DigestFailures.Load())
	}
	if err := reg.Unregister("liar", "d"); err != nil {
		t.Fatal(err)
	}
	if n := len(good.blobs[0].storeList()); n != 1 {
		t.Errorf("%d stores after the liar left", n)
	}
	before := lies.Load()
	if got, err := fillAll(t, reg, "erofs,d", good.Blobs[0].Name); err != nil || !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("after the liar left: %v", err)
	}
	if lies.Load() != before {
		t.Error("the liar's store is still asked")
	}
	if err := reg.Unregister("good", "d"); err != nil {
		t.Fatal(err)
	}
	if len(reg.blobs) != 0 {
		t.Errorf("%d blobs left after the last image", len(reg.blobs))
	}
}

// TestZeroChunkNotFetched: the builder's all-zero chunk (the holes of a
// sparse file) is written as zeros without a store read.
func TestZeroChunkNotFetched(t *testing.T) {
	src := t.TempDir()
	sparse := make([]byte, 5<<20)
	copy(sparse[3<<20:], "data after two holes")
	os.WriteFile(filepath.Join(src, "sparse"), sparse, 0o644)
	blobDir := t.TempDir()
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir})
	var reads atomic.Int64
	reg := NewRegistry()
	defer reg.Close()
	im, err := reg.Register(ImageSpec{FSID: "z", Bootstrap: img, Store: countingStore{localStore(t, blobDir), &reads}})
	if err != nil {
		t.Fatal(err)
	}
	zero := -1
	for i, c := range im.blobs[0].chunks {
		if c.zero {
			zero = i
		}
	}
	if zero < 0 || len(im.blobs[0].chunks) != 2 {
		t.Fatalf("chunks %+v: want one zero chunk and one of data", im.blobs[0].chunks)
	}
	c := im.blobs[0].chunks[zero]
	obj, err := reg.Resolve("erofs,z", im.Blobs[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Release()
	m := newMemObject(t, obj.Size())
	for i := range m.data {
		m.data[i] = 0xff
	}
	if err := obj.Fill(context.Background(), c.off, c.length, m); err != nil {
		t.Fatal(err)
	}
	if reads.Load() != 0 || reg.Stats.ZeroChunks.Load() != 1 {
		t.Errorf("zero chunk: %d store reads, %d zero chunks written", reads.Load(), reg.Stats.ZeroChunks.Load())
	}
	if !bytes.Equal(m.data[c.off:c.off+c.length], make([]byte, c.length)) {
		t.Error("the zero chunk was not written as zeros")
	}
	if err := obj.Fill(context.Background(), 0, obj.Size(), m); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(blobs[0])
	if !bytes.Equal(m.data[:len(want)], want) {
		t.Error("blob content differs")
	}
}

// TestUncoveredRangeNotServed: blob bytes no chunk of the table covers
// are nothing the image vouches for: a fill of them fails instead of
// writing zeros; past the blob's end zeros are right.
func TestUncoveredRangeNotServed(t *testing.T) {
	data := bytes.Repeat([]byte{7}, BlockSize)
	digest := sha256.Sum256(data)
	d := &blobData{size: 3 * BlockSize, chunks: []chunk{{off: 0, length: BlockSize, digest: digest}, {off: 2 * BlockSize, length: BlockSize, digest: digest}}}
	dir := t.TempDir()
	blob := append(append(append([]byte(nil), data...), bytes.Repeat([]byte{9}, BlockSize)...), data...)
	os.WriteFile(filepath.Join(dir, hexSum(blob)), blob, 0o644)
	d.digest, _ = blobstore.ParseDigest(hexSum(blob))
	d.addStore(localStore(t, dir))
	s := &blobSource{blobData: d, bufs: newBufferPool(1 << 20), stats: &Stats{}}
	m := newMemObject(t, 5*BlockSize)
	if err := s.Fill(context.Background(), 0, BlockSize, m); err != nil {
		t.Fatal(err)
	}
	if err := s.Fill(context.Background(), BlockSize, BlockSize, m); !errors.Is(err, ErrUncovered) {
		t.Errorf("fill of the gap: %v, want ErrUncovered", err)
	}
	if err := s.Fill(context.Background(), 2*BlockSize, 3*BlockSize, m); err != nil {
		t.Errorf("fill of the last chunk and past the end: %v", err)
	}
	if !bytes.Equal(m.data[2*BlockSize:3*BlockSize], data) {
		t.Error("last chunk differs")
	}
}

func hexSum(p []byte) string { s := sha256.Sum256(p); return hex.EncodeToString(s[:]) }
