package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/erofsd/erofsd/erofs"
)

func TestSplitAttached(t *testing.T) {
	tests := []struct{ in, want []string }{
		{[]string{"-zlz4hc,9", "-C65536", "-o", "x"}, []string{"-z", "lz4hc,9", "-C", "65536", "-o", "x"}},
		{[]string{"-z", "lz4", "-z=zstd", "--chunk-size", "1M"}, []string{"-z", "lz4", "-z=zstd", "--chunk-size", "1M"}},
		{[]string{"-chunk-size", "4K", "--", "-zdir"}, []string{"-chunk-size", "4K", "--", "-zdir"}},
	}
	for _, tt := range tests {
		if got := splitAttached(tt.in, "z", "C"); !slices.Equal(got, tt.want) {
			t.Errorf("splitAttached(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBuildCompressed(t *testing.T) {
	src := t.TempDir()
	data := bytes.Repeat([]byte("compressible line of text\n"), 20000)
	if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain, compressed := filepath.Join(dir, "plain"), filepath.Join(dir, "z")
	if out, err := runCmd(t, "build", "-o", plain, src); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := runCmd(t, "build", "-zlz4hc,12", "-C16384", "-o", compressed, src); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pst, _ := os.Stat(plain)
	zst, _ := os.Stat(compressed)
	if zst.Size()*10 > pst.Size() {
		t.Errorf("compressed image %d bytes, uncompressed %d", zst.Size(), pst.Size())
	}
	f, err := os.Open(compressed)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := im.ReadFile("f"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
	}
	for _, args := range [][]string{
		{"build", "-z", "lz5", "-o", compressed, src},
		{"build", "-z", "lz4", "-C", "5000", "-o", compressed, src},
		{"build", "--pcluster-size", "64K", "-o", compressed, src},
	} {
		if _, err := runCmd(t, args...); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
