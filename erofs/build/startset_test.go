package build

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/prefetchlist"
)

// writeStartTree writes files of distinct random data (no dedupe): f00..f19
// of 1..3 chunks of 64 KiB plus a tail, and lib/ with a few more.
func writeStartTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	write := func(name string, size int) {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		write(fmt.Sprintf("f%02d", i), (i%3+1)*64<<10+100*i+1)
	}
	write("lib/a.so", 5*64<<10)
	write("lib/b.so", 10)
	write("zeros", 0)
	return dir
}

func TestStartSetLayout(t *testing.T) {
	src := writeStartTree(t)
	var list prefetchlist.List
	list.Add("/f17", 0, 0)
	list.Add("lib", 0, 0)           // a directory: every file under it
	list.Add("/f05", 64<<10, 1)     // one byte of f05's second chunk
	list.Add("/f02", 3*64<<10, 100) // f02's tail chunk
	list.Add("/missing", 0, 0)      // not in the tree: ignored
	listed := map[string][]int{     // file → its chunk indexes in the start set, in list order
		"f17":      {0, 1, 2, 3},
		"lib/a.so": {0, 1, 2, 3, 4},
		"lib/b.so": {0},
		"f05":      {1},
		"f02":      {3},
	}
	order := []string{"f17", "lib/a.so", "lib/b.so", "f05", "f02"}

	blobDir := t.TempDir()
	img, res := buildDir(t, src, Options{ChunkSize: 64 << 10, BlobDir: blobDir, PrefetchList: &list})
	if len(res.Blobs) != 1 {
		t.Fatalf("%d blobs", len(res.Blobs))
	}
	im, err := erofs.Open(bytes.NewReader(img), erofs.WithBlobs(erofs.DirBlobs(blobDir)), erofs.WithVerifiedBlobs())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	set, err := im.StartSet()
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 1 || set[0].Device != 1 || set[0].BlkAddr != 0 {
		t.Fatalf("start set %+v, want one extent at the start of blob 1", set)
	}
	front := int64(set[0].Blocks) * 4096
	var wantFront int64
	next := int64(0) // the listed chunks must be laid out in list order
	for _, name := range order {
		chunks, err := im.Chunks(name)
		if err != nil {
			t.Fatal(name, err)
		}
		for _, i := range listed[name] {
			c := chunks[i]
			addr := int64(c.BlkAddr) * 4096
			if addr != next {
				t.Errorf("%s chunk %d at byte %d, want %d (list order, packed)", name, i, addr, next)
			}
			next = addr + (c.Length+4095)/4096*4096
			wantFront += (c.Length + 4095) / 4096 * 4096
		}
	}
	if front != wantFront {
		t.Errorf("front is %d bytes, the listed chunks %d", front, wantFront)
	}
	// Every other chunk is behind the front, and every file reads back.
	err = fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || p == "zeros" {
			return err
		}
		chunks, err := im.Chunks(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		in := map[int]bool{}
		for _, i := range listed[p] {
			in[i] = true
		}
		for i, c := range chunks {
			if got := int64(c.BlkAddr)*4096 < front; got != in[i] {
				t.Errorf("%s chunk %d at block %d: in the front %v, want %v", p, i, c.BlkAddr, got, in[i])
			}
		}
		got, err := fs.ReadFile(im, p)
		if err != nil {
			return err
		}
		want, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s reads wrong", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := erofs.Check(context.Background(), bytes.NewReader(img), erofs.CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	if n, err := filepath.Glob(filepath.Join(blobDir, ".*")); err != nil || len(n) != 0 {
		t.Fatalf("temporary files left: %v", n)
	}

	// Without a list: no start set, and the same files.
	img2, _ := buildDir(t, src, Options{ChunkSize: 64 << 10, BlobDir: t.TempDir()})
	im2, err := erofs.Open(bytes.NewReader(img2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im2.StartSet(); err != erofs.ErrNoStartSet {
		t.Fatalf("StartSet of an image built without a list: %v", err)
	}
}

// A tar build keeps tar order, but the listed chunks still go first, and
// each layer's blob records its own front.
func TestStartSetLayers(t *testing.T) {
	src := writeStartTree(t)
	var list prefetchlist.List
	list.Add("/f03", 0, 0)
	list.Add("/f01", 0, 0)
	im, _, _ := buildWithList(t, &list, func(b *Builder) error {
		for _, names := range [][]string{{"f00", "f01", "f02"}, {"f10", "f03", "f11"}} {
			if err := b.AddLayer(context.Background(), tarOf(t, src, names)); err != nil {
				return err
			}
		}
		return nil
	})
	set, err := im.StartSet()
	if err != nil {
		t.Fatal(err)
	}
	// f03 (list rank 0) is in layer 2's blob, f01 (rank 1) in layer 1's:
	// the set lists blob 2 first.
	if len(set) != 2 || set[0].Device != 2 || set[1].Device != 1 || set[0].Blocks != 16+1 || set[1].Blocks != 32+1 {
		t.Fatalf("start set %+v", set)
	}
	for _, name := range []string{"f01", "f03", "f00", "f11"} {
		got, err := fs.ReadFile(im, name)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(src, name))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s reads wrong", name)
		}
	}
}

// tarOf returns a tar of the named files of dir.
func tarOf(t *testing.T, dir string, names []string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// A start set is a claim of the image: a damaged or hostile one is an
// error, never an extent outside the blobs.
func TestStartSetHostile(t *testing.T) {
	src := writeStartTree(t)
	var list prefetchlist.List
	list.Add("/f01", 0, 0)
	img, _ := buildDir(t, src, Options{ChunkSize: 64 << 10, BlobDir: t.TempDir(), PrefetchList: &list})
	// The start set is 64+16 bytes; the chunk states after it are cut
	// off, so that it ends the image.
	hdr := bytes.LastIndex(img, []byte("EROFSDSS"))
	if hdr < 0 || string(img[hdr+80:hdr+88]) != "EROFSDCS" {
		t.Fatalf("no start set followed by chunk states in the image")
	}
	img = img[:hdr+80]
	rehash := func(b []byte) {
		sum := sha256.Sum256(b[hdr+64:])
		copy(b[hdr+0x18:], sum[:])
	}
	tests := []struct {
		name  string
		edit  func(b []byte)
		want  error
		match string
	}{
		{"entries changed", func(b []byte) { b[hdr+64+8]++ }, erofs.ErrCorrupt, "sha256"},
		{"device 0", func(b []byte) { b[hdr+64] = 0; rehash(b) }, erofs.ErrCorrupt, "device 0"},
		{"device 9", func(b []byte) { b[hdr+64] = 9; rehash(b) }, erofs.ErrCorrupt, "device 9"},
		{"beyond the blob", func(b []byte) { binary.LittleEndian.PutUint32(b[hdr+64+8:], 1<<30); rehash(b) }, erofs.ErrCorrupt, "beyond"},
		{"empty", func(b []byte) { binary.LittleEndian.PutUint32(b[hdr+64+8:], 0); rehash(b) }, erofs.ErrCorrupt, "empty"},
		{"huge count", func(b []byte) { binary.LittleEndian.PutUint64(b[hdr+0x10:], 1<<40) }, erofs.ErrCorrupt, "entries"},
		{"count past the end", func(b []byte) { binary.LittleEndian.PutUint64(b[hdr+0x10:], 2) }, erofs.ErrCorrupt, "do not fit"},
		{"version 2", func(b []byte) { b[hdr+8] = 2 }, erofs.ErrUnsupported, "version"},
		{"no magic", func(b []byte) { b[hdr] = 'X' }, erofs.ErrNoStartSet, ""},
	}
	// Two extents, the second the first again: overlapping.
	t.Run("overlap", func(t *testing.T) {
		b := append(bytes.Clone(img), img[hdr+64:hdr+80]...)
		binary.LittleEndian.PutUint64(b[hdr+0x10:], 2)
		sum := sha256.Sum256(b[hdr+64:])
		copy(b[hdr+0x18:], sum[:])
		im, err := erofs.Open(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.StartSet(); !errors.Is(err, erofs.ErrCorrupt) || !strings.Contains(err.Error(), "overlap") {
			t.Fatalf("StartSet: %v, want an overlap error", err)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(img)
			tt.edit(b)
			im, err := erofs.Open(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			_, err = im.StartSet()
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.match) {
				t.Fatalf("StartSet: %v, want %v with %q", err, tt.want, tt.match)
			}
		})
	}
}

// A listed file whose chunks were stored before, for an unlisted file
// (a tar keeps its order): the start set names them where they are.
func TestStartSetDedupedChunks(t *testing.T) {
	src := writeStartTree(t)
	// f04's content under an unlisted name first, then f04 itself.
	data, _ := os.ReadFile(filepath.Join(src, "f04"))
	os.WriteFile(filepath.Join(src, "a-copy"), data, 0o644)
	var list prefetchlist.List
	list.Add("/f04", 0, 0)
	im, _, _ := buildWithList(t, &list, func(b *Builder) error {
		return b.AddTar(context.Background(), tarOf(t, src, []string{"f00", "a-copy", "f01", "f04"}), TarOptions{})
	})
	set, err := im.StartSet()
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := im.Chunks("f04")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		in := false
		for _, e := range set {
			in = in || int(e.Device) == c.Device && c.BlkAddr >= e.BlkAddr && c.BlkAddr < e.BlkAddr+e.Blocks
		}
		if !in {
			t.Errorf("f04 chunk at block %d not in the start set %+v", c.BlkAddr, set)
		}
	}
	if got, _ := fs.ReadFile(im, "f04"); !bytes.Equal(got, data) {
		t.Fatal("f04 reads wrong")
	}
}

// A tar adds files in its own order; the front is still in list order.
func TestStartSetTarListOrder(t *testing.T) {
	src := writeStartTree(t)
	var list prefetchlist.List
	list.Add("/f07", 0, 0)
	list.Add("/f05", 0, 0)
	im, f, blobDir := buildWithList(t, &list, func(b *Builder) error {
		return b.AddTar(context.Background(), tarOf(t, src, []string{"f05", "f06", "f07"}), TarOptions{})
	})
	var next uint32
	for _, name := range []string{"f07", "f05", "f06"} {
		chunks, err := im.Chunks(name)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range chunks {
			if c.BlkAddr != next {
				t.Errorf("%s chunk %d at block %d, want %d (list order, then the rest)", name, i, c.BlkAddr, next)
			}
			next = c.BlkAddr + uint32((c.Length+4095)/4096)
		}
		got, _ := fs.ReadFile(im, name)
		want, _ := os.ReadFile(filepath.Join(src, name))
		if !bytes.Equal(got, want) {
			t.Errorf("%s reads wrong", name)
		}
	}
	if _, err := erofs.Check(context.Background(), f, erofs.CheckOptions{Blobs: erofs.DirBlobs(blobDir), VerifyData: true}); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(blobDir, ".*")); len(left) != 0 {
		t.Errorf("scratch files left: %v", left)
	}
}

// buildWithList builds, in blob mode with 64 KiB chunks and list, what add
// adds, and opens the image with its blobs, verified. It returns the
// image, its file and the blob directory.
func buildWithList(t *testing.T, list *prefetchlist.List, add func(*Builder) error) (*erofs.Image, *os.File, string) {
	t.Helper()
	blobDir := t.TempDir()
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b, err := New(f, Options{ChunkSize: 64 << 10, BlobDir: blobDir, PrefetchList: list})
	if err != nil {
		t.Fatal(err)
	}
	if err := add(b); err != nil {
		t.Fatal(err)
	}
	res, err := b.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(res.ImageSize)
	im, err := erofs.Open(f, erofs.WithBlobs(erofs.DirBlobs(blobDir)), erofs.WithVerifiedBlobs())
	if err != nil {
		t.Fatal(err)
	}
	return im, f, blobDir
}
