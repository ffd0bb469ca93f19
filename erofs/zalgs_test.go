package erofs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// cfgRecord is the superblock configuration record an encoder needs.
func cfgRecord(t testing.TB, enc zcodec.Encoder) disk.ComprCfgRecord {
	p := enc.Params()
	switch enc.Algorithm() {
	case zcodec.LZ4:
		c := disk.LZ4Cfgs{MaxDistance: p.LZ4MaxDistance, MaxPclusterBlks: 1}
		r := disk.ComprCfgRecord{Alg: disk.ComprLZ4, Data: make([]byte, disk.LZ4CfgsSize)}
		c.Encode(r.Data)
		return r
	case zcodec.LZMA:
		c := disk.LZMACfgs{DictSize: p.LZMADictSize}
		r := disk.ComprCfgRecord{Alg: disk.ComprLZMA, Data: make([]byte, disk.LZMACfgsSize)}
		c.Encode(r.Data)
		return r
	case zcodec.Deflate:
		c := disk.DeflateCfgs{WindowBits: p.DeflateWindowBits}
		r := disk.ComprCfgRecord{Alg: disk.ComprDeflate, Data: make([]byte, disk.DeflateCfgsSize)}
		c.Encode(r.Data)
		return r
	case zcodec.Zstd:
		c := disk.ZstdCfgs{WindowLog: p.ZstdWindowLog - disk.ZstdWindowLogMin}
		r := disk.ComprCfgRecord{Alg: disk.ComprZstd, Data: make([]byte, disk.ZstdCfgsSize)}
		c.Encode(r.Data)
		return r
	}
	t.Fatalf("no record for %v", enc.Algorithm())
	return disk.ComprCfgRecord{}
}

// addEncodedFile writes content as a FULL-indexed file of one-block
// pclusters, extents alternating between the HEAD1 and HEAD2 encoders.
func (s *synthImage) addEncodedFile(t testing.TB, name string, content []byte, head1, head2 zcodec.Encoder) {
	t.Helper()
	_, end := s.file(name, disk.LayoutCompressedFull, uint64(len(content)))
	putHeader(s.data, end, disk.MapHeader{AlgorithmType: uint8(head2.Algorithm())<<4 | uint8(head1.Algorithm())})
	type ext struct {
		la, le int
		typ    uint8
		blk    uint32
	}
	var exts []ext
	dst := make([]byte, synthBlk)
	for la, k := 0, 0; la < len(content); k++ {
		enc, typ := head1, uint8(disk.LclusterTypeHead1)
		if k%2 == 1 {
			enc, typ = head2, disk.LclusterTypeHead2
		}
		consumed, n, err := enc.EncodeDestSize(dst, content[la:])
		if err != nil {
			t.Fatal(err)
		}
		le := la + consumed
		if le < len(content) && le>>12 == la>>12 {
			t.Fatalf("%s: an extent of %d bytes at %d ends in its own lcluster", name, consumed, la)
		}
		exts = append(exts, ext{la, le, typ, s.pcluster(dst[:n], 1)})
		la = le
	}
	total := uint64((len(content) + synthBlk - 1) / synthBlk)
	for i, e := range exts {
		head := uint64(e.la) >> 12
		putFull(s.data, end, head, disk.LclusterIndex{Type: e.typ, ClusterOfs: uint16(e.la & (synthBlk - 1)), BlkAddr: e.blk})
		next := total
		if i+1 < len(exts) {
			next = uint64(exts[i+1].la) >> 12
		}
		for lcn := head + 1; lcn < next; lcn++ {
			putFull(s.data, end, lcn, disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{uint16(lcn - head), uint16(next - lcn)}})
		}
	}
}

// TestAllAlgorithms builds files whose extents use LZ4, MicroLZMA,
// DEFLATE and Zstandard (two per file, as HEAD1 and HEAD2), encoded by
// internal/zcodec, and reads them back; the kernel, where it can mount
// files, must read the same bytes.
func TestAllAlgorithms(t *testing.T) {
	encs := map[zcodec.Algorithm]zcodec.Encoder{}
	for _, alg := range []zcodec.Algorithm{zcodec.LZ4, zcodec.LZMA, zcodec.Deflate, zcodec.Zstd} {
		enc, err := zcodec.NewEncoderFor(alg, alg == zcodec.LZ4, -1, 1<<20)
		if err != nil {
			t.Fatalf("%v encoder: %v", alg, err)
		}
		encs[alg] = enc
	}
	s := newSynthImage()
	for _, alg := range []zcodec.Algorithm{zcodec.LZ4, zcodec.LZMA, zcodec.Deflate, zcodec.Zstd} {
		s.cfgs = append(s.cfgs, cfgRecord(t, encs[alg]))
	}
	src := t.TempDir()
	makeCompressibleTree(t, src)
	text, err := os.ReadFile(filepath.Join(src, "big/text_3m"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{
		"k_lzma_deflate": text[:300000],
		"l_zstd_lz4":     text[1000000:1250000],
	}
	s.addEncodedFile(t, "k_lzma_deflate", want["k_lzma_deflate"], encs[zcodec.LZMA], encs[zcodec.Deflate])
	s.addEncodedFile(t, "l_zstd_lz4", want["l_zstd_lz4"], encs[zcodec.Zstd], encs[zcodec.LZ4])
	data := s.finish(t, disk.IncompatZeroPadding|disk.IncompatComprCfgs|disk.IncompatComprHead2)

	img, err := Open(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if got := img.Info().CompressionAlgorithms(); len(got) != 4 {
		t.Errorf("algorithms %v", got)
	}
	for name, w := range want {
		got, err := img.ReadFile(name)
		if err != nil || !bytes.Equal(got, w) {
			t.Errorf("%s: %d bytes, %v (first difference at %d)", name, len(got), err, firstDiff(got, w))
		}
		l, err := img.Compression(name)
		if err != nil || len(l.Algorithms) != 2 {
			t.Errorf("%s layout %+v, %v", name, l, err)
		}
	}
	if _, err := Check(context.Background(), bytes.NewReader(data), CheckOptions{VerifyData: true}); err != nil {
		t.Errorf("Check: %v", err)
	}

	t.Run("kernel", func(t *testing.T) {
		requireKernelErofs(t)
		kernelReads(t, data, want)
	})
}

// kernelReads mounts data and compares the files the kernel reads.
func kernelReads(t *testing.T, data []byte, want map[string][]byte) {
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := kernelMount(t, path, "")
	for name, w := range want {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, w) {
			t.Errorf("kernel: %s: %d bytes, %v (first difference at %d)", name, len(got), err, firstDiff(got, w))
		}
	}
}
