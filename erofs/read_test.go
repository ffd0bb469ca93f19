package erofs

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// hostXattrs lists the xattrs of a host path, sorted by name.
func hostXattrs(t testing.TB, p string) []Xattr {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	var out []Xattr
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", p, name, err)
		}
		v := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Xattr{Name: name, Value: v[:vsz]})
	}
	slices.SortFunc(out, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func xattrsEqual(a, b []Xattr) bool {
	return slices.EqualFunc(a, b, func(x, y Xattr) bool { return x.Name == y.Name && bytes.Equal(x.Value, y.Value) })
}

// compareTree checks every path under host (a source tree or a kernel
// mount) against the image. fromKernel selects the exact comparison
// (inode numbers, times, owners as the kernel shows them).
func compareTree(t *testing.T, img *Image, host string, v variant, fromKernel bool) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(host, p)
		rel = filepath.ToSlash(rel)
		seen++
		var hs unix.Stat_t
		if err := unix.Lstat(p, &hs); err != nil {
			return err
		}
		fi, err := img.Lstat(rel)
		if err != nil {
			t.Errorf("%s: Lstat: %v", rel, err)
			return nil
		}
		st := fi.Sys().(*Stat)
		hfi, _ := os.Lstat(p)
		if st.Mode != hfi.Mode() || uint32(st.RawMode) != hs.Mode {
			t.Errorf("%s: mode %v (%#o), host %v (%#o)", rel, st.Mode, st.RawMode, hfi.Mode(), hs.Mode)
		}
		if st.Nlink != uint32(hs.Nlink) {
			t.Errorf("%s: nlink %d, host %d", rel, st.Nlink, hs.Nlink)
		}
		wantUID, wantGID := hs.Uid, hs.Gid
		if v.allRoot && !fromKernel {
			wantUID, wantGID = 0, 0
		}
		if st.UID != wantUID || st.GID != wantGID {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, st.UID, st.GID, wantUID, wantGID)
		}
		hostMtime := time.Unix(hs.Mtim.Sec, hs.Mtim.Nsec)
		switch {
		case fromKernel:
			if !st.Mtime.Equal(hostMtime) {
				t.Errorf("%s: mtime %v, kernel %v", rel, st.Mtime, hostMtime)
			}
			if st.Nid != hs.Ino {
				t.Errorf("%s: nid %d, kernel ino %d", rel, st.Nid, hs.Ino)
			}
		case v.compact:
			if !st.Mtime.Equal(time.Unix(0, 0)) || st.Extended {
				t.Errorf("%s: compact image: mtime %v extended %v", rel, st.Mtime, st.Extended)
			}
		default:
			if !st.Mtime.Equal(hostMtime) {
				t.Errorf("%s: mtime %v, source %v", rel, st.Mtime, hostMtime)
			}
		}
		if fi.Mode().Type()&(fs.ModeDevice) != 0 && st.Rdev != hs.Rdev {
			t.Errorf("%s: rdev %#x, host %#x", rel, st.Rdev, hs.Rdev)
		}
		if fromKernel || !d.IsDir() {
			// Directory sizes differ between the source fs and EROFS.
			if st.Size != hs.Size {
				t.Errorf("%s: size %d, host %d", rel, st.Size, hs.Size)
			}
		}
		if got, want := mustXattrs(t, img, rel), hostXattrs(t, p); !xattrsEqual(got, want) {
			t.Errorf("%s: xattrs %q, host %q", rel, got, want)
		}
		switch {
		case fi.Mode().IsRegular() && hs.Size > 64<<20:
			compareSampled(t, img, rel, p, hs.Size)
		case fi.Mode().IsRegular():
			want, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got, err := img.ReadFile(rel)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: ReadFile: %d bytes, err %v; want %d bytes", rel, len(got), err, len(want))
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			want, _ := os.Readlink(p)
			if got, err := img.ReadLink(rel); err != nil || got != want {
				t.Errorf("%s: ReadLink %q, %v; want %q", rel, got, err, want)
			}
		case fi.IsDir():
			hostEnts, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			ents, err := img.ReadDir(rel)
			if err != nil {
				t.Errorf("%s: ReadDir: %v", rel, err)
				return nil
			}
			var got, want []string
			for _, e := range ents {
				got = append(got, e.Name()+":"+e.Type().String())
			}
			for _, e := range hostEnts {
				want = append(want, e.Name()+":"+e.Type().String())
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: ReadDir %d entries, host %d\n got %.300q\nwant %.300q", rel, len(got), len(want), got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 600 {
		t.Fatalf("walked only %d paths", seen)
	}
}

// compareSampled compares a large (typically sparse) file in windows:
// every 256 MiB, around the 4 GiB boundary and at the end.
func compareSampled(t *testing.T, img *Image, rel, hostPath string, size int64) {
	t.Helper()
	hf, err := os.Open(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	f, err := img.Open(rel)
	if err != nil {
		t.Errorf("%s: Open: %v", rel, err)
		return
	}
	defer f.Close()
	const win = 64 << 10
	offs := []int64{4<<30 - win, 4 << 30, max(0, size-win)}
	for o := int64(0); o < size; o += 256 << 20 {
		offs = append(offs, o)
	}
	want, got := make([]byte, win), make([]byte, win)
	for _, o := range offs {
		if o >= size {
			continue
		}
		wn, werr := hf.ReadAt(want, o)
		gn, gerr := f.(io.ReaderAt).ReadAt(got, o)
		if wn != gn || !bytes.Equal(want[:wn], got[:gn]) || (werr == nil) != (gerr == nil) {
			t.Errorf("%s at %d: %d bytes (%v), host %d bytes (%v)", rel, o, gn, gerr, wn, werr)
		}
	}
}

func mustXattrs(t testing.TB, img *Image, name string) []Xattr {
	t.Helper()
	x, err := img.Xattrs(name)
	if err != nil {
		t.Errorf("%s: Xattrs: %v", name, err)
	}
	return x
}

// TestReadMatchesSource compares images made by mkfs.erofs with the trees
// they were made from.
func TestReadMatchesSource(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			src, im := buildVariant(t, v, treeOpts{linkToDir: true, special: true, owners: true})
			img := im.open(t)
			compareTree(t, img, src, v, false)

			info := img.Info()
			if info.BlockSize != 4096 || !info.HasChecksum || int64(info.Blocks)*4096 != int64(len(im.data)) {
				t.Errorf("info %+v, image %d bytes", info, len(im.data))
			}
			if got := img.Devices(); v.blobdev != (len(got) == 1) {
				t.Errorf("devices %+v", got)
			}
			if v.chunked != (info.FeatureIncompat&disk.IncompatChunkedFile != 0) {
				t.Errorf("incompat %#x", info.FeatureIncompat)
			}
			checkChunks(t, img, v)
			checkSeekAndReadAt(t, img, src)
			checkSymlinkResolution(t, img)
		})
	}
}

func checkChunks(t *testing.T, img *Image, v variant) {
	chunks, err := img.Chunks("size_100000")
	if !v.chunked {
		if !errors_Is(err, ErrNotChunked) {
			t.Errorf("Chunks on a flat file: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Chunks: %v", err)
	}
	var total int64
	for i, c := range chunks {
		if c.Offset != total || c.Hole {
			t.Errorf("chunk %d: %+v", i, c)
		}
		total += c.Length
		if v.blobdev && c.Device != 1 || !v.blobdev && c.Device != 0 {
			t.Errorf("chunk %d on device %d", i, c.Device)
		}
	}
	if total != 100000 {
		t.Errorf("chunks cover %d bytes", total)
	}
	if _, err := img.Chunks("many"); !errors_Is(err, ErrNotChunked) {
		t.Errorf("Chunks on a directory: %v", err)
	}
}

func checkSeekAndReadAt(t *testing.T, img *Image, src string) {
	want, _ := os.ReadFile(filepath.Join(src, "size_100000"))
	f, err := img.Open("size_100000")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ra := f.(io.ReaderAt)
	for _, off := range []int64{0, 1, 4095, 4096, 4097, 50000, 99999} {
		buf := make([]byte, 5000)
		n, err := ra.ReadAt(buf, off)
		wantN := min(5000, 100000-off)
		if int64(n) != wantN || !bytes.Equal(buf[:n], want[off:off+wantN]) || (int64(n) < 5000) != (err == io.EOF) {
			t.Errorf("ReadAt(%d): n=%d err=%v", off, n, err)
		}
	}
	sk := f.(io.Seeker)
	if pos, err := sk.Seek(-10, io.SeekEnd); err != nil || pos != 99990 {
		t.Fatalf("Seek: %d %v", pos, err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, want[99990:]) {
		t.Errorf("read after seek: %q %v", rest, err)
	}
	if _, err := sk.Seek(-1, io.SeekStart); err == nil {
		t.Error("negative seek succeeded")
	}
}

func checkSymlinkResolution(t *testing.T, img *Image) {
	hello, err := img.ReadFile("hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"link_hello", "many/sub_b/link_up", "link_via_dir"} {
		if got, err := img.ReadFile(name); err != nil || !bytes.Equal(got, hello) {
			t.Errorf("ReadFile(%s) = %q, %v", name, got, err)
		}
	}
	if got, err := img.ReadFile("link_abs"); err != nil || string(got) != "entry 7\n" {
		t.Errorf("absolute link: %q %v", got, err)
	}
	if fi, err := img.Stat("link_dir"); err != nil || !fi.IsDir() || fi.Name() != "link_dir" {
		t.Errorf("Stat(link_dir) = %v, %v", fi, err)
	}
	if fi, err := img.Lstat("link_dir"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(link_dir) = %v, %v", fi, err)
	}
	if ents, err := img.ReadDir("link_dir"); err != nil || len(ents) != 1 || ents[0].Name() != "deeper" {
		t.Errorf("ReadDir(link_dir) = %v, %v", ents, err)
	}
	if _, err := img.ReadFile("link_dir/deeper/leaf"); err != nil {
		t.Errorf("through a dir link: %v", err)
	}
	for _, name := range []string{"link_long", "link_4095"} {
		if got, err := img.ReadFile(name); err != nil || len(got) != 4097 {
			t.Errorf("ReadFile(%s) = %d bytes, %v", name, len(got), err)
		}
	}
	if _, err := img.Stat("link_dangling"); !errors_Is(err, fs.ErrNotExist) {
		t.Errorf("dangling link: %v", err)
	}
	if _, err := img.Open("loop_a"); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("symlink loop: %v", err)
	}
	if target, err := img.ReadLink("loop_a"); err != nil || target != "loop_b" {
		t.Errorf("ReadLink(loop_a) = %q, %v", target, err)
	}
	if _, err := img.Open("hello.txt/x"); err == nil {
		t.Error("path through a file opened")
	}
	if _, err := img.ReadLink("hello.txt"); !errors_Is(err, fs.ErrInvalid) {
		t.Errorf("ReadLink on a file: %v", err)
	}
	if _, err := img.Open("/hello.txt"); !errors_Is(err, fs.ErrInvalid) {
		t.Errorf("invalid path: %v", err)
	}
	if _, err := img.ReadFile("many"); err == nil {
		t.Error("ReadFile on a directory succeeded")
	}
}

// TestFSConformance runs testing/fstest on an image.
func TestFSConformance(t *testing.T) {
	for _, v := range []variant{variants[0], variants[2], variants[3]} {
		t.Run(v.name, func(t *testing.T) {
			_, im := buildVariant(t, v, treeOpts{special: true})
			img := im.open(t)
			if err := fstest.TestFS(img, "hello.txt", "size_100000", "many/entry_599", "many/sub_a/deeper/leaf", "link_long", "fifo"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
