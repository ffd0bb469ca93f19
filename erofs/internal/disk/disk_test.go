package disk

import (
	"bytes"
	"errors"
	"testing"
)

func TestSuperblockRoundTrip(t *testing.T) {
	s := Superblock{
		Checksum: 0x11223344, FeatureCompat: CompatSuperChecksum | CompatMtime, BlkSzBits: 12,
		RootNid: 36, Inos: 99, BuildTime: 1700000000, BuildTimeNsec: 12345, Blocks: 77,
		MetaBlkAddr: 3, XattrBlkAddr: 2, FeatureIncompat: IncompatChunkedFile | IncompatDeviceTable,
		ExtraDevices: 2, DevtSlotOff: 9,
	}
	copy(s.UUID[:], "0123456789abcdef")
	copy(s.VolumeName[:], "vol")
	b := make([]byte, SuperSize)
	s.Encode(b)
	got, err := DecodeSuperblock(b)
	if err != nil {
		t.Fatal(err)
	}
	s.Magic = SuperMagic
	if got != s {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	if _, err := DecodeSuperblock(b[:SuperSize-1]); !errors.Is(err, ErrShort) {
		t.Fatalf("short superblock: %v", err)
	}
	b[0] ^= 1
	if _, err := DecodeSuperblock(b); !errors.Is(err, ErrBadMagic) {
		t.Fatalf("bad magic: %v", err)
	}
}

func TestSuperChecksumMatchesKernelConvention(t *testing.T) {
	// The kernel's crc32c(~0, data) without final inversion over
	// "123456789" is 0x1CF96D7C; SuperChecksum treats bytes 4..7 as zero,
	// so put the test vector around a zeroed checksum field.
	block := make([]byte, SuperOffset+9+4)
	copy(block[SuperOffset:], "1234")
	copy(block[SuperOffset+8:], "56789")
	want := SuperChecksum(block)
	copy(block[SuperOffset+4:], "\xff\xff\xff\xff") // must be ignored
	if got := SuperChecksum(block); got != want {
		t.Fatalf("checksum depends on checksum field: %#x vs %#x", got, want)
	}
	plain := []byte("123456789")
	if got := ^crc32cRaw(plain); got != 0x1CF96D7C {
		t.Fatalf("crc convention: got %#x", got)
	}
}

func TestInodeRoundTrip(t *testing.T) {
	tests := []Inode{
		{Format: LayoutFlatInline << 1, XattrICount: 3, Mode: 0o100644, Nlink: 2, Size: 5000, U: 7, Ino: 9, UID: 1000, GID: 65535, Mtime: 4},
		{Format: 1 | LayoutChunkBased<<1, Mode: 0o100755, Nlink: 70000, Size: 5 << 30, U: ChunkFormatIndexes | 8, Ino: 1, UID: 100000, GID: 200000, Mtime: 1 << 40, MtimeNsec: 999999999, Reserved06: 0},
	}
	for _, in := range tests {
		b := make([]byte, in.OnDiskSize())
		in.Encode(b)
		got, err := DecodeInode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !in.Extended() {
			in.Reserved06 = uint16(in.Nlink)
		}
		if got != in {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, in)
		}
		if _, err := DecodeInode(b[:len(b)-1]); !errors.Is(err, ErrShort) {
			t.Fatalf("short inode %d: %v", len(b)-1, err)
		}
	}
}

func TestSmallStructs(t *testing.T) {
	d := Dirent{Nid: 1 << 40, NameOff: 36, FileType: FTSymlink}
	b := make([]byte, DirentSize)
	d.Encode(b)
	if got, _ := DecodeDirent(b); got != d {
		t.Fatalf("dirent %+v", got)
	}
	c := ChunkIndex{DeviceID: 3, BlkAddr: NullAddr}
	b = make([]byte, ChunkIndexSize)
	c.Encode(b)
	if got, _ := DecodeChunkIndex(b); got != c {
		t.Fatalf("chunk index %+v", got)
	}
	var s DeviceSlot
	copy(s.Tag[:], bytes.Repeat([]byte("a"), 64))
	s.Blocks, s.MappedBlkAddr = 10, 0
	b = make([]byte, DeviceSlotSize)
	s.Encode(b)
	got, _ := DecodeDeviceSlot(b)
	if got != s || len(got.TagString()) != 64 {
		t.Fatalf("device slot %+v", got)
	}
	e := XattrEntry{NameLen: 5, NameIndex: XattrIndexUser, ValueSize: 3}
	if e.Size() != 12 {
		t.Fatalf("xattr entry size %d", e.Size())
	}
	if XattrIBodySize(XattrICount(24)) != 24 || XattrICount(0) != 0 {
		t.Fatal("xattr icount conversion")
	}
	ce := ChunkEntry{DeviceID: 2, BlkAddr: 5, Length: 4097}
	ce.Digest[0] = 0xAB
	b = make([]byte, ChunkTableEntrySize)
	ce.Encode(b)
	if got, _ := DecodeChunkEntry(b); got != ce {
		t.Fatalf("chunk entry %+v", got)
	}
	for _, n := range []int{0, 1, 15} {
		if _, err := DecodeChunkEntry(make([]byte, n)); !errors.Is(err, ErrShort) {
			t.Fatalf("short chunk entry %d: %v", n, err)
		}
	}
}

func TestRdev(t *testing.T) {
	for _, d := range [][2]uint32{{0, 0}, {1, 3}, {8, 1}, {259, 70000}, {4095, 0xfffff}} {
		ma, mi := DecodeRdev(EncodeRdev(d[0], d[1]))
		if ma != d[0] || mi != d[1] {
			t.Fatalf("rdev %v -> %d:%d", d, ma, mi)
		}
	}
	if EncodeRdev(1, 3) != 0x103 {
		t.Fatalf("rdev 1:3 = %#x", EncodeRdev(1, 3))
	}
}

func TestSuperChecksumSmallBlocks(t *testing.T) {
	// With 512-byte blocks the checksum covers the 512 bytes starting at
	// the superblock, and callers pass exactly those.
	region := make([]byte, 512)
	copy(region, "\xe2\xe1\xf5\xe0")
	region[100] = 7
	want := ^crc32cRaw(region) // checksum field (bytes 4..7) is already zero
	if got := SuperChecksum(region); got != want {
		t.Fatalf("512-byte region: got %#x, want %#x", got, want)
	}
	region[4] = 0xff
	if got := SuperChecksum(region); got != want {
		t.Fatalf("checksum field not ignored: %#x", got)
	}
	// A whole 4 KiB block 0 covers bytes 1024..4095.
	block := make([]byte, 4096)
	copy(block[SuperOffset:], region)
	block[0] = 0xAA // before the superblock: ignored
	if got, want := SuperChecksum(block), ^crc32cRaw(append(append([]byte{}, block[SuperOffset:SuperOffset+4]...), append(make([]byte, 4), block[SuperOffset+8:]...)...)); got != want {
		t.Fatalf("4 KiB block: got %#x, want %#x", got, want)
	}
}
