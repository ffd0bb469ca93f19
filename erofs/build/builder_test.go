package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs"
)

// writeTree makes a small tree with repeated 64 KiB regions.
func writeTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	block := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	var big []byte
	for i := 0; i < 6; i++ {
		big = append(big, block...)
	}
	big = append(big, "tail"...)
	files := map[string][]byte{
		"a":         []byte("hello\n"),
		"big":       big,
		"copy":      big,
		"d/e/f":     bytes.Repeat([]byte{7}, 4096),
		"d/zeros":   make([]byte, 200000),
		"d/partial": append(make([]byte, 70000), 'x'),
	}
	writeFiles(t, dir, files)
	if err := os.Symlink("a", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeFiles writes each file of files (by path) under dir.
func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func buildDir(t *testing.T, src string, opts Options) ([]byte, *Result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddDir(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	res, err := b.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(res.ImageSize)
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(img)) != res.ImageSize {
		t.Fatalf("image is %d bytes, result says %d", len(img), res.ImageSize)
	}
	return img, res
}

func TestReproducible(t *testing.T) {
	src := writeTree(t)
	for _, blobs := range []bool{false, true} {
		var imgs [][]byte
		var digests []string
		for i := 0; i < 2; i++ {
			opts := Options{ChunkSize: 64 << 10}
			if blobs {
				opts.BlobDir = t.TempDir()
			}
			img, res := buildDir(t, src, opts)
			imgs = append(imgs, img)
			if blobs {
				digests = append(digests, res.Blobs[0].Digest)
				data, err := os.ReadFile(filepath.Join(opts.BlobDir, res.Blobs[0].Digest))
				if err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(data)
				if hex.EncodeToString(sum[:]) != res.Blobs[0].Digest || int64(len(data)) != res.Blobs[0].Size {
					t.Fatalf("blob name %s does not match its content", res.Blobs[0].Digest)
				}
			}
			// Touching the source's atime must not matter.
			fi, err := os.Stat(filepath.Join(src, "a"))
			if err != nil {
				t.Fatal(err)
			}
			os.Chtimes(filepath.Join(src, "a"), time.Now().Add(time.Hour), fi.ModTime())
		}
		if !bytes.Equal(imgs[0], imgs[1]) {
			t.Fatalf("blobs=%v: two builds of the same tree differ", blobs)
		}
		if blobs && digests[0] != digests[1] {
			t.Fatalf("blob digests differ: %v", digests)
		}
	}
}

func TestDedupeAndHoles(t *testing.T) {
	src := writeTree(t)
	// big and copy: 7 chunks each, all of big's 6 full chunks identical,
	// copy identical to big: 14 refs, 2 stored (the block and the tail).
	// d/e/f: 1 chunk. d/partial: a zero chunk (hole) and a chunk with x.
	// a: 1 chunk. d/zeros: all holes.
	// Blob: 64 KiB chunk (16 blocks) + "tail" + f + a (a block each) +
	// the last 4465 bytes of d/partial (2 blocks), and with the zero
	// chunk policy one all-zero chunk (16 blocks) every hole points at.
	for _, tc := range []struct {
		holes    HolePolicy
		blobSize int64
		unique   int
	}{
		{HolesAuto, 37 * 4096, 6},
		{HolesZeroChunk, 37 * 4096, 6},
		{HolesSparse, 21 * 4096, 5},
	} {
		t.Run(tc.holes.String(), func(t *testing.T) {
			img, res := buildDir(t, src, Options{ChunkSize: 64 << 10, BlobDir: t.TempDir(), Holes: tc.holes})
			if res.Chunks != 14+1+1+1 {
				t.Errorf("chunks referenced = %d", res.Chunks)
			}
			if res.UniqueChunk != tc.unique {
				t.Errorf("unique chunks = %d", res.UniqueChunk)
			}
			if want := int64(200000 + 64<<10); res.HoleBytes != want {
				t.Errorf("hole bytes = %d, want %d", res.HoleBytes, want)
			}
			if res.Blobs[0].Size != tc.blobSize {
				t.Errorf("blob size %d, want %d", res.Blobs[0].Size, tc.blobSize)
			}
			rep, err := erofs.Check(context.Background(), bytes.NewReader(img), erofs.CheckOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if sparse := tc.holes == HolesSparse; (rep.HoleChunks > 0) != sparse {
				t.Errorf("%d null chunk references with policy %v", rep.HoleChunks, tc.holes)
			}
		})
	}
}

func TestBuildTimeOption(t *testing.T) {
	src := writeTree(t)
	when := time.Unix(1234567890, 5).UTC()
	_, res := buildDir(t, src, Options{BuildTime: when})
	if !res.BuildTime.Equal(when) {
		t.Fatalf("build time %v, want %v", res.BuildTime, when)
	}
	img1, _ := buildDir(t, src, Options{BuildTime: when})
	img2, _ := buildDir(t, src, Options{BuildTime: when.Add(time.Second)})
	if bytes.Equal(img1, img2) {
		t.Fatal("build time does not reach the image")
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{{ChunkSize: 1000}, {ChunkSize: 2048}, {ChunkSize: 3 << 20}, {ChunkSize: 2 << 30}, {Label: "a label far too long"}} {
		if _, err := New(discardAt{}, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
