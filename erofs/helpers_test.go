package erofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/internal/testutil/require"
)

// requireMkfs skips the test when mkfs.erofs is not installed.
func requireMkfs(t testing.TB) {
	t.Helper()
	require.Host(t, require.Tool("mkfs.erofs", "erofs-utils"))
}

func lookMkfs() (string, error) { return exec.LookPath("mkfs.erofs") }

// mkfs runs mkfs.erofs on dir and returns the image path.
func mkfs(t testing.TB, dir string, args ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "image.erofs")
	cmd := exec.Command("mkfs.erofs", append(append([]string{"--quiet"}, args...), img, dir)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs %v: %v\n%s", args, err, out)
	}
	return img
}

// treeOpts selects optional parts of the generated source tree.
type treeOpts struct {
	linkToDir bool // a symlink to a directory (fstest.TestFS cannot read it as a file)
	special   bool // device nodes and a socket (root only)
	owners    bool // owners > 65535 and odd mtimes, to force extended inodes
}

func isRoot() bool { return os.Geteuid() == 0 }

// fileData returns deterministic pseudo-random contents.
func fileData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// makeTree fills root with the test tree.
func makeTree(t testing.TB, root string, o treeOpts) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%.200s", err)
		}
	}
	write := func(name string, data []byte) {
		t.Helper()
		p := filepath.Join(root, name)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, data, 0o644))
	}
	for i, n := range []int{0, 1, 4095, 4096, 4097, 100000} {
		write(fmt.Sprintf("size_%d", n), fileData(uint64(i), n))
	}
	write("hello.txt", []byte("hello, erofs\n"))
	for i := 0; i < 600; i++ {
		write(fmt.Sprintf("many/entry_%03d", i), []byte(fmt.Sprintf("entry %d\n", i)))
	}
	must(os.MkdirAll(filepath.Join(root, "many/sub_a/deeper"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "many/sub_b"), 0o750))
	write("many/sub_a/deeper/leaf", []byte("leaf"))
	must(os.MkdirAll(filepath.Join(root, "empty_dir"), 0o700))
	long := strings.Repeat("n", 249) + "_tail" // 254 bytes: mkfs.erofs 1.5 fails on 255-byte names
	write(long, []byte("long name"))

	must(os.Symlink("hello.txt", filepath.Join(root, "link_hello")))
	must(os.Symlink("/many/entry_007", filepath.Join(root, "link_abs")))
	must(os.Symlink(strings.Repeat("./", 1500)+"size_4097", filepath.Join(root, "link_long")))
	must(os.Symlink(strings.Repeat("./", 2043)+"size_4097", filepath.Join(root, "link_4095")))
	must(os.Symlink("../../hello.txt", filepath.Join(root, "many/sub_b/link_up")))
	if o.linkToDir {
		must(os.Symlink("many/sub_a", filepath.Join(root, "link_dir")))
		must(os.Symlink("dangling_target", filepath.Join(root, "link_dangling")))
		must(os.Symlink("link_dir/../../hello.txt", filepath.Join(root, "link_via_dir")))
		must(os.Symlink("loop_b", filepath.Join(root, "loop_a")))
		must(os.Symlink("loop_a", filepath.Join(root, "loop_b")))
	}
	must(os.Link(filepath.Join(root, "size_4097"), filepath.Join(root, "hard_1")))
	must(os.Link(filepath.Join(root, "size_4097"), filepath.Join(root, "many/sub_b/hard_2")))
	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o640))

	must(unix.Lsetxattr(filepath.Join(root, "hello.txt"), "user.foo", []byte("bar"), 0))
	must(unix.Lsetxattr(filepath.Join(root, "hello.txt"), "user.empty", nil, 0))
	must(unix.Lsetxattr(filepath.Join(root, "size_4096"), "user.big", bytes.Repeat([]byte("v"), 1000), 0))
	must(unix.Lsetxattr(filepath.Join(root, "many"), "user.dir", []byte("on a directory"), 0))
	for i := 0; i < 5; i++ { // the same xattr on many inodes becomes a shared xattr
		must(unix.Lsetxattr(filepath.Join(root, fmt.Sprintf("many/entry_%03d", i)), "user.shared", []byte("shared value"), 0))
	}
	if isRoot() {
		must(unix.Lsetxattr(filepath.Join(root, "empty_dir"), "trusted.overlay.opaque", []byte("y"), 0))
	}
	must(os.Chmod(filepath.Join(root, "size_1"), 0o4755))
	must(os.Chmod(filepath.Join(root, "empty_dir"), 0o1777))

	if o.special && isRoot() {
		must(unix.Mknod(filepath.Join(root, "dev_null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(filepath.Join(root, "dev_blk"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 1))))
		must(unix.Mknod(filepath.Join(root, "dev_big"), unix.S_IFCHR|0o600, int(unix.Mkdev(259, 70000))))
		must(unix.Mknod(filepath.Join(root, "whiteout"), unix.S_IFCHR|0o000, int(unix.Mkdev(0, 0))))
		must(unix.Mknod(filepath.Join(root, "socket"), unix.S_IFSOCK|0o755, 0))
	}
	if o.owners && isRoot() {
		must(os.Lchown(filepath.Join(root, "size_4096"), 100000, 100001))
		must(os.Lchown(filepath.Join(root, "hello.txt"), 1000, 1001))
		must(os.Lchown(filepath.Join(root, "link_hello"), 1002, 1003))
	}
	// Fixed mtimes with nanoseconds, set last (children before parents).
	var paths []string
	must(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	slices.Reverse(paths)
	for i, p := range paths {
		ts := unix.NsecToTimespec(int64(1600000000+i)*1e9 + int64(i*7919))
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// image is a test image: its bytes and, for --blobdev images, the blob.
type image struct {
	path     string
	data     []byte
	blobPath string
}

// resolver serves device 1 from the blob file; the files it opens are
// closed when the test ends.
func (im *image) resolver(t testing.TB) BlobResolver {
	return BlobResolverFunc(func(dev int, tag string) (io.ReaderAt, error) {
		if dev != 1 || im.blobPath == "" {
			return nil, fmt.Errorf("no device %d", dev)
		}
		f, err := os.Open(im.blobPath)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { f.Close() })
		return f, nil
	})
}

func (im *image) open(t testing.TB) *Image {
	t.Helper()
	img, err := Open(bytes.NewReader(im.data), WithBlobs(im.resolver(t)))
	if err != nil {
		t.Fatalf("Open %s: %v", im.path, err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

// variant is one way to run mkfs.erofs.
type variant struct {
	name     string
	args     []string
	allRoot  bool // --all-root
	compact  bool // -T0: compact inodes, mtime = build time 0
	blobdev  bool
	chunked  bool
	treeOpts treeOpts
}

var variants = []variant{
	{name: "flat", args: []string{"-T0", "--all-root"}, allRoot: true, compact: true},
	{name: "extended", args: nil},
	{name: "chunked", args: []string{"-T0", "--all-root", "--chunksize=4096"}, allRoot: true, compact: true, chunked: true},
	{name: "blobdev", args: []string{"-T0", "--all-root", "--chunksize=4096"}, allRoot: true, compact: true, chunked: true, blobdev: true},
	{name: "chunked_8k_ext", args: []string{"--chunksize=8192"}, chunked: true},
}

// buildVariant makes a source tree and an image of it.
func buildVariant(t testing.TB, v variant, o treeOpts) (src string, im *image) {
	t.Helper()
	requireMkfs(t)
	src = filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	makeTree(t, src, o)
	args := slices.Clone(v.args)
	var blob string
	if v.blobdev {
		blob = filepath.Join(t.TempDir(), "blob")
		args = append(args, "--blobdev="+blob)
	}
	p := mkfs(t, src, args...)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return src, &image{path: p, data: data, blobPath: blob}
}

// inodeOff returns the byte offset of inode nid.
func inodeOff(img *Image, nid uint64) int64 { return img.metaBase + int64(nid)*disk.InodeSlotSize }

func nidOf(t testing.TB, img *Image, name string) uint64 {
	t.Helper()
	fi, err := img.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*Stat).Nid
}

// fixChecksum recomputes the superblock checksum of data if it has one.
func fixChecksum(data []byte) {
	sb, err := disk.DecodeSuperblock(data[disk.SuperOffset:])
	if err != nil || sb.FeatureCompat&disk.CompatSuperChecksum == 0 {
		return
	}
	bs := 1 << sb.BlkSzBits
	if sb.BlkSzBits < 9 || sb.BlkSzBits > 16 || max(bs, disk.SuperOffset+min(bs, disk.SuperOffset)) > len(data) {
		return
	}
	var block []byte
	if bs > disk.SuperOffset {
		block = data[:bs]
	} else {
		block = data[disk.SuperOffset : disk.SuperOffset+bs]
	}
	sum := disk.SuperChecksum(block)
	binary.LittleEndian.PutUint32(data[disk.SuperOffset+4:], sum)
}

// patchInode decodes inode nid in data, lets f modify it and encodes it back.
func patchInode(t testing.TB, img *Image, data []byte, nid uint64, f func(*disk.Inode)) {
	t.Helper()
	off := inodeOff(img, nid)
	in, err := disk.DecodeInode(data[off:])
	if err != nil {
		t.Fatal(err)
	}
	f(&in)
	in.Encode(data[off : off+int64(in.OnDiskSize())])
}

// isReported reports whether err is one of the classified errors.
func isReported(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported)
}

func errors_Is(err, target error) bool { return errors.Is(err, target) }
