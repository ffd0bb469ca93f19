package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
)

// TestFileChunks: every chunk-based file once (hard links once), maps
// equal to Chunks by path; a deep chain of directories costs time
// linear in its entries (a walk by path was quadratic: 8,000 levels took
// a minute); the entry limit holds.
func TestFileChunks(t *testing.T) {
	// A tar: names longer than PATH_MAX are fine there.
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	deep := ""
	for range 6000 {
		deep += "a/"
		add(&tar.Header{Name: deep, Typeflag: tar.TypeDir, Mode: 0o755}, "")
	}
	files := map[string]string{"x": "hello", "d/y": strings.Repeat("y", 70000), deep + "z": "deep"}
	add(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	for _, name := range []string{"x", "d/y", deep + "z"} {
		add(&tar.Header{Name: name, Typeflag: tar.TypeReg}, files[name])
	}
	add(&tar.Header{Name: "d/x-link", Typeflag: tar.TypeLink, Linkname: "x"}, "")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "img")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := build.New(out, build.Options{BlobDir: t.TempDir(), ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddTar(context.Background(), &tb, build.TarOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := b.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out.Truncate(res.ImageSize)
	out.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := Open(f)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := map[uint64][]FileChunk{}
	err = img.FileChunks(context.Background(), 0, func(nid uint64, chunks []FileChunk) error {
		if _, dup := got[nid]; dup {
			t.Errorf("nid %d visited twice", nid)
		}
		got[nid] = chunks
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("walking 6,000 levels took %v", took)
	}
	t.Logf("walked 6,000 levels in %v", time.Since(start))
	if len(got) != 3 {
		t.Fatalf("%d files, want 3 (x and its link once, d/y, z)", len(got))
	}
	for name := range files {
		want, err := img.Chunks(name)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := img.Stat(name)
		if g := got[fi.Sys().(*Stat).Nid]; len(g) != len(want) || len(g) > 0 && g[0] != want[0] {
			t.Errorf("%s: FileChunks %+v, Chunks %+v", name, g, want)
		}
	}
	if err := img.FileChunks(context.Background(), 100, func(uint64, []FileChunk) error { return nil }); !errors.Is(err, ErrWalkLimit) {
		t.Errorf("a limit of 100 entries over 6,000: %v", err)
	}
	stop := errors.New("stop")
	if err := img.FileChunks(context.Background(), 0, func(uint64, []FileChunk) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("fn's error: %v", err)
	}
}
