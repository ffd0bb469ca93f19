package erofs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// tableImage is a --blobdev image with a chunk digest table appended and
// its device tag set to the blob's sha256, as erofsd's builder makes them.
type tableImage struct {
	data     []byte
	tableOff int64
	entries  []disk.ChunkEntry
	blobDir  string
	blobPath string // blobDir/tag
	src      string
}

func buildTableImage(t *testing.T) *tableImage {
	t.Helper()
	src, im := buildVariant(t, variants[3], treeOpts{special: true}) // blobdev
	data, tag, entries := appendChunkTable(t, im.data, im.blobPath)
	blob, err := os.ReadFile(im.blobPath)
	if err != nil {
		t.Fatal(err)
	}
	ti := &tableImage{src: src, data: data, entries: entries, tableOff: int64(len(im.data))}
	ti.blobDir = t.TempDir()
	ti.blobPath = filepath.Join(ti.blobDir, tag)
	if err := os.WriteFile(ti.blobPath, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	return ti
}

// appendChunkTable turns a mkfs.erofs --blobdev image into one like
// erofsd's builder makes: it appends a chunk digest table for every blob
// chunk the files use, and sets device 1's tag to the blob's sha256 and
// its block count. It returns the new image, the tag and the entries.
func appendChunkTable(t testing.TB, data []byte, blobPath string) ([]byte, string, []disk.ChunkEntry) {
	t.Helper()
	blob, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(bytes.NewReader(data), WithBlobs(BlobResolverFunc(func(int, string) (io.ReaderAt, error) {
		return bytes.NewReader(blob), nil
	})))
	if err != nil {
		t.Fatal(err)
	}
	lengths := map[uint32]uint32{}
	// Every chunk, and every pcluster of a compressed file, in the blob.
	err = img.FileChunks(context.Background(), 0, func(_ uint64, chunks []FileChunk) error {
		for _, c := range chunks {
			n := c.Length
			if c.Encoded > 0 {
				n = c.Encoded
			}
			if !c.Hole && c.Device == 1 {
				lengths[c.BlkAddr] = max(lengths[c.BlkAddr], uint32(n))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var entries []disk.ChunkEntry
	for blk, n := range lengths {
		e := disk.ChunkEntry{DeviceID: 1, BlkAddr: blk, Length: n}
		e.Digest = sha256.Sum256(blob[int64(blk)*4096 : int64(blk)*4096+int64(n)])
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b disk.ChunkEntry) int {
		if a.Less(&b) {
			return -1
		}
		return 1
	})
	tableOff := int64(img.sb.Blocks) * 4096
	out := slices.Clone(data[:tableOff])
	out = append(out, encodeTable(entries, uint64(len(entries)))...)

	sum := sha256.Sum256(blob)
	tag := hex.EncodeToString(sum[:])
	slotOff := int64(img.sb.DevtSlotOff) * disk.DeviceSlotSize
	slot, _ := disk.DecodeDeviceSlot(out[slotOff:])
	copy(slot.Tag[:], tag)
	slot.Blocks = uint32(len(blob) / 4096)
	slot.Encode(out[slotOff:])
	fixChecksum(out)
	return out, tag, entries
}

// encodeTable encodes a chunk table with the given header count.
func encodeTable(entries []disk.ChunkEntry, count uint64) []byte {
	out := disk.EncodeSection(disk.ChunkTableMagic, disk.ChunkTableVersion, disk.ChunkTableEntrySize, len(entries),
		func(i int, b []byte) { entries[i].Encode(b) })
	binary.LittleEndian.PutUint64(out[0x10:], count) // the header's entry count, true or not
	return out
}

func (ti *tableImage) withTable(entries []disk.ChunkEntry) []byte {
	data := slices.Clone(ti.data[:ti.tableOff])
	return append(data, encodeTable(slices.Clone(entries), uint64(len(entries)))...)
}

func TestChunkTable(t *testing.T) {
	ti := buildTableImage(t)
	img, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(ti.blobDir)))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	table, err := img.ChunkTable()
	if err != nil {
		t.Fatal(err)
	}
	if len(table) != len(ti.entries) || len(table) < 600 {
		t.Fatalf("%d entries, want %d", len(table), len(ti.entries))
	}
	for i, e := range ti.entries {
		if table[i] != (ChunkDigest{Device: e.DeviceID, BlkAddr: e.BlkAddr, Length: e.Length, Digest: e.Digest}) {
			t.Fatalf("entry %d: %+v", i, table[i])
		}
	}
	if devs := img.Devices(); len(devs) != 1 || devs[0].Tag != filepath.Base(ti.blobPath) || devs[0].ID != 1 {
		t.Fatalf("devices %+v", devs)
	}
	// Reading through DirBlobs.
	got, err := img.ReadFile("size_100000")
	if want, _ := os.ReadFile(filepath.Join(ti.src, "size_100000")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadFile via DirBlobs: %v", err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := img.ReadFile("size_100000"); !errors_Is(err, fs.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}

	rep, err := Check(context.Background(), bytes.NewReader(ti.data), CheckOptions{Blobs: DirBlobs(ti.blobDir), VerifyData: true})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if rep.ChunksVerified != len(table) || rep.Chunks < len(table) {
		t.Fatalf("report %+v, %d table entries", rep, len(table))
	}

	t.Run("kernel", func(t *testing.T) {
		requireKernelErofs(t)
		p := filepath.Join(t.TempDir(), "image")
		if err := os.WriteFile(p, ti.data, 0o644); err != nil {
			t.Fatal(err)
		}
		mnt := kernelMount(t, p, ti.blobPath)
		img, err := Open(bytes.NewReader(ti.data), WithBlobs(DirBlobs(ti.blobDir)))
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		compareTree(t, img, mnt, variants[3], true)
	})
}

func TestChunkTableCorruption(t *testing.T) {
	ti := buildTableImage(t)
	n := uint64(len(ti.entries))
	mutate := func(f func(e []disk.ChunkEntry) []disk.ChunkEntry) []byte {
		return ti.withTable(f(slices.Clone(ti.entries)))
	}
	withCount := func(b []byte, count uint64) []byte {
		binary.LittleEndian.PutUint64(b[ti.tableOff+0x10:], count)
		return b
	}
	tests := []struct {
		name  string
		data  []byte
		table string // error substring from ChunkTable, "" = table fine
		check string // error substring from Check with VerifyData
	}{
		{name: "entry digest flipped", data: func() []byte {
			b := slices.Clone(ti.data)
			b[ti.tableOff+disk.ChunkTableHeaderSize+0x20] ^= 1
			return b
		}(), table: "entries sha256"},
		{name: "huge count", data: withCount(slices.Clone(ti.data), 1<<60), table: "do not fit"},
		{name: "count one more", data: withCount(slices.Clone(ti.data), n+1), table: "do not fit"},
		{name: "missing entry", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry { return e[:len(e)-1] }), check: "no chunk table entry"},
		{name: "short entry", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry { e[3].Length = 1; return e }), check: "covers 1 bytes"},
		{name: "wrong digest", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry { e[5].Digest[0] ^= 1; return e }), check: "chunk table says"},
		{name: "unsorted", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry { e[1], e[2] = e[2], e[1]; return e }), table: "not sorted"},
		{name: "overlap", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry {
			e[1].Length = 4096*(e[2].BlkAddr-e[1].BlkAddr) + 1
			return e
		}), table: "overlaps"},
		{name: "bad device", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry { e[len(e)-1].DeviceID = 2; return e }), table: "not in 1..1"},
		{name: "zero length", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry { e[0].Length = 0; return e }), table: "zero length"},
		{name: "beyond device", data: mutate(func(e []disk.ChunkEntry) []disk.ChunkEntry { e[len(e)-1].BlkAddr = 1 << 30; return e }), table: "beyond the device"},
		{name: "bad version", data: func() []byte {
			b := slices.Clone(ti.data)
			b[ti.tableOff+8] = 2
			return b
		}(), table: "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Open(bytes.NewReader(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			_, terr := img.ChunkTable()
			if tt.table == "" && terr != nil || tt.table != "" && (terr == nil || !strings.Contains(terr.Error(), tt.table) || !isReported(terr)) {
				t.Errorf("ChunkTable: %v, want %q", terr, tt.table)
			}
			want := tt.check
			if want == "" {
				want = tt.table
			}
			_, err = Check(context.Background(), bytes.NewReader(tt.data), CheckOptions{Blobs: DirBlobs(ti.blobDir), VerifyData: true})
			if err == nil || !strings.Contains(err.Error(), want) || !isReported(err) {
				t.Errorf("Check: %v, want %q", err, want)
			}
		})
	}

	t.Run("blob bytes changed", func(t *testing.T) {
		dir := t.TempDir()
		blob, _ := os.ReadFile(ti.blobPath)
		blob[int64(ti.entries[7].BlkAddr)*4096] ^= 0x80 // inside the chunk's Length bytes
		os.WriteFile(filepath.Join(dir, filepath.Base(ti.blobPath)), blob, 0o644)
		if _, err := Check(context.Background(), bytes.NewReader(ti.data), CheckOptions{Blobs: DirBlobs(dir)}); err != nil {
			t.Errorf("Check without VerifyData: %v", err)
		}
		_, err := Check(context.Background(), bytes.NewReader(ti.data), CheckOptions{Blobs: DirBlobs(dir), VerifyData: true})
		if !errors_Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "sha256") {
			t.Errorf("Check: %v", err)
		}
	})
	t.Run("blob truncated", func(t *testing.T) {
		dir := t.TempDir()
		blob, _ := os.ReadFile(ti.blobPath)
		os.WriteFile(filepath.Join(dir, filepath.Base(ti.blobPath)), blob[:len(blob)/2], 0o644)
		_, err := Check(context.Background(), bytes.NewReader(ti.data), CheckOptions{Blobs: DirBlobs(dir)})
		if !errors_Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "beyond blob end") {
			t.Errorf("Check: %v", err)
		}
	})
	t.Run("no table", func(t *testing.T) {
		img, err := Open(bytes.NewReader(ti.data[:ti.tableOff]))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := img.ChunkTable(); !errors_Is(err, ErrNoChunkTable) {
			t.Errorf("ChunkTable: %v", err)
		}
	})
}

func TestDirBlobs(t *testing.T) {
	dir := t.TempDir()
	tag := strings.Repeat("ab", 32)
	if err := os.WriteFile(filepath.Join(dir, tag), []byte("blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "passwd"), []byte("x"), 0o644)
	r := DirBlobs(dir)
	for _, bad := range []string{"", "passwd", "../" + tag[3:], strings.ToUpper(tag), tag[:63], tag + "0", "/etc/passwd", strings.Repeat("g", 64)} {
		if _, err := r.OpenBlob(1, bad); err == nil {
			t.Errorf("tag %q accepted", bad)
		}
	}
	a, err := r.OpenBlob(1, tag)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.OpenBlob(2, tag)
	if err != nil || a != b {
		t.Fatalf("not cached: %v", err)
	}
	if err := r.(interface{ Close() error }).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("file still open after Close")
	}
	if c, err := r.OpenBlob(1, tag); err != nil || c == a {
		t.Fatalf("reopen after Close: %v", err)
	}
	r.(interface{ Close() error }).Close()
}
