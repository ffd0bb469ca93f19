package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
)

// TestCompressedImage runs inspect, check and extract on a mkfs.erofs
// -zlz4hc image: inspect names the algorithm, lists each compressed file
// with its layout and says that Linux before 6.9 cannot read them in
// fscache mode; check decodes every extent; extract writes the tree back
// exactly.
func TestCompressedImage(t *testing.T) {
	require.Host(t, require.Tool("mkfs.erofs", "erofs-utils"))
	src := filepath.Join(t.TempDir(), "src")
	text := strings.Repeat("a line of text that compresses well, again and again\n", 4000)
	for name, data := range map[string]string{
		"text": text, "dir/more": text[:70000], "dir/short": "short", "binary": string(pseudoRandom(50000)),
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("dir/more", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if out, err := exec.Command("mkfs.erofs", "--quiet", "-zlz4hc", "-C65536", "-Eztailpacking", img, src).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}

	rep := inspectJSON(t, img)
	z := rep.Compression
	if z == nil || strings.Join(z.Algorithms, ",") != "lz4" || z.Files == 0 || len(z.FileList) != z.Files ||
		z.Encoded == 0 || z.Size <= z.Encoded || !strings.Contains(z.Fscache, "before 6.9") {
		t.Fatalf("inspect compression %+v", z)
	}
	for _, f := range z.FileList {
		if f.Indexes != "compact" || f.Extents == 0 || f.Size == 0 {
			t.Fatalf("file %+v", f)
		}
	}
	if rep.Fscache61 == nil || rep.Fscache61.Safe {
		t.Fatalf("fscache report %+v: compressed inodes are not safe", rep.Fscache61)
	}
	listing, _ := runCmd(t, "inspect", "--files", "1", img)
	for _, want := range []string{"compression   algorithms: lz4", "compact indexes, lz4", "more (--files -1 or --json for all)", "fscache       "} {
		if !strings.Contains(listing, want) {
			t.Errorf("inspect text lacks %q:\n%s", want, listing)
		}
	}

	out, err := runCmd(t, "check", img)
	if err != nil || !strings.Contains(out, "compressed: ") || !strings.Contains(out, "distinct extents decoded") {
		t.Fatalf("check: %v\n%s", err, out)
	}

	dst := filepath.Join(t.TempDir(), "x")
	if out, err := runCmd(t, "extract", img, dst); err != nil {
		t.Fatalf("extract: %v\n%s", err, out)
	}
	diffs, err := treecmp.Compare(src, dst, treecmp.Options{IgnorePath: func(rel string) bool { return rel == "." }})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		if d.What == treecmp.WhatContent || d.What == treecmp.WhatPresence || d.What == treecmp.WhatSize || d.What == treecmp.WhatTarget {
			t.Errorf("extracted tree: %v", d)
		}
	}
	if _, err := os.Stat(dst); err != nil {
		t.Fatal(err)
	}
}

// pseudoRandom returns n incompressible bytes (xorshift).
func pseudoRandom(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
