package erofs

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/internal/sha256chain"
	"golang.org/x/sys/unix"
)

type seedSpec struct {
	name  string
	args  []string
	blob  bool // --blobdev; only the primary image is kept
	table bool // append a chunk digest table and tag the device
	z     bool // compressed: the small tree of makeZSeedTree
}

var seedSpecs = []seedSpec{
	{name: "flat", args: []string{"-T0", "--all-root"}},
	{name: "chunked", args: []string{"-T0", "--all-root", "--chunksize=4096"}},
	{name: "blobdev", args: []string{"-T0", "--all-root", "--chunksize=4096"}, blob: true},
	{name: "blobdev_table", args: []string{"-T0", "--all-root", "--chunksize=4096"}, blob: true, table: true},
	{name: "z_lz4", args: []string{"-T0", "--all-root", "-zlz4"}, z: true},
	{name: "z_lz4hc_big_ztail", args: []string{"-T0", "--all-root", "-zlz4hc", "-C16384", "-Eztailpacking"}, z: true},
	{name: "z_lz4_legacy", args: []string{"-T0", "--all-root", "-zlz4", "-Elegacy-compress"}, z: true},
}

// makeZSeedTree makes a small tree whose files compress: one extent,
// several, and compressed extents around a plain (incompressible) one.
func makeZSeedTree(t testing.TB, root string) {
	w := func(name string, data []byte) {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(n int) []byte {
		var b []byte
		for i := 0; len(b) < n; i++ {
			b = fmt.Appendf(b, "line %d of a small compressible seed file\n", i%97)
		}
		return b[:n]
	}
	w("small", text(100))
	w("text", text(20000))
	w("mixed", append(append(text(6000), fileData(3, 2500)...), text(6000)...))
	os.Symlink("text", filepath.Join(root, "link"))
}

// makeSeedTree makes a small tree with every kind of inode.
func makeSeedTree(t testing.TB, root string) {
	w := func(name string, data []byte) {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w("a", []byte("a"))
	w("empty", nil)
	w("tail", fileData(1, 5000))
	w("block", fileData(2, 4096))
	for i := 0; i < 12; i++ {
		w(fmt.Sprintf("dir/f%02d", i), []byte("same")) // one deduplicated chunk
		unix.Lsetxattr(filepath.Join(root, fmt.Sprintf("dir/f%02d", i)), "user.s", []byte("shared"), 0)
	}
	os.MkdirAll(filepath.Join(root, "dir/sub"), 0o755)
	os.Symlink("../a", filepath.Join(root, "dir/sub/link"))
	os.Link(filepath.Join(root, "a"), filepath.Join(root, "dir/hard"))
	unix.Mkfifo(filepath.Join(root, "fifo"), 0o600)
	unix.Lsetxattr(filepath.Join(root, "a"), "user.x", []byte("value"), 0)
}

// makeSeed builds one seed image with mkfs.erofs (nil without mkfs).
func makeSeed(t testing.TB, s seedSpec) []byte {
	if _, err := lookMkfs(); err != nil {
		return nil
	}
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	if s.z {
		makeZSeedTree(t, src)
	} else {
		makeSeedTree(t, src)
	}
	args := s.args
	blob := filepath.Join(t.TempDir(), "blob")
	if s.blob {
		args = append(args[:len(args):len(args)], "--blobdev="+blob)
	}
	b, err := os.ReadFile(mkfs(t, src, args...))
	if err != nil {
		t.Fatal(err)
	}
	if s.table {
		var entries []disk.ChunkEntry
		b, _, entries = appendChunkTable(t, b, blob)
		b = append(b, chunkStatesOf(t, blob, entries)...)
	}
	return b
}

// chunkStatesOf encodes the chunk states section for a table of blob's
// chunks.
func chunkStatesOf(t testing.TB, blobPath string, entries []disk.ChunkEntry) []byte {
	blob, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	return disk.EncodeSection(disk.ChunkStatesMagic, disk.ChunkStatesVersion, disk.ChunkStatesEntrySize, len(entries), func(i int, out []byte) {
		h := sha256.New()
		h.Write(blob[:int64(entries[i].BlkAddr)*4096])
		st, err := sha256chain.Of(h)
		if err != nil {
			t.Fatal(err)
		}
		copy(out, st[:])
	})
}

// TestUpdateSeeds rewrites testdata/*.erofs when EROFS_UPDATE_SEEDS=1.
func TestUpdateSeeds(t *testing.T) {
	if os.Getenv("EROFS_UPDATE_SEEDS") != "1" {
		t.Skip("set EROFS_UPDATE_SEEDS=1 to regenerate testdata/*.erofs")
	}
	requireMkfs(t)
	for _, s := range seedSpecs {
		if err := os.WriteFile(filepath.Join("testdata", s.name+".erofs"), makeSeed(t, s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
