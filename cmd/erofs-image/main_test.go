package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/testtree"
	"github.com/erofsd/erofsd/internal/treecmp"
)

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return out.String() + errOut.String(), err
}

func smallTree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	if _, err := testtree.Generate(dir, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBuildInspectCheckExtract(t *testing.T) {
	src := smallTree(t)
	work := t.TempDir()
	img := filepath.Join(work, "img")
	blobs := filepath.Join(work, "blobs")

	out, err := runCmd(t, "build", "--blob-dir", blobs, "--chunk-size", "64K", "--json", "-o", img, src)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var res struct {
		Blobs  []struct{ Digest string } `json:"blobs"`
		Files  int                       `json:"files"`
		Dedupe int64                     `json:"dedupe_saved_bytes"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("build --json: %v\n%s", err, out)
	}
	if len(res.Blobs) != 1 || !strings.HasPrefix(res.Blobs[0].Digest, "sha256:") || res.Files < 100 || res.Dedupe == 0 {
		t.Fatalf("build summary: %+v", res)
	}
	digest := strings.TrimPrefix(res.Blobs[0].Digest, "sha256:")
	blob := filepath.Join(blobs, digest)

	out, err = runCmd(t, "inspect", "--json", img)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Devices) != 1 || rep.Devices[0].Tag != digest ||
		len(rep.Chunks) == 0 || !rep.Linux61 || rep.Counts["files"] != res.Files {
		t.Fatalf("inspect: %+v", rep)
	}

	if out, err = runCmd(t, "check", "--blob-dir", blobs, img); err != nil || !strings.Contains(out, "verified") {
		t.Fatalf("check: %v\n%s", err, out)
	}

	dest := filepath.Join(work, "out")
	if out, err = runCmd(t, "extract", "--blob-dir", blobs, img, dest); err != nil {
		t.Fatalf("extract: %v\n%s", err, out)
	}
	opts := treecmp.Options{}
	if os.Geteuid() != 0 {
		opts.IgnoreOwner = true
		opts.IgnoreXattrs = []string{"trusted.*", "security.*"}
	}
	diffs, err := treecmp.Compare(src, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error("extract:", d)
	}
	if _, err = runCmd(t, "extract", "--blob-dir", blobs, img, dest); err == nil {
		t.Fatal("extract into a non-empty directory succeeded")
	}

	// A corrupt blob chunk is found, and named.
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xFF
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runCmd(t, "check", "--blob-dir", blobs, img)
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("check of a corrupted blob: err=%v\n%s", err, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"build", "dir"},
		{"build", "-o", "x"},
		{"build", "--chunk-size", "3M", "-o", "x", "dir"},
		{"build", "--mkfs-time", "yesterday", "-o", "x", "dir"},
		{"inspect"},
		{"extract", "img"},
	} {
		if _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

func TestBuildErrorsNameTheInput(t *testing.T) {
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "bad.tar")
	os.WriteFile(tarPath, bytes.Repeat([]byte{1}, 2048), 0o644)
	out, err := runCmd(t, "build", "-o", filepath.Join(dir, "img"), tarPath)
	if err == nil || !strings.Contains(err.Error(), "bad.tar") {
		t.Fatalf("got %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a failed build left an image behind")
	}
	if _, err := runCmd(t, "build", "-o", filepath.Join(dir, "img"), filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing source accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64K": 64 << 10, "1m": 1 << 20, "1G": 1 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "K", "-1", "1X", "abc"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestLoopedImageRefused patches a directory entry to point at its own
// parent: inspect and extract must stop with an error, not walk forever.
func TestLoopedImageRefused(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if out, err := runCmd(t, "build", "-o", img, src); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, _ := os.Open(img)
	im, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	nid := func(p string) uint64 {
		fi, err := im.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*erofs.Stat).Nid
	}
	na, nb := nid("a"), nid("a/b")
	im.Close()
	f.Close()
	data, _ := os.ReadFile(img)
	// Find a's dirent for "b": nid b, then (at +10) file type 2.
	var want [8]byte
	binary.LittleEndian.PutUint64(want[:], nb)
	patched := 0
	for off := 0; off+12 <= len(data); off += 4 {
		if bytes.Equal(data[off:off+8], want[:]) && data[off+10] == 2 && bytes.Contains(data[off:min(off+64, len(data))], []byte("b")) {
			binary.LittleEndian.PutUint64(data[off:], na)
			patched++
		}
	}
	if patched == 0 {
		t.Fatal("dirent not found")
	}
	os.WriteFile(img, data, 0o644)

	for _, args := range [][]string{{"inspect", img}, {"extract", img, filepath.Join(t.TempDir(), "out")}, {"check", img}} {
		done := make(chan error, 1)
		go func() { _, err := runCmd(t, args...); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s accepted a looped image", args[0])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s loops on a looped image", args[0])
		}
	}
}
