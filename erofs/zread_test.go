package erofs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// makeCompressibleTree fills root with files that exercise compressed
// layouts: text that compresses well, incompressible random data (plain
// pclusters), zeros, a sparse file, sizes around block and pcluster
// boundaries, a few system binaries, deep directories, long names and
// symlinks.
func makeCompressibleTree(t testing.TB, root string) {
	t.Helper()
	write := func(name string, data []byte) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(seed uint64, n int) []byte {
		r := rand.New(rand.NewPCG(seed, 3))
		words := strings.Fields("the quick brown fox jumps over a lazy dog erofs compresses text into pclusters of blocks while random data stays plain")
		var b bytes.Buffer
		for b.Len() < n {
			b.WriteString(words[r.IntN(len(words))])
			if r.IntN(12) == 0 {
				b.WriteByte('\n')
			} else {
				b.WriteByte(' ')
			}
		}
		return b.Bytes()[:n]
	}
	for i, n := range []int{0, 1, 100, 4095, 4096, 4097, 8191, 8192, 12289, 65536, 65537, 200000} {
		write(fmt.Sprintf("text/t_%d", n), text(uint64(i), n))
		write(fmt.Sprintf("rand/r_%d", n), fileData(uint64(100+i), n))
	}
	write("big/text_3m", text(50, 3<<20+123))
	write("big/zeros_2m", make([]byte, 2<<20))
	write("big/random_1m", fileData(51, 1<<20+7))
	// Alternating compressible and incompressible runs: extents of both
	// kinds, some ending mid-lcluster.
	var mixed []byte
	for i := 0; i < 40; i++ {
		if i%2 == 0 {
			mixed = append(mixed, text(uint64(60+i), 5000+i*311)...)
		} else {
			mixed = append(mixed, fileData(uint64(60+i), 3000+i*177)...)
		}
	}
	write("big/mixed", mixed)
	sparse := filepath.Join(root, "big/sparse")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int64{0, 1 << 20, 3<<20 + 5} {
		if _, err := f.WriteAt([]byte("data in a sparse file"), at); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(4<<20 + 99); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, bin := range []string{"/usr/bin/ls", "/usr/bin/cat", "/usr/bin/bash"} {
		if b, err := os.ReadFile(bin); err == nil {
			write("bin/"+filepath.Base(bin), b)
		}
	}
	deep := "deep"
	for i := 0; i < 12; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("level%d", i))
	}
	write(filepath.Join(deep, "leaf.txt"), text(70, 9000))
	write(strings.Repeat("l", 240)+"_long", text(71, 5000))
	for i := 0; i < 300; i++ {
		write(fmt.Sprintf("many/file_%03d", i), text(uint64(200+i), 50+i*37))
	}
	for name, target := range map[string]string{
		"links/short": "../text/t_100",
		"links/abs":   "/big/mixed",
		"links/long":  strings.Repeat("./", 1000) + "x",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
}

// zvariants are mkfs.erofs 1.5 ways to compress, with the layouts each
// must produce (so that a change of mkfs cannot silently drop coverage).
var zvariants = []struct {
	name   string
	args   []string
	full   bool // FULL indexes (else COMPACT, with 2-byte packs)
	inline bool // ztailpacking
	big    bool // multi-block pclusters
}{
	{name: "lz4", args: []string{"-zlz4"}},
	{name: "lz4hc", args: []string{"-zlz4hc"}},
	{name: "lz4hc_12", args: []string{"-zlz4hc,12"}},
	{name: "lz4hc_big_64k", args: []string{"-zlz4hc", "-C65536"}, big: true},
	{name: "lz4_big_1m", args: []string{"-zlz4", "-C1048576"}, big: true},
	{name: "lz4_ztailpacking", args: []string{"-zlz4", "-Eztailpacking"}, inline: true},
	{name: "lz4hc_big_ztailpacking", args: []string{"-zlz4hc", "-C16384", "-Eztailpacking"}, inline: true, big: true},
	{name: "lz4_legacy", args: []string{"-zlz4", "-Elegacy-compress"}, full: true},
	{name: "lz4hc_compact_inodes", args: []string{"-zlz4hc", "-Eforce-inode-compact", "-T0", "--all-root"}},
	{name: "lz4_extended_inodes", args: []string{"-zlz4", "-Eforce-inode-extended"}},
	{name: "lz4hc_small_extents", args: []string{"-zlz4hc", "--max-extent-bytes=16384"}},
}

// TestCompressedMatchesSource reads every file of mkfs.erofs -z images
// through the fs.FS and compares it with the source tree; Check must pass.
func TestCompressedMatchesSource(t *testing.T) {
	requireMkfs(t)
	src := filepath.Join(t.TempDir(), "src")
	makeCompressibleTree(t, src)
	for _, v := range zvariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			path := mkfs(t, src, v.args...)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img, err := Open(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			st := zstatsOf(t, img)
			if (st.full > 0) != v.full || (st.compact > 0) == v.full || (!v.full && st.compact2B == 0) ||
				(st.inline > 0) != v.inline || (st.bigPcluster > 0) != v.big || st.compressed == 0 {
				t.Fatalf("layouts %+v, want full %v, inline %v, big pclusters %v", st, v.full, v.inline, v.big)
			}
			compressed := compareZTree(t, img, src)
			if compressed == 0 {
				t.Fatal("mkfs.erofs compressed no file")
			}
			rep, err := Check(context.Background(), bytes.NewReader(data), CheckOptions{VerifyData: true})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if rep.CompressedFiles != compressed || rep.Extents == 0 {
				t.Fatalf("Check counted %d compressed files and %d extents; the tree has %d compressed files", rep.CompressedFiles, rep.Extents, compressed)
			}
		})
	}
}

// compareZTree compares every file, symlink and directory of src with the
// image and returns how many regular files are compressed.
func compareZTree(t *testing.T, img *Image, src string) int {
	t.Helper()
	compressed := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		fi, err := img.Lstat(rel)
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			want, _ := os.Readlink(p)
			got, err := img.ReadLink(rel)
			if err != nil || got != want {
				return fmt.Errorf("%s: link %q, %v; want %q", rel, got, err, want)
			}
		case d.Type().IsRegular():
			want, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if fi.Sys().(*Stat).Layout == disk.LayoutCompressedFull || fi.Sys().(*Stat).Layout == disk.LayoutCompressedCompact {
				compressed++
			}
			got, err := img.ReadFile(rel)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("%s: ReadFile differs from the source (%d vs %d bytes, first difference at %d)", rel, len(got), len(want), firstDiff(got, want))
			}
			if err := readZPieces(img, rel, want); err != nil {
				return err
			}
		case d.IsDir():
			ents, err := img.ReadDir(rel)
			if err != nil {
				return err
			}
			srcEnts, _ := os.ReadDir(p)
			if len(ents) != len(srcEnts) {
				return fmt.Errorf("%s: %d entries, want %d", rel, len(ents), len(srcEnts))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return compressed
}

// readZPieces reads the file sequentially in odd-sized pieces, at block
// edges and at random offsets, crossing extent boundaries in every way.
func readZPieces(img *Image, name string, want []byte) error {
	f, err := img.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	var got bytes.Buffer
	buf := make([]byte, 3001)
	for {
		n, err := f.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		return fmt.Errorf("%s: sequential reads differ at %d", name, firstDiff(got.Bytes(), want))
	}
	ra := f.(io.ReaderAt)
	size := int64(len(want))
	for _, off := range []int64{0, 4095, 4096, 8191, size / 2, size - 1} {
		if off < 0 || off >= size {
			continue
		}
		b := make([]byte, min(5000, size-off))
		if _, err := ra.ReadAt(b, off); err != nil && err != io.EOF {
			return fmt.Errorf("%s: ReadAt(%d, %d): %w", name, len(b), off, err)
		}
		if !bytes.Equal(b, want[off:off+int64(len(b))]) {
			return fmt.Errorf("%s: ReadAt(%d, %d) differs from the whole", name, len(b), off)
		}
	}
	r := rand.New(rand.NewPCG(uint64(len(want)), 1))
	for i := 0; i < 20 && len(want) > 0; i++ {
		off := r.IntN(len(want))
		n := 1 + r.IntN(min(len(want)-off, 70000))
		p := make([]byte, n)
		if _, err := ra.ReadAt(p, int64(off)); err != nil && err != io.EOF {
			return fmt.Errorf("%s: ReadAt(%d, %d): %w", name, n, off, err)
		}
		if !bytes.Equal(p, want[off:off+n]) {
			return fmt.Errorf("%s: ReadAt(%d, %d) differs at %d", name, n, off, off+firstDiff(p, want[off:off+n]))
		}
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// zlayoutStats tallies how an image's compressed inodes are laid out.
type zlayoutStats struct {
	full, compact      int // inodes per index layout
	compressed, plain  int // extents
	interlaced, inline int
	bigPcluster        int // pclusters of more than one block
	compact2B          int // inodes with 2-byte packs
}

func zstatsOf(t *testing.T, img *Image) zlayoutStats {
	t.Helper()
	var st zlayoutStats
	err := fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		ino, err := img.inode(fi.Sys().(*Stat).Nid)
		if err != nil || !ino.compressed() || ino.size == 0 {
			return err
		}
		if ino.layout() == disk.LayoutCompressedFull {
			st.full++
		} else {
			st.compact++
		}
		var meta metaBuf
		zi, err := img.zinfoOf(ino, &meta)
		if err != nil {
			return err
		}
		if zi.packs.Compact2B > 0 {
			st.compact2B++
		}
		m := zmapper{img: img, ino: ino, zi: zi, meta: meta}
		for off := int64(0); off < ino.size; {
			ext, err := m.mapAt(off, false)
			if err != nil {
				return err
			}
			switch ext.kind {
			case zCompressed:
				st.compressed++
			case zInterlaced:
				st.interlaced++
				st.plain++
			default:
				st.plain++
			}
			if ext.inline {
				st.inline++
			}
			if ext.plen > img.blkSize {
				st.bigPcluster++
			}
			off = ext.la + ext.llen
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// BenchmarkReadCompressed reads a 16 MiB file of mixed text and random
// data from a mkfs.erofs -zlz4hc image, sequentially in 128 KiB reads
// (each extent decoded once) and by ReadFile.
func BenchmarkReadCompressed(b *testing.B) {
	requireMkfs(b)
	src := filepath.Join(b.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		b.Fatal(err)
	}
	var content []byte
	for i := 0; len(content) < 16<<20; i++ {
		content = append(content, bytes.Repeat([]byte(fmt.Sprintf("record %d of a log line that compresses\n", i)), 50)...)
		content = append(content, fileData(uint64(i), 4000)...)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), content, 0o644); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(mkfs(b, src, "-zlz4hc", "-C65536"))
	if err != nil {
		b.Fatal(err)
	}
	img, err := Open(bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sequential", func(b *testing.B) {
		b.SetBytes(int64(len(content)))
		buf := make([]byte, 128<<10)
		for b.Loop() {
			f, err := img.Open("f")
			if err != nil {
				b.Fatal(err)
			}
			for {
				_, err := f.Read(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
		}
	})
	b.Run("ReadFile", func(b *testing.B) {
		b.SetBytes(int64(len(content)))
		for b.Loop() {
			if _, err := img.ReadFile("f"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestCompressedConcurrentReads reads one open compressed file from
// several goroutines at once (its extent cache is shared) and the packed
// inode's fragments through several files: run with -race.
func TestCompressedConcurrentReads(t *testing.T) {
	data, want, blob := buildSynth(t)
	img, err := Open(bytes.NewReader(data), WithBlobs(BlobResolverFunc(func(int, string) (io.ReaderAt, error) {
		return bytes.NewReader(blob), nil
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	errs := make(chan error, 64)
	for name, w := range want {
		f, err := img.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ra := f.(io.ReaderAt)
		for g := 0; g < 4; g++ {
			go func() {
				r := rand.New(rand.NewPCG(uint64(g), uint64(len(w))))
				for i := 0; i < 50 && len(w) > 0; i++ {
					off := r.IntN(len(w))
					p := make([]byte, 1+r.IntN(len(w)-off))
					if _, err := ra.ReadAt(p, int64(off)); err != nil && err != io.EOF {
						errs <- fmt.Errorf("%s: %w", name, err)
						return
					}
					if !bytes.Equal(p, w[off:off+len(p)]) {
						errs <- fmt.Errorf("%s: ReadAt(%d) differs", name, off)
						return
					}
				}
				errs <- nil
			}()
		}
	}
	for range 4 * len(want) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
