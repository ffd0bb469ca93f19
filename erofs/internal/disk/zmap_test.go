package disk

import (
	"bytes"
	"errors"
	"testing"
)

func TestMapHeaderRoundTrip(t *testing.T) {
	h := MapHeader{Advise: AdviseBigPcluster1 | AdviseInlinePcluster, AlgorithmType: ComprLZMA<<4 | ComprLZ4, ClusterBits: 1}
	h.SetIdataSize(1234)
	b := make([]byte, MapHeaderSize)
	h.Encode(b)
	want := []byte{0, 0, 0xD2, 0x04, 0x0A, 0, 0x10, 1}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded % x, want % x", b, want)
	}
	got, err := DecodeMapHeader(b)
	if err != nil || got != h {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	if got.IdataSize() != 1234 || got.HeadAlgorithm(1) != ComprLZ4 || got.HeadAlgorithm(2) != ComprLZMA || got.LclusterBits(12) != 13 {
		t.Fatalf("accessors: idata %d head1 %d head2 %d bits %d", got.IdataSize(), got.HeadAlgorithm(1), got.HeadAlgorithm(2), got.LclusterBits(12))
	}
	if _, ok := got.WholeFileFragment(); ok {
		t.Fatal("not a whole-file fragment")
	}
	if _, err := DecodeMapHeader(b[:7]); !errors.Is(err, ErrShort) {
		t.Fatalf("short header: %v", err)
	}
}

func TestWholeFileFragmentHeader(t *testing.T) {
	for _, off := range []uint64{0, 1, 0x123456789ABCDEF, 1<<63 - 1} {
		h := WholeFileFragmentHeader(off)
		b := make([]byte, MapHeaderSize)
		h.Encode(b)
		if v := le.Uint64(b); v != off|1<<63 {
			t.Fatalf("off %#x: header as u64 %#x", off, v)
		}
		d, _ := DecodeMapHeader(b)
		if got, ok := d.WholeFileFragment(); !ok || got != off {
			t.Fatalf("off %#x: decoded %#x, %v", off, got, ok)
		}
	}
}

func TestLclusterIndexRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		d    LclusterIndex
		want []byte
	}{
		{"head1", LclusterIndex{Type: LclusterTypeHead1, ClusterOfs: 0x123, BlkAddr: 0xAABBCCDD}, []byte{1, 0, 0x23, 1, 0xDD, 0xCC, 0xBB, 0xAA}},
		{"plain partial", LclusterIndex{Type: LclusterTypePlain, PartialRef: true, ClusterOfs: 7, BlkAddr: 9}, []byte{0, 0x80, 7, 0, 9, 0, 0, 0}},
		{"head2", LclusterIndex{Type: LclusterTypeHead2, BlkAddr: 1}, []byte{3, 0, 0, 0, 1, 0, 0, 0}},
		{"nonhead cblkcnt", LclusterIndex{Type: LclusterTypeNonhead, ClusterOfs: 4096, Delta: [2]uint16{LID0CBlkCnt | 3, 5}}, []byte{2, 0, 0, 0x10, 3, 0x08, 5, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, LclusterIndexSize)
			tt.d.Encode(b)
			if !bytes.Equal(b, tt.want) {
				t.Fatalf("encoded % x, want % x", b, tt.want)
			}
			got, err := DecodeLclusterIndex(b)
			if err != nil || got != tt.d {
				t.Fatalf("decoded %+v, %v", got, err)
			}
		})
	}
	if _, err := DecodeLclusterIndex(make([]byte, 7)); !errors.Is(err, ErrShort) {
		t.Fatalf("short index: %v", err)
	}
}

func TestCompactPackRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		p    CompactPack
		bits uint
	}{
		{"4B", CompactPack4B, 12},
		{"4B 16K", CompactPack4B, 14},
		{"2B", CompactPack2B, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := make([]CompactEntry, tt.p.VCnt)
			for i := range entries {
				entries[i] = CompactEntry{Type: uint8(i % 4), Lo: uint16((i*2654435761 + 17) % (1 << tt.bits))}
			}
			b := make([]byte, tt.p.Size)
			if err := tt.p.Encode(b, tt.bits, entries, 0xCAFEBABE); err != nil {
				t.Fatal(err)
			}
			for i, want := range entries {
				got, err := tt.p.Entry(b, tt.bits, i)
				if err != nil || got != want {
					t.Fatalf("entry %d: %+v, %v; want %+v", i, got, err, want)
				}
			}
			if base, _ := tt.p.Base(b); base != 0xCAFEBABE {
				t.Fatalf("base %#x", base)
			}
			if _, err := tt.p.Entry(b, tt.bits, tt.p.VCnt); !errors.Is(err, ErrBadIndex) {
				t.Fatalf("entry past the pack: %v", err)
			}
			bad := append([]CompactEntry(nil), entries...)
			bad[0].Lo = 1 << tt.bits
			if err := tt.p.Encode(b, tt.bits, bad, 0); !errors.Is(err, ErrBadIndex) {
				t.Fatalf("lo too wide: %v", err)
			}
		})
	}
	// A known 4B pack: HEAD1 clusterofs 0x10, then NONHEAD delta 1.
	b := []byte{0x10, 0x10, 0x01, 0x20, 5, 0, 0, 0}
	e0, _ := CompactPack4B.Entry(b, 12, 0)
	e1, _ := CompactPack4B.Entry(b, 12, 1)
	if e0 != (CompactEntry{LclusterTypeHead1, 0x10}) || e1 != (CompactEntry{LclusterTypeNonhead, 1}) {
		t.Fatalf("known pack: %+v %+v", e0, e1)
	}
	if _, err := CompactPack2B.Entry(make([]byte, 32), 13, 0); !errors.Is(err, ErrBadIndex) {
		t.Fatalf("2B pack needs 4 KiB lclusters: %v", err)
	}
}

func TestCompactLayout(t *testing.T) {
	// base 0x48 (72): 72%32 = 8, so 6 entries in 4B packs reach 96.
	l := NewCompactLayout(72, 100, true)
	if l.Initial4B != 6 || l.Compact2B != 80 {
		t.Fatalf("layout %+v", l)
	}
	tests := []struct {
		lcn     uint64
		p       CompactPack
		packPos uint64
		i       int
	}{
		{0, CompactPack4B, 72, 0},
		{1, CompactPack4B, 72, 1},
		{5, CompactPack4B, 88, 1},
		{6, CompactPack2B, 96, 0},
		{21, CompactPack2B, 96, 15},
		{22, CompactPack2B, 128, 0},
		{86, CompactPack4B, 256, 0},
		{99, CompactPack4B, 304, 1},
	}
	for _, tt := range tests {
		p, pos, i := l.Locate(tt.lcn)
		if p != tt.p || pos != tt.packPos || i != tt.i {
			t.Errorf("lcn %d: %d-byte pack at %d entry %d; want %d-byte at %d entry %d", tt.lcn, p.Size, pos, i, tt.p.Size, tt.packPos, tt.i)
		}
	}
	if end := l.End(); end != 312 {
		t.Fatalf("end %d", end)
	}
	if l := NewCompactLayout(64, 3, true); l.Initial4B != 0 || l.Compact2B != 0 {
		t.Fatalf("aligned base, few lclusters: %+v", l)
	}
}

func TestComprCfgsRoundTrip(t *testing.T) {
	lz4 := LZ4Cfgs{MaxDistance: 0x4000, MaxPclusterBlks: 16}
	lzma := LZMACfgs{DictSize: 8 << 20}
	zstd := ZstdCfgs{WindowLog: 7}
	recs := []ComprCfgRecord{
		{Alg: ComprLZ4, Data: make([]byte, LZ4CfgsSize)},
		{Alg: ComprLZMA, Data: make([]byte, LZMACfgsSize)},
		{Alg: ComprZstd, Data: make([]byte, ZstdCfgsSize)},
	}
	lz4.Encode(recs[0].Data)
	lzma.Encode(recs[1].Data)
	zstd.Encode(recs[2].Data)
	n := ComprCfgsSize(recs)
	if n != 16+16+8-0 { // 2+14, 2+14, 2+6
		t.Fatalf("size %d", n)
	}
	b := bytes.Repeat([]byte{0xEE}, n)
	if err := EncodeComprCfgs(b, recs); err != nil {
		t.Fatal(err)
	}
	got, used, err := DecodeComprCfgs(b, 1<<ComprLZ4|1<<ComprLZMA|1<<ComprZstd)
	if err != nil || used != n || len(got) != 3 {
		t.Fatalf("decode: %d records, %d bytes, %v", len(got), used, err)
	}
	if c, _ := DecodeLZ4Cfgs(got[0].Data); c != lz4 {
		t.Fatalf("lz4 %+v", c)
	}
	if c, _ := DecodeLZMACfgs(got[1].Data); c != lzma {
		t.Fatalf("lzma %+v", c)
	}
	if c, _ := DecodeZstdCfgs(got[2].Data); c != zstd || got[2].Alg != ComprZstd {
		t.Fatalf("zstd %+v", c)
	}
	d := DeflateCfgs{WindowBits: 15}
	db := make([]byte, DeflateCfgsSize)
	d.Encode(db)
	if c, _ := DecodeDeflateCfgs(db); c != d {
		t.Fatalf("deflate %+v", c)
	}
	if _, _, err := DecodeComprCfgs(b[:n-1], 1<<ComprLZ4|1<<ComprLZMA|1<<ComprZstd); !errors.Is(err, ErrShort) {
		t.Fatalf("truncated: %v", err)
	}
	if err := EncodeComprCfgs(b, []ComprCfgRecord{recs[1], recs[0]}); !errors.Is(err, ErrBadIndex) {
		t.Fatalf("out of order: %v", err)
	}
}
