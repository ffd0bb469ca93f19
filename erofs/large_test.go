package erofs

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/internal/testutil/require"
)

// Files larger than 4 GiB: mkfs.erofs needs ~30 s to write one, so the
// test patches small mkfs.erofs images into 5 GiB files whose data lives
// in sparse files, then compares reads with the kernel at chosen offsets.

const (
	largeSize = 5<<30 + 123
	markerLen = 96 // test offsets are at least 100 bytes apart
)

var largeOffsets = []int64{0, 1 << 20, 2 << 30, 4<<30 - 100, 4 << 30, 4<<30 + 4000, largeSize - 300}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func largeTree(t *testing.T) string {
	requireMkfs(t)
	require.Host(t, require.Root) // to chown (extended inodes)
	src := t.TempDir()
	for name, n := range map[string]int{"flat": 4096, "chunky": 8192} {
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, fileData(9, n), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 100000, 100000); err != nil { // forces an extended inode
			t.Fatal(err)
		}
	}
	return src
}

// markers writes recognisable bytes around each test offset of a file
// whose logical offset off is stored at base+off in path (holes stay 0).
func markers(t *testing.T, path string, base int64, inHole func(int64) bool) {
	for i, off := range largeOffsets {
		if inHole(off) {
			continue
		}
		writeAt(t, path, base+off, fileData(uint64(100+i), markerLen))
	}
}

func compareLarge(t *testing.T, img *Image, name, mnt string, inHole func(int64) bool) {
	t.Helper()
	f, err := img.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() != largeSize {
		t.Fatalf("size %d", fi.Size())
	}
	var kf *os.File
	if mnt != "" {
		kf, err = os.Open(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		defer kf.Close()
	}
	for i, off := range largeOffsets {
		got := make([]byte, markerLen)
		n, err := f.(io.ReaderAt).ReadAt(got, off)
		if n != min(markerLen, int(largeSize-off)) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
		want := fileData(uint64(100+i), markerLen)[:n]
		if inHole(off) {
			want = make([]byte, n)
		}
		if !bytes.Equal(got[:n], want) {
			t.Errorf("offset %d: data mismatch", off)
		}
		if kf != nil {
			kb := make([]byte, markerLen)
			kn, _ := kf.ReadAt(kb, off)
			if kn != n || !bytes.Equal(kb[:kn], got[:n]) {
				t.Errorf("offset %d: kernel read %d bytes, differs from reader", off, kn)
			}
		}
	}
	if kf != nil {
		t.Logf("%s: %d offsets agree with the kernel", name, len(largeOffsets))
	}
	if _, err := img.ReadFile(name); !errors_Is(err, ErrTooLarge) {
		t.Errorf("ReadFile of a 5 GiB file: %v", err)
	}
}

func TestLargeFlatFile(t *testing.T) {
	src := largeTree(t)
	path := mkfs(t, src)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	nid := nidOf(t, img, "flat")
	oldBlocks := img.sb.Blocks
	patchInode(t, img, data, nid, func(in *disk.Inode) {
		if in.Layout() != disk.LayoutFlatPlain || !in.Extended() {
			t.Fatalf("mkfs made format %#x", in.Format)
		}
		in.Size = largeSize
		in.U = oldBlocks
	})
	newBlocks := oldBlocks + uint32((largeSize+4095)/4096)
	binary.LittleEndian.PutUint32(data[disk.SuperOffset+0x24:], newBlocks)
	fixChecksum(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(newBlocks)*4096); err != nil {
		t.Fatal(err)
	}
	noHole := func(int64) bool { return false }
	markers(t, path, int64(oldBlocks)*4096, noHole)

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err = Open(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(context.Background(), f, CheckOptions{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	mnt := ""
	if kernelUsable(t) {
		mnt = kernelMount(t, path, "")
	}
	compareLarge(t, img, "flat", mnt, noHole)
}

func TestLargeChunkedFileInBlob(t *testing.T) {
	src := largeTree(t)
	blob := filepath.Join(t.TempDir(), "blob")
	path := mkfs(t, src, "--chunksize=4096", "--blobdev="+blob)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	im := &image{path: path, data: data, blobPath: blob}
	img := im.open(t)
	ino, err := img.inode(nidOf(t, img, "chunky"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := img.chunkLayout(ino)
	if err != nil || c.count != 2 || !c.indexes {
		t.Fatalf("mkfs chunk layout %+v, %v", c, err)
	}
	bfi, err := os.Stat(blob)
	if err != nil {
		t.Fatal(err)
	}
	blobBlocks := uint32(bfi.Size() / 4096)
	// 4 GiB chunks (blkbits 20): chunk 0 is a hole, chunk 1 (the last
	// 1 GiB + 123 bytes) lives at the end of the blob.
	patchInode(t, img, data, ino.nid, func(in *disk.Inode) {
		in.Size = largeSize
		in.U = disk.ChunkFormatIndexes | 20
	})
	hole := disk.ChunkIndex{BlkAddr: disk.NullAddr}
	hole.Encode(data[c.base:])
	ci := disk.ChunkIndex{DeviceID: 1, BlkAddr: blobBlocks}
	ci.Encode(data[c.base+8:])
	fixChecksum(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(blob, int64(blobBlocks)*4096+(largeSize-4<<30+4095)&^4095); err != nil {
		t.Fatal(err)
	}
	inHole := func(off int64) bool { return off < 4<<30 }
	markers(t, blob, int64(blobBlocks)*4096-4<<30, inHole)

	im.data = data
	img = im.open(t)
	rep, err := Check(context.Background(), bytes.NewReader(data), CheckOptions{Blobs: im.resolver(t)})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if rep.HoleChunks != 1 {
		t.Errorf("report %+v", rep)
	}
	chunks, err := img.Chunks("chunky")
	if err != nil || len(chunks) != 2 || !chunks[0].Hole || chunks[1].Offset != 4<<30 || chunks[1].Length != largeSize-4<<30 || chunks[1].Device != 1 || chunks[1].BlkAddr != blobBlocks {
		t.Fatalf("Chunks = %+v, %v", chunks, err)
	}
	mnt := ""
	if kernelUsable(t) {
		mnt = kernelMount(t, path, blob)
	}
	compareLarge(t, img, "chunky", mnt, inHole)
}

// kernelUsable reports whether kernel comparisons can run, logging why not.
func kernelUsable(t *testing.T) bool {
	ok := true
	t.Run("kernel", func(t *testing.T) {
		defer func() { ok = !t.Skipped() }()
		requireKernelErofs(t)
	})
	return ok
}
