package build

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/prefetchlist"
)

// writeSmallFilesTree makes many small files (text and random, one a
// duplicate, one all zeros, one empty) beside files of one chunk and more.
func writeSmallFilesTree(t *testing.T, chunk int) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	files := map[string][]byte{
		"empty":        {},
		"zeros":        make([]byte, 5000),
		"exact-chunk":  make([]byte, chunk),
		"large":        make([]byte, 3*chunk+123),
		"dup/small-07": nil,
	}
	for _, name := range []string{"exact-chunk", "large"} {
		for i := range files[name] {
			files[name][i] = byte(rng.Uint32())
		}
	}
	for i := range 60 {
		b := make([]byte, 1+rng.IntN(chunk/3))
		for j := range b {
			if i%2 == 0 {
				b[j] = "abcdefgh \n"[rng.IntN(10)]
			} else {
				b[j] = byte(rng.Uint32())
			}
		}
		files[filepath.Join("small", string(rune('a'+i%26))+"-"+string(rune('0'+i/26)))] = b
	}
	files["dup/small-07"] = files["small/h-0"]
	writeFiles(t, dir, files)
	return dir, files
}

// fileChunksOf returns the chunks of the regular file name.
func fileChunksOf(t *testing.T, im *erofs.Image, name string) []erofs.FileChunk {
	t.Helper()
	fi, err := im.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	nid := fi.Sys().(*erofs.Stat).Nid
	var out []erofs.FileChunk
	err = im.FileChunks(context.Background(), 0, func(n uint64, chunks []erofs.FileChunk) error {
		if n == nid {
			out = chunks
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPackSmallFiles: with PackSmallFiles, files smaller than a chunk
// share digest table entries of up to a chunk; every file reads back
// verified, Check verifies every entry, a duplicate small file shares
// its twin's blocks, and a damaged byte in a pack fails the reads of the
// files in that pack only.
func TestPackSmallFiles(t *testing.T) {
	const chunk = 64 << 10
	src, files := writeSmallFilesTree(t, chunk)
	blobs := t.TempDir()
	img, res := buildDir(t, src, Options{ChunkSize: chunk, BlobDir: blobs, PackSmallFiles: true})
	_, plainRes := buildDir(t, src, Options{ChunkSize: chunk, BlobDir: t.TempDir()})
	if len(res.Blobs) != 1 {
		t.Fatalf("%d blobs, want 1", len(res.Blobs))
	}
	open := func(data []byte) *erofs.Image {
		im, err := erofs.Open(bytes.NewReader(data), erofs.WithBlobs(erofs.DirBlobs(blobs)), erofs.WithVerifiedBlobs())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { im.Close() })
		return im
	}
	checkFiles(t, img, files, erofs.WithBlobs(erofs.DirBlobs(blobs)), erofs.WithVerifiedBlobs())
	rep, err := erofs.Check(context.Background(), bytes.NewReader(img), erofs.CheckOptions{VerifyData: true, Blobs: erofs.DirBlobs(blobs)})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	im := open(img)
	table, err := im.ChunkTable()
	if err != nil {
		t.Fatal(err)
	}
	if rep.ChunksVerified != len(table) {
		t.Errorf("check verified %d chunks of a table of %d", rep.ChunksVerified, len(table))
	}
	// 60 small files of at most a third of a chunk each (and the zeros
	// file) go into packs: 61 small files took 61 entries unpacked.
	var small, smallBlocks int
	for name, data := range files {
		if len(data) > 0 && len(data) < chunk && !bytes.Equal(data, make([]byte, len(data))) && name != "dup/small-07" {
			small++
			smallBlocks += (len(data) + blockSize - 1) / blockSize
		}
	}
	packs := (smallBlocks*blockSize + chunk - 1) / chunk
	bigChunks := 1 + 4 // exact-chunk, large
	if len(table) > packs+bigChunks+2 || len(table) >= small {
		t.Errorf("%d table entries for %d small files (%d blocks) and %d chunks of large files", len(table), small, smallBlocks, bigChunks)
	}
	if plainRes.Chunks <= res.Chunks {
		t.Errorf("unpacked build stored %d chunks, packed %d", plainRes.Chunks, res.Chunks)
	}
	// The duplicate is its twin's blocks.
	a, b := fileChunksOf(t, im, "small/h-0"), fileChunksOf(t, im, "dup/small-07")
	if len(a) != 1 || len(b) != 1 || a[0].Device != b[0].Device || a[0].BlkAddr != b[0].BlkAddr {
		t.Errorf("duplicate small file at %+v, its twin at %+v", b, a)
	}

	// Damage one byte of the pack holding small/h-0: its files fail
	// verification, the others read right.
	blobPath := filepath.Join(blobs, res.Blobs[0].Digest)
	data, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	pos := int64(a[0].BlkAddr)*blockSize + a[0].Length/2
	data[pos] ^= 0x40
	if err := os.WriteFile(blobPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var pack *erofs.ChunkDigest
	for i := range table {
		e := &table[i]
		if start := int64(e.BlkAddr) * blockSize; start <= pos && pos < start+int64(e.Length) {
			pack = e
		}
	}
	if pack == nil {
		t.Fatalf("no table entry holds byte %d", pos)
	}
	damaged := open(img)
	failed := 0
	for name, want := range files {
		got, err := fs.ReadFile(damaged, name)
		cs := fileChunksOf(t, damaged, name)
		inPack := len(cs) == 1 && !cs[0].Hole && cs[0].BlkAddr >= pack.BlkAddr && int64(cs[0].BlkAddr)*blockSize < int64(pack.BlkAddr)*blockSize+int64(pack.Length)
		switch {
		case inPack && !errors.Is(err, erofs.ErrDigestMismatch):
			t.Errorf("%s, in the damaged pack: read %v, want %v", name, err, erofs.ErrDigestMismatch)
		case inPack:
			failed++
		case err != nil || !bytes.Equal(got, want):
			t.Errorf("%s, outside the damaged pack: %v", name, err)
		}
	}
	if failed < 3 {
		t.Errorf("%d files in the damaged pack: want several small files to share it", failed)
	}
}

// TestPackSmallFilesStartSet: a listed small file goes to a front pack,
// and a listed file identical to an unlisted one packed before it is
// named in the start set where its twin was stored.
func TestPackSmallFilesStartSet(t *testing.T) {
	const chunk = 64 << 10
	src, files := writeSmallFilesTree(t, chunk)
	if err := os.WriteFile(filepath.Join(src, "copy"), files["small/c-0"], 0o644); err != nil {
		t.Fatal(err)
	}
	var list prefetchlist.List
	list.Add("/small/c-0", 0, 0)
	list.Add("/small/b-0", 0, 0)
	blobDir := t.TempDir()
	out, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	b, err := New(out, Options{ChunkSize: chunk, BlobDir: blobDir, PrefetchList: &list, PackSmallFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	// copy (unlisted) is packed first; small/c-0, its twin, is listed.
	if err := b.AddTar(context.Background(), tarOf(t, src, []string{"copy", "small/a-0", "small/c-0", "small/b-0", "large"}), TarOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := b.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out.Truncate(res.ImageSize)
	im, err := erofs.Open(out, erofs.WithBlobs(erofs.DirBlobs(blobDir)), erofs.WithVerifiedBlobs())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	ss, err := im.StartSet()
	if err != nil {
		t.Fatal(err)
	}
	covered := func(fc erofs.FileChunk) bool {
		blocks := uint32((fc.Length + blockSize - 1) / blockSize)
		for _, e := range ss {
			if fc.BlkAddr >= e.BlkAddr && fc.BlkAddr+blocks <= e.BlkAddr+e.Blocks {
				return true
			}
		}
		return false
	}
	for _, name := range []string{"small/c-0", "small/b-0"} {
		cs := fileChunksOf(t, im, name)
		if len(cs) != 1 || !covered(cs[0]) {
			t.Errorf("listed %s at %+v: not in the start set %+v", name, cs, ss)
		}
	}
	if cs := fileChunksOf(t, im, "small/a-0"); len(cs) != 1 || covered(cs[0]) {
		t.Errorf("unlisted small/a-0 at %+v: in the start set %+v", cs, ss)
	}
	for _, name := range []string{"copy", "small/a-0", "small/c-0", "small/b-0", "large"} {
		got, err := fs.ReadFile(im, name)
		if err != nil || !bytes.Equal(got, files[name]) && name != "copy" {
			t.Errorf("%s: %v", name, err)
		}
	}
}
