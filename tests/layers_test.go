package tests

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
)

// layerEntry is one tar entry: a file with content, "dir/", a symlink
// ("->target") or a hard link ("=>target").
type layerEntry struct{ name, body string }

func layerTar(t *testing.T, entries []layerEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
		switch {
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case strings.HasPrefix(e.body, "->"):
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.body[2:]
		case strings.HasPrefix(e.body, "=>"):
			h.Typeflag, h.Linkname = tar.TypeLink, e.body[2:]
		default:
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// TestKernelMergedLayers builds one image from three OCI layers (one blob
// per layer) and checks the merged tree the kernel shows: overwrites,
// deletions, opaque directories, hard links across layers, and chunks
// shared between layers stored once.
func TestKernelMergedLayers(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, in two layers
	layers := [][]layerEntry{
		{{"etc/", ""}, {"etc/passwd", "root:x:0:0"}, {"etc/gone", "bye"}, {"opt/", ""}, {"opt/old/", ""},
			{"opt/old/a", "a"}, {"opt/keep", "keep"}, {"big", big}, {"lib/", ""}, {"lib/libc.so", "libc"}},
		{{"etc/passwd", "root:x:0:0\nuser:x:1000:1000"}, {"etc/.wh.gone", ""}, {"opt/.wh..wh..opq", ""},
			{"opt/new", "new"}, {"lib/libc.so.6", "=>lib/libc.so"}, {"bin/", ""}, {"bin/sh", "->busybox"}, {"big-copy", big}},
		{{"opt/new", "newer"}, {"lib/.wh.libc.so", ""}, {"bin/busybox", "bb"}},
	}
	want := map[string]string{
		"etc": "dir", "etc/passwd": "root:x:0:0\nuser:x:1000:1000", "opt": "dir", "opt/new": "newer",
		"big": big, "big-copy": big, "lib": "dir", "lib/libc.so.6": "libc", "bin": "dir",
		"bin/sh": "->busybox", "bin/busybox": "bb",
	}

	blobDir := t.TempDir()
	image := filepath.Join(t.TempDir(), "merged.erofs")
	res := testimage.Write(t, image, build.Options{BlobDir: blobDir, ChunkSize: 64 << 10}, func(ctx context.Context, b *build.Builder) error {
		for _, l := range layers {
			if err := b.AddLayer(ctx, bytes.NewReader(layerTar(t, l))); err != nil {
				return err
			}
		}
		return nil
	})
	if len(res.Blobs) != 3 {
		t.Fatalf("%d blobs, want one per layer", len(res.Blobs))
	}
	for i, bl := range res.Blobs {
		if bl.Layer != i+1 {
			t.Errorf("blob %d comes from layer %d, want %d", i, bl.Layer, i+1)
		}
	}
	// big-copy in layer 2 is stored in layer 1's blob: layer 2's blob
	// holds only its small files.
	if res.Blobs[1].Size > 8*4096 {
		t.Errorf("layer 2 blob is %d bytes: chunks of layer 1 were stored again", res.Blobs[1].Size)
	}

	// Our checker verifies every chunk of the three blobs.
	imgFile, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := erofs.Check(context.Background(), imgFile, erofs.CheckOptions{Blobs: erofs.DirBlobs(blobDir), VerifyData: true})
	imgFile.Close()
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if rep.ChunksVerified == 0 {
		t.Error("no chunk verified")
	}

	needKernel(t)
	var blobs []string
	for _, bl := range res.Blobs {
		blobs = append(blobs, filepath.Join(blobDir, bl.Digest))
	}
	mnt := t.TempDir()
	unmount, err := testmount.FileBacked(image, blobs, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer unmount()
	got := map[string]string{}
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == mnt {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		switch {
		case d.IsDir():
			got[rel] = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			got[rel] = "->" + target
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = string(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("%s: got %.40q, want %.40q", k, got[k], want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s", k)
		}
	}
}
