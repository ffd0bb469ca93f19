package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
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

	rep := inspectJSON(t, img)
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

// TestBuildPrefetchList: build --prefetch-list lays the listed files out
// first, inspect shows the start set, and check accepts the image.
func TestBuildPrefetchList(t *testing.T) {
	src := smallTree(t)
	work := t.TempDir()
	var files []string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && len(files) < 3 {
			if fi, _ := d.Info(); fi.Size() > 0 {
				files = append(files, "/"+strings.TrimPrefix(p, src+"/"))
			}
		}
		return err
	})
	list := filepath.Join(work, "list")
	os.WriteFile(list, []byte("# erofsd prefetch list v1\n"+strings.Join(files, "\n")+"\n"), 0o644)
	img, blobs := filepath.Join(work, "img"), filepath.Join(work, "blobs")
	if out, err := runCmd(t, "build", "--blob-dir", blobs, "--prefetch-list", list, "-o", img, src); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	rep := inspectJSON(t, img)
	if len(rep.StartSet) != 1 || rep.StartSet[0].Device != 1 || rep.StartSet[0].BlkAddr != 0 || rep.StartSet[0].Blocks == 0 {
		t.Fatalf("start set %+v", rep.StartSet)
	}
	if out, err := runCmd(t, "inspect", img); err != nil || !strings.Contains(out, "start set") {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	if out, err := runCmd(t, "check", "--blob-dir", blobs, img); err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}

	// optimize re-lays an image built without the list the same way:
	// the same tree, the listed files first.
	plain, plainBlobs := filepath.Join(work, "plain"), filepath.Join(work, "plain-blobs")
	if out, err := runCmd(t, "build", "--blob-dir", plainBlobs, "-o", plain, src); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	opt, optBlobs := filepath.Join(work, "opt"), filepath.Join(work, "opt-blobs")
	if out, err := runCmd(t, "optimize", "--blob-dir", plainBlobs, "--out-blob-dir", optBlobs, "--prefetch-list", list, plain, opt); err != nil {
		t.Fatalf("optimize: %v\n%s", err, out)
	}
	optRep := inspectJSON(t, opt)
	if len(optRep.StartSet) != 1 || optRep.StartSet[0].Blocks != rep.StartSet[0].Blocks {
		t.Fatalf("optimized start set %+v, built with the list %+v", optRep.StartSet, rep.StartSet)
	}
	dest := filepath.Join(work, "opt-tree")
	if out, err := runCmd(t, "extract", "--blob-dir", optBlobs, opt, dest); err != nil {
		t.Fatalf("extract: %v\n%s", err, out)
	}
	topts := treecmp.Options{}
	if os.Geteuid() != 0 {
		topts.IgnoreOwner = true
		topts.IgnoreXattrs = []string{"trusted.*", "security.*"}
	}
	diffs, err := treecmp.Compare(src, dest, topts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error("optimized:", d)
	}
	if _, err := runCmd(t, "optimize", "--blob-dir", plainBlobs, plain, opt+"2"); !errors.Is(err, errUsage) {
		t.Errorf("optimize without a list: %v, want a usage error", err)
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
		{"build", "--prefetch-list", "list", "-o", "x", "dir"},                            // no --blob-dir
		{"build", "--blob-dir", "b", "--prefetch-list", "/nonexistent", "-o", "x", "dir"}, // unreadable list
		{"build", "--pack-small-files", "-o", "x", "dir"},                                 // no --blob-dir
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

// buildBlobImage builds src into an image with its data in blobs of
// 64 KiB chunks and returns the image and blob directory.
func buildBlobImage(t *testing.T, src string) (img, blobs string) {
	t.Helper()
	work := t.TempDir()
	img, blobs = filepath.Join(work, "img"), filepath.Join(work, "blobs")
	if out, err := runCmd(t, "build", "--blob-dir", blobs, "--chunk-size", "64K", "-o", img, src); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return img, blobs
}

// openImage opens an image file with its blobs (if blobs is not "").
func openImage(t *testing.T, path, blobs string) *erofs.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var opts []erofs.Option
	if blobs != "" {
		opts = append(opts, erofs.WithBlobs(erofs.DirBlobs(blobs)))
	}
	img, err := erofs.Open(f, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

// patchSuper lets f change the superblock of the image at path and
// recomputes its checksum (crc32c of the superblock's block from byte
// 1024, the checksum field taken as 0), as the kernel checks it.
func patchSuper(t *testing.T, path string, f func(sb []byte)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sb := data[1024:4096]
	f(sb)
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(0, tab, sb[:4])
	crc = crc32.Update(crc, tab, []byte{0, 0, 0, 0})
	crc = crc32.Update(crc, tab, sb[8:])
	binary.LittleEndian.PutUint32(sb[4:], ^crc)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestExtractVerifiesChunks flips one byte of a blob chunk: extract must
// fail naming a file that uses the chunk and the offset, leave no file
// with wrong or partial contents, and not claim success.
func TestExtractVerifiesChunks(t *testing.T) {
	src := smallTree(t)
	img, blobs := buildBlobImage(t, src)
	im := openImage(t, img, blobs)
	table, err := im.ChunkTable()
	if err != nil {
		t.Fatal(err)
	}
	// A chunk of at least a block, a byte well inside it.
	var bad erofs.ChunkDigest
	for _, c := range table {
		if c.Length >= 4096 {
			bad = c
			break
		}
	}
	if bad.Length == 0 {
		t.Fatal("no chunk of 4 KiB or more")
	}
	// The files using that chunk, and where.
	var users []string
	err = fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		chunks, err := im.Chunks(p)
		if errors.Is(err, erofs.ErrNotChunked) {
			return nil
		}
		for _, c := range chunks {
			if !c.Hole && c.Device == int(bad.Device) && c.BlkAddr == bad.BlkAddr {
				users = append(users, fmt.Sprintf("read %s: nid %d chunk %d at offset %d: ", p, mustNid(t, im, p), c.Offset/(64<<10), c.Offset))
			}
		}
		return err
	})
	if err != nil || len(users) == 0 {
		t.Fatalf("no file uses the chunk: %v", err)
	}
	tag := im.Devices()[bad.Device-1].Tag
	blob := filepath.Join(blobs, tag)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[int64(bad.BlkAddr)*4096+100] ^= 0x01
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}

	dest := filepath.Join(t.TempDir(), "out")
	out, err := runCmd(t, "extract", "--blob-dir", blobs, img, dest)
	if err == nil || !errors.Is(err, erofs.ErrDigestMismatch) || strings.Contains(out, "extracted") {
		t.Fatalf("extract of a corrupted blob: err=%v\n%s", err, out)
	}
	named := false
	for _, u := range users {
		named = named || strings.Contains(err.Error(), u)
	}
	if !named {
		t.Fatalf("extract: %v\ndoes not name one of %q", err, users)
	}
	t.Log(err)
	// What is there is right: every regular file extracted has the
	// source's bytes, and the file that failed is gone.
	files := 0
	err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		want, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: extracted with wrong contents", rel)
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files extracted before the failure", files)
}

func mustNid(t *testing.T, im *erofs.Image, p string) uint64 {
	t.Helper()
	fi, err := im.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*erofs.Stat).Nid
}

// TestExtractNeedsChunkTable: a blob-backed image whose chunk digest
// table is missing or damaged is refused before anything is written; a
// self-contained image needs none.
func TestExtractNeedsChunkTable(t *testing.T) {
	src := t.TempDir()
	for i := 0; i < 20; i++ {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), bytes.Repeat([]byte{byte(i)}, 70000+i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, blobs := buildBlobImage(t, src)
	im := openImage(t, img, blobs)
	tableOff := int64(im.Info().Blocks) * int64(im.Info().BlockSize)
	good, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	selfContained := filepath.Join(t.TempDir(), "self")
	if out, err := runCmd(t, "build", "-o", selfContained, src); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// Where the table's entries end (the chunk states follow).
	tableEnd := func(b []byte) int64 { return tableOff + 64 + 48*int64(binary.LittleEndian.Uint64(b[tableOff+16:])) }
	patched := func(f func(b []byte) []byte) string {
		p := filepath.Join(t.TempDir(), "img")
		if err := os.WriteFile(p, f(bytes.Clone(good)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name  string
		image string
		blobs bool
		want  error // nil: extracts
	}{
		{name: "intact", image: img, blobs: true},
		{name: "intact, no blob dir", image: img, want: erofs.ErrNoBlob},
		{name: "self-contained", image: selfContained},
		{name: "table cut off", image: patched(func(b []byte) []byte { return b[:tableOff] }), blobs: true, want: erofs.ErrNoChunkTable},
		{name: "table cut off, no blob dir", image: patched(func(b []byte) []byte { return b[:tableOff] }), want: erofs.ErrNoChunkTable},
		{name: "table magic gone", image: patched(func(b []byte) []byte { b[tableOff] = 'X'; return b }), blobs: true, want: erofs.ErrNoChunkTable},
		{name: "table entry damaged", image: patched(func(b []byte) []byte { b[tableOff+64+0x10] ^= 1; return b }), blobs: true, want: erofs.ErrCorrupt},
		{name: "table truncated", image: patched(func(b []byte) []byte { return b[:tableEnd(b)-10] }), blobs: true, want: erofs.ErrCorrupt},
		{name: "table version", image: patched(func(b []byte) []byte { b[tableOff+8] = 7; return b }), blobs: true, want: erofs.ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out")
			args := []string{"extract", tt.image, dest}
			if tt.blobs {
				args = []string{"extract", "--blob-dir", blobs, tt.image, dest}
			}
			out, err := runCmd(t, args...)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("extract: %v\n%s", err, out)
				}
				if got, err := os.ReadFile(filepath.Join(dest, "f07")); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{7}, 70007)) {
					t.Fatalf("f07: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || strings.Contains(out, "extracted") {
				t.Fatalf("extract: %v, want %v\n%s", err, tt.want, out)
			}
			t.Log(err)
			if tt.want == erofs.ErrNoBlob {
				return // refused at the first file
			}
			if _, err := os.Stat(dest); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("refused extract created %s: %v", dest, err)
			}
		})
	}
}

// TestInspectBuildTime: a superblock may hold any int64 seconds; inspect
// shows the raw value, flags what is not a date, and never fails.
func TestInspectBuildTime(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	base := filepath.Join(t.TempDir(), "img")
	if out, err := runCmd(t, "build", "--mkfs-time", "1700000000", "-o", base, src); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	good, _ := os.ReadFile(base)
	tests := []struct {
		sec  int64
		nsec uint32
		date string // "" = out of range
	}{
		{sec: 1<<63 - 1},
		{sec: -1 << 63},
		{sec: -1 << 62, nsec: 5},
		{sec: 253402300800}, // 10000-01-01
		{sec: 253402300799, nsec: 999999999, date: "9999-12-31T23:59:59.999999999Z"},
		{sec: -62167219200, date: "0000-01-01T00:00:00Z"},
		{sec: -62167219201},
		{sec: -1, date: "1969-12-31T23:59:59Z"},
		{sec: 0, nsec: 1, date: "1970-01-01T00:00:00.000000001Z"},
		{sec: 1700000000, date: "2023-11-14T22:13:20Z"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.sec), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img")
			os.WriteFile(img, good, 0o644)
			patchSuper(t, img, func(sb []byte) {
				binary.LittleEndian.PutUint64(sb[0x18:], uint64(tt.sec))
				binary.LittleEndian.PutUint32(sb[0x20:], tt.nsec)
			})
			out, err := runCmd(t, "inspect", "--json", img)
			if err != nil {
				t.Fatalf("inspect --json: %v\n%s", err, out)
			}
			if !json.Valid([]byte(out)) {
				t.Fatalf("invalid JSON:\n%s", out)
			}
			var rep inspectReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatal(err)
			}
			raw := fmt.Sprintf(`"build_time_seconds": %d,`, tt.sec)
			if rep.BuildSec != tt.sec || rep.BuildNsec != tt.nsec || rep.NoBuildDate != (tt.date == "") || !strings.Contains(out, raw) {
				t.Fatalf("report %d %d %v\n%s", rep.BuildSec, rep.BuildNsec, rep.NoBuildDate, out)
			}
			if tt.date == "" && (rep.BuildTime != nil || strings.Contains(out, `"build_time":`)) ||
				tt.date != "" && (rep.BuildTime == nil || !strings.Contains(out, `"build_time": "`+tt.date+`"`)) {
				t.Fatalf("build_time, want %q:\n%s", tt.date, out)
			}
			text, err := runCmd(t, "inspect", img)
			if err != nil {
				t.Fatalf("inspect: %v\n%s", err, text)
			}
			line := ""
			for _, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, "build time") {
					line = l
				}
			}
			if tt.date == "" && (!strings.Contains(line, fmt.Sprint(tt.sec)) || !strings.Contains(line, "out of range")) ||
				tt.date != "" && !strings.HasSuffix(line, " "+tt.date) {
				t.Fatalf("text: %q", line)
			}
		})
	}
}

// TestCheckInodeCount: check reports a superblock inode count the image
// cannot hold or that differs from the inodes in the tree; inspect still
// shows it.
func TestCheckInodeCount(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "hard")) // one inode, two names
	os.Mkdir(filepath.Join(src, "d"), 0o755)
	base := filepath.Join(t.TempDir(), "img")
	if out, err := runCmd(t, "build", "-o", base, src); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if out, err := runCmd(t, "check", base); err != nil || !strings.Contains(out, "clean: 3 inodes") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	good, _ := os.ReadFile(base)
	for _, tt := range []struct {
		inos uint64
		want string
	}{
		{1 << 58, "superblock claims 288230376151711744 inodes, more than the"},
		{1<<64 - 1, "more than the"},
		{4, "superblock claims 4 inodes, 3 are reachable from the root"},
		{2, "superblock claims 2 inodes, 3 are reachable"},
	} {
		img := filepath.Join(t.TempDir(), "img")
		os.WriteFile(img, good, 0o644)
		patchSuper(t, img, func(sb []byte) { binary.LittleEndian.PutUint64(sb[0x10:], tt.inos) })
		out, err := runCmd(t, "check", img)
		if !errors.Is(err, erofs.ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("check of %d inodes: %v, want %q\n%s", tt.inos, err, tt.want, out)
		}
		if out, err := runCmd(t, "inspect", img); err != nil || !strings.Contains(out, fmt.Sprintf("inodes        %d\n", tt.inos)) {
			t.Errorf("inspect of %d inodes: %v\n%s", tt.inos, err, out)
		}
	}
}

// TestInspectFscache61: inspect says whether Linux 6.1 reads an image
// right in fscache mode: sparse holes before data do not, the zero chunk
// does.
func TestInspectFscache61(t *testing.T) {
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("data after a hole"), 3<<20)
	f.Close()
	for _, tc := range []struct {
		holes string
		safe  bool
	}{{"auto", true}, {"zero-chunk", true}, {"sparse", false}} {
		t.Run(tc.holes, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img")
			if out, err := runCmd(t, "build", "--blob-dir", t.TempDir(), "--holes", tc.holes, "-o", img, src); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}
			rep := inspectJSON(t, img)
			if rep.Fscache61 == nil || rep.Fscache61.Safe != tc.safe || (rep.Fscache61.HoleFiles > 0) == tc.safe {
				t.Fatalf("fscache report %+v, want safe=%v", rep.Fscache61, tc.safe)
			}
			text, _ := runCmd(t, "inspect", img)
			if want := map[bool]string{true: "6.1 fscache   safe", false: "6.1 fscache   NOT SAFE: 1 file(s) (first: /sparse)"}[tc.safe]; !strings.Contains(text, want) {
				t.Errorf("text output lacks %q:\n%s", want, text)
			}
		})
	}
	if out, err := runCmd(t, "build", "--holes", "nonsense", "-o", filepath.Join(t.TempDir(), "img"), src); err == nil {
		t.Errorf("--holes nonsense accepted:\n%s", out)
	}
}

// inspectJSON runs inspect --json on img and decodes its report.
func inspectJSON(t *testing.T, img string) inspectReport {
	t.Helper()
	out, err := runCmd(t, "inspect", "--json", img)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}
