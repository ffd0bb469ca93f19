package ondemand

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/sha256chain"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

func TestCoversBlob(t *testing.T) {
	s := func(b byte) sha256chain.State { return sha256chain.State{b} }
	three := func() []chunk {
		return []chunk{{off: 0, length: 8192}, {off: 8192, length: 100}, {off: 12288, length: 4096}}
	}
	for _, tc := range []struct {
		name   string
		chunks []chunk
		states []sha256chain.State
		size   int64
		want   bool
	}{
		{"covers the blob", three(), []sha256chain.State{sha256chain.Initial, s(1), s(2)}, 16384, true},
		{"no states", three(), nil, 16384, false},
		{"a state not recorded", three(), []sha256chain.State{sha256chain.Initial, {}, s(2)}, 16384, false},
		{"first state not initial", three(), []sha256chain.State{s(9), s(1), s(2)}, 16384, false},
		{"blob longer", three(), []sha256chain.State{sha256chain.Initial, s(1), s(2)}, 20480, false},
		{"a gap", []chunk{{off: 0, length: 4096}, {off: 8192, length: 4096}}, []sha256chain.State{sha256chain.Initial, s(1)}, 12288, false},
		{"not from the start", []chunk{{off: 4096, length: 4096}}, []sha256chain.State{sha256chain.Initial}, 8192, false},
		{"no chunks", nil, nil, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := coversBlob(tc.chunks, tc.states, tc.size); got != tc.want {
				t.Fatalf("coversBlob: %v, want %v", got, tc.want)
			}
			if !tc.want {
				return
			}
			// Each chunk steps to the next one's state, the last to
			// the blob's digest.
			d := &blobData{size: tc.size, chunks: tc.chunks, states: tc.states}
			for i := range tc.chunks {
				k := d.newCheck(&tc.chunks[i])
				last := i == len(tc.chunks)-1
				if k.h == nil || !k.chained || k.last != last || !last && k.next != tc.states[i+1] {
					t.Fatalf("chunk %d: chained %v, last %v, steps to %x", i, k.chained, k.last, k.next)
				}
			}
		})
	}
}

// editChunkState sets entry i of the chunk states of the image at path to
// st and rehashes the section: a well-formed claim that is wrong.
func editChunkState(t *testing.T, path string, i int, st sha256chain.State) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.LastIndex(data, []byte("EROFSDCS"))
	if at < 0 || int(binary.LittleEndian.Uint64(data[at+16:])) <= i {
		t.Fatalf("no chunk state %d", i)
	}
	copy(data[at+64+32*i:], st[:])
	sum := sha256.Sum256(data[at+64:])
	copy(data[at+0x18:], sum[:])
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestChainedChunks: an image with chunk states has each chunk checked as
// its step of the blob's sha256, which proves the blob; the states are
// claims like the digests, so a wrong one refuses its chunks (never
// serves them) even where the digest table agrees with the bytes.
func TestChainedChunks(t *testing.T) {
	// Chunks of 256 KiB, over minKernelCopy: each can be copied alone.
	// Blob order: a's 4 chunks, the all-zero chunk, z's 2 (the last one
	// padded).
	src := t.TempDir()
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	os.WriteFile(filepath.Join(src, "a"), data, 0o644)
	os.WriteFile(filepath.Join(src, "m"), make([]byte, 512<<10), 0o644)
	os.WriteFile(filepath.Join(src, "z"), data[1000:512<<10], 0o644)
	build1 := func(t *testing.T) (img string, blob []byte, dir string) {
		dir = t.TempDir()
		img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: dir, ChunkSize: 256 << 10})
		blob, err := os.ReadFile(blobs[0])
		if err != nil {
			t.Fatal(err)
		}
		return img, blob, dir
	}
	registerIn := func(t *testing.T, img string, store blobstore.Store) (*Registry, *Image, *Object) {
		reg := NewRegistry()
		t.Cleanup(func() { reg.Close() })
		im, err := reg.Register(ImageSpec{FSID: "c", Bootstrap: img, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		obj, err := reg.Resolve(im.VolumeKey(), im.Blobs[0].Name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(obj.Release)
		return reg, im, obj
	}
	register := func(t *testing.T, img, dir string) (*Registry, *Image, *Object) {
		return registerIn(t, img, localStore(t, dir))
	}
	fill := func(obj *Object, c chunk) error {
		return obj.Fill(context.Background(), c.off, alignUp(c.length), newMemObject(t, obj.Size()))
	}
	// The three ways a fetched chunk is checked: read and written,
	// copied from a local file and checked where it landed, streamed
	// and staged. Each must check the step, not the digest.
	paths := []struct {
		name  string
		store func(dir string) blobstore.Store
		// writer returns a writer for obj and whether the path was
		// taken through it.
		writer func(obj *Object) (BlockWriter, func() bool)
	}{
		{"written", func(dir string) blobstore.Store { return localStore(t, dir) }, func(obj *Object) (BlockWriter, func() bool) {
			return newMemObject(t, obj.Size()), func() bool { return true }
		}},
		{"copied", func(dir string) blobstore.Store { return localStore(t, dir) }, func(obj *Object) (BlockWriter, func() bool) {
			m := &memCopier{memObject: newMemObject(t, obj.Size()), src: obj.blob}
			return m, func() bool { return len(m.copies) > 0 }
		}},
		{"streamed", func(dir string) blobstore.Store { return &rangeStore{localStore(t, dir)} }, func(obj *Object) (BlockWriter, func() bool) {
			m := &memStager{memObject: newMemObject(t, obj.Size())}
			return m, func() bool { return m.pieces > 0 }
		}},
	}
	// expectRefused fills each chunk alone by each path and checks that
	// exactly the chunks refused says are refused.
	expectRefused := func(t *testing.T, img, dir string, refused func(i int) bool) {
		for _, p := range paths {
			t.Run(p.name, func(t *testing.T) {
				_, _, first := registerIn(t, img, p.store(dir))
				var failures int64
				for i, c := range first.blob.chunks {
					if c.zero {
						continue
					}
					// Afresh for each: a stream that failed makes
					// its source read the next chunks plainly.
					reg, _, obj := registerIn(t, img, p.store(dir))
					w, taken := p.writer(obj)
					err := obj.Fill(context.Background(), c.off, alignUp(c.length), w)
					if refused(i) != errors.Is(err, ErrDigestMismatch) {
						t.Errorf("chunk %d (to be refused %v): %v", i, refused(i), err)
					}
					if !taken() {
						t.Errorf("chunk %d did not go this way", i)
					}
					failures += reg.Stats.DigestFailures.Load()
				}
				if failures == 0 {
					t.Error("no digest failures counted")
				}
			})
		}
	}

	t.Run("whole", func(t *testing.T) {
		img, blob, dir := build1(t)
		reg, im, obj := register(t, img, dir)
		if !obj.blob.chained() {
			t.Fatal("the builder's image is not chained")
		}
		if !obj.ProvesBlob(im.Blobs[0].Digest.Sum()) || obj.ProvesBlob([32]byte{1}) {
			t.Fatal("ProvesBlob does not go by the blob's digest")
		}
		m := newMemObject(t, obj.Size())
		if err := obj.Fill(context.Background(), 0, obj.Size(), m); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.data[:len(blob)], blob) || reg.Stats.DigestFailures.Load() != 0 || reg.Stats.ZeroChunks.Load() != 1 {
			t.Fatalf("right bytes %v, %d digest failures, %d zero chunks", bytes.Equal(m.data[:len(blob)], blob), reg.Stats.DigestFailures.Load(), reg.Stats.ZeroChunks.Load())
		}
	})
	t.Run("without states", func(t *testing.T) {
		img, _, dir := build1(t)
		testimage.DropChunkStates(t, img)
		_, im, obj := register(t, img, dir)
		if obj.blob.chained() || obj.ProvesBlob(im.Blobs[0].Digest.Sum()) {
			t.Fatal("an image without chunk states is chained")
		}
		if err := obj.Fill(context.Background(), 0, obj.Size(), newMemObject(t, obj.Size())); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a later version of the states", func(t *testing.T) {
		img, _, dir := build1(t)
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		b[bytes.LastIndex(b, []byte("EROFSDCS"))+8] = 2
		os.WriteFile(img, b, 0o644)
		_, _, obj := register(t, img, dir)
		if obj.blob.chained() {
			t.Fatal("chained by a section of an unknown version")
		}
		if err := obj.Fill(context.Background(), 0, obj.Size(), newMemObject(t, obj.Size())); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a wrong state", func(t *testing.T) {
		// Chunks 1 and 2 step to and from it.
		img, _, dir := build1(t)
		editChunkState(t, img, 2, sha256chain.State{1})
		expectRefused(t, img, dir, func(i int) bool { return i == 1 || i == 2 })
	})
	// Concurrent fills of one object, in random orders, read and
	// streamed, every chunk claimed by whichever fill comes first: the
	// steps are checked whoever fetches (run with -race).
	t.Run("concurrent fills", func(t *testing.T) {
		img, blob, dir := build1(t)
		editChunkState(t, img, 2, sha256chain.State{1})
		for _, store := range []func(string) blobstore.Store{
			func(dir string) blobstore.Store { return localStore(t, dir) },
			func(dir string) blobstore.Store { return &rangeStore{localStore(t, dir)} },
		} {
			_, _, obj := registerIn(t, img, store(dir))
			m := newMemObject(t, obj.Size())
			chunks := obj.blob.chunks
			var wg sync.WaitGroup
			errs := make([][]error, 8)
			for g := range errs {
				errs[g] = make([]error, len(chunks))
				wg.Go(func() {
					for _, i := range rand.New(rand.NewPCG(uint64(g), 1)).Perm(len(chunks)) {
						c := chunks[i]
						errs[g][i] = obj.Fill(context.Background(), c.off, alignUp(c.length), m)
					}
				})
			}
			wg.Wait()
			for g := range errs {
				for i, err := range errs[g] {
					if refused := i == 1 || i == 2; refused != errors.Is(err, ErrDigestMismatch) {
						t.Errorf("fill %d, chunk %d (to be refused %v): %v", g, i, refused, err)
					}
				}
			}
			for i, c := range chunks {
				got := m.data[c.off : c.off+c.length]
				if i == 1 || i == 2 {
					if !bytes.Equal(got, make([]byte, c.length)) {
						t.Errorf("refused chunk %d was written", i)
					}
				} else if !bytes.Equal(got, blob[c.off:c.off+c.length]) {
					t.Errorf("chunk %d: wrong bytes", i)
				}
			}
		}
	})
	t.Run("a zero chunk's step from a wrong state", func(t *testing.T) {
		img, _, dir := build1(t)
		_, _, obj := register(t, img, dir)
		z := -1
		for i, c := range obj.blob.chunks {
			if c.zero {
				z = i
			}
		}
		if z < 1 {
			t.Fatalf("zero chunk %d of %d", z, len(obj.blob.chunks))
		}
		editChunkState(t, img, z, sha256chain.State{1})
		_, _, obj = register(t, img, dir)
		if err := fill(obj, obj.blob.chunks[z]); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("the zero chunk stepping to a wrong state: %v", err)
		}
	})
	t.Run("forged digest", func(t *testing.T) {
		// An image naming another blob's digest, with states of its
		// own: its last step does not end in the digest it names.
		img, blob, dir := build1(t)
		other := sha256.Sum256([]byte("another blob"))
		otherHex := hex.EncodeToString(other[:])
		testimage.Retag(t, img, 1, otherHex)
		if err := os.WriteFile(filepath.Join(dir, otherHex), blob, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, obj := register(t, img, dir)
		last := len(obj.blob.chunks) - 1
		expectRefused(t, img, dir, func(i int) bool { return i == last })
	})
}

// TestBlobNameCoversStates: the cache object's name fingerprints the
// states too, so images that describe a blob's chain differently never
// share cached data, and a chained description never names an unchained
// one's object.
func TestBlobNameCoversStates(t *testing.T) {
	digest, err := blobstore.ParseDigest(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	chunks := []chunk{{off: 0, length: 8192}, {off: 8192, length: 4096}}
	states := func(second byte) []sha256chain.State {
		st := []sha256chain.State{sha256chain.Initial, {second}}
		if !coversBlob(chunks, st, 12288) {
			t.Fatal("not chained")
		}
		return st
	}
	chained := blobName(digest, 12288, chunks, states(1))
	names := map[string]string{
		"chained":             chained,
		"unchained":           blobName(digest, 12288, chunks, nil),
		"another state":       blobName(digest, 12288, chunks, states(2)),
		"the same, once more": blobName(digest, 12288, chunks, states(1)),
	}
	if names["the same, once more"] != chained {
		t.Fatal("one description, two names")
	}
	for what, name := range names {
		if what != "the same, once more" && what != "chained" && name == chained {
			t.Errorf("%s: the chained description's name %s", what, name)
		}
	}
}
