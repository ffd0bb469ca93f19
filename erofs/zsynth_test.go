package erofs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// mkfs.erofs 1.5 writes neither FULL indexes with big pclusters, nor
// HEAD2, interlaced plain pclusters, fragments or partial references.
// These tests build such images by hand, with the encoders of
// internal/disk (the ones erofsd's builder uses), and read them back.

const (
	synthBlobBase = 1 << 20 // unified block address of the blob's block 0
	synthDevtSlot = 10      // device table at byte 1280, after the config
	synthBlk      = 4096
	synthSlot     = 64 // nids per file: 2 KiB
	synthDirBlk   = 12
)

// lz4Literals is an LZ4 block holding b as one literal run: valid, if
// larger than b.
func lz4Literals(b []byte) []byte {
	var out []byte
	if n := len(b); n < 15 {
		out = append(out, byte(n<<4))
	} else {
		out = append(out, 0xF0)
		rest := n - 15
		for ; rest >= 255; rest -= 255 {
			out = append(out, 255)
		}
		out = append(out, byte(rest))
	}
	return append(out, b...)
}

// lz4Run is an LZ4 block for n (>= 18) copies of c: one literal, a
// match at offset 1, and the five literals a block must end with.
func lz4Run(c byte, n int) []byte {
	ml := n - 6 // bytes the match copies
	out := []byte{1<<4 | 15, c, 1, 0}
	rest := ml - 4 - 15
	for ; rest >= 255; rest -= 255 {
		out = append(out, 255)
	}
	out = append(out, byte(rest), 5<<4)
	return append(out, c, c, c, c, c)
}

// synthImage assembles an image: block 0 superblock and LZ4 config,
// blocks 1..synthDirBlk-1 inodes (root nid 0, then a 2 KiB slot per file
// for its inode, index and inline tail), block synthDirBlk the root
// directory, data after it.
type synthImage struct {
	data    []byte
	files   []synthFile
	next    uint32                // next free data block
	packed  uint64                // packed inode nid (0: none)
	blob    []byte                // extra device 1
	cfgs    []disk.ComprCfgRecord // nil: LZ4 only
	inodes  int
	fileNid uint64
}

type synthFile struct {
	name  string
	nid   uint64
	ftype uint8
}

// synthDirent is one entry of a hand-built directory.
type synthDirent struct {
	name  string
	nid   uint64
	ftype uint8
}

// encodeDir encodes one directory block's entries (in name order).
func encodeDir(ents []synthDirent) []byte {
	var names []byte
	b := make([]byte, disk.DirentSize*len(ents))
	for i, e := range ents {
		d := disk.Dirent{Nid: e.nid, NameOff: uint16(len(b) + len(names)), FileType: e.ftype}
		d.Encode(b[i*disk.DirentSize:])
		names = append(names, e.name...)
	}
	return append(b, names...)
}

func newSynthImage() *synthImage {
	return &synthImage{data: make([]byte, (synthDirBlk+1)*synthBlk), next: synthDirBlk + 1, fileNid: synthSlot}
}

// block returns data block n, growing the image.
func (s *synthImage) block(n uint32) []byte {
	for uint32(len(s.data)/synthBlk) <= n {
		s.data = append(s.data, make([]byte, synthBlk)...)
	}
	return s.data[n*synthBlk : (n+1)*synthBlk]
}

// alloc reserves n blocks.
func (s *synthImage) alloc(n uint32) uint32 {
	b := s.next
	s.next += n
	s.block(s.next - 1)
	return b
}

// pcluster stores stream at the end of n fresh blocks (0padding).
func (s *synthImage) pcluster(stream []byte, n uint32) uint32 {
	b := s.alloc(n)
	end := int(b+n) * synthBlk
	copy(s.data[end-len(stream):end], stream)
	return b
}

// inode writes a compact inode at nid and returns the byte offset just
// after it (where its index starts).
func (s *synthImage) inode(nid uint64, layout uint16, mode uint16, size uint64, u uint32) int64 {
	off := int64(synthBlk + nid*disk.InodeSlotSize)
	in := disk.Inode{Format: layout << 1, Mode: mode, Nlink: 1, Size: size, U: u, Ino: uint32(nid)}
	in.Encode(s.data[off : off+disk.CompactInodeSize])
	return off + disk.CompactInodeSize
}

// file adds a compressed regular file and returns where its index ends.
func (s *synthImage) file(name string, layout uint16, size uint64) (nid uint64, end int64) {
	return s.node(name, layout, sIFREG|0o644, size)
}

// node adds an inode of any type; name "" keeps it out of the root
// directory.
func (s *synthImage) node(name string, layout, mode uint16, size uint64) (nid uint64, end int64) {
	nid = s.fileNid
	s.fileNid += synthSlot
	s.files = append(s.files, synthFile{name, nid, ftypeOfMode(mode)})
	return nid, s.inode(nid, layout, mode, size, 0)
}

// finish writes the root directory and superblock.
func (s *synthImage) finish(t testing.TB, incompat uint32) []byte {
	t.Helper()
	ents := []synthDirent{{".", 0, disk.FTDir}, {"..", 0, disk.FTDir}}
	nlink := uint32(2)
	for _, f := range s.files { // callers add them in name order
		if f.name == "" {
			continue
		}
		ents = append(ents, synthDirent{f.name, f.nid, f.ftype})
		if f.ftype == disk.FTDir {
			nlink++
		}
	}
	dir := encodeDir(ents)
	copy(s.block(synthDirBlk), dir)
	s.inode(0, disk.LayoutFlatPlain, sIFDIR|0o755, uint64(len(dir)), synthDirBlk)
	rootIn, _ := disk.DecodeInode(s.data[synthBlk:])
	rootIn.Nlink = nlink
	rootIn.Encode(s.data[synthBlk : synthBlk+disk.CompactInodeSize])

	sb := disk.Superblock{
		BlkSzBits: 12, RootNid: 0, Inos: uint64(1 + len(s.files)), Blocks: uint32(len(s.data) / synthBlk),
		MetaBlkAddr: 1, FeatureIncompat: incompat, U1: 1 << disk.ComprLZ4, PackedNid: s.packed,
	}
	if len(s.blob) > 0 {
		// One extra device, mapped at synthBlobBase in the unified
		// address space; its slot after the compression config.
		sb.ExtraDevices, sb.DevtSlotOff = 1, synthDevtSlot
		slot := disk.DeviceSlot{Blocks: uint32(len(s.blob) / synthBlk), MappedBlkAddr: synthBlobBase}
		copy(slot.Tag[:], bytes.Repeat([]byte("b"), 64))
		slot.Encode(s.data[synthDevtSlot*disk.DeviceSlotSize:])
	}
	sb.Encode(s.data[disk.SuperOffset:])
	recs := s.cfgs
	if recs == nil {
		cfg := disk.LZ4Cfgs{MaxPclusterBlks: 16}
		rec := disk.ComprCfgRecord{Alg: disk.ComprLZ4, Data: make([]byte, disk.LZ4CfgsSize)}
		cfg.Encode(rec.Data)
		recs = []disk.ComprCfgRecord{rec}
	}
	sb.U1 = 0
	for _, r := range recs {
		sb.U1 |= 1 << r.Alg
	}
	sb.Encode(s.data[disk.SuperOffset:])
	if err := disk.EncodeComprCfgs(s.data[disk.SuperOffset+disk.SuperSize:], recs); err != nil {
		t.Fatal(err)
	}
	return s.data
}

func putFull(data []byte, end int64, lcn uint64, d disk.LclusterIndex) {
	at := disk.FullIndexPos(uint64(end), lcn)
	d.Encode(data[at : at+disk.LclusterIndexSize])
}

func putHeader(data []byte, end int64, h disk.MapHeader) {
	at := disk.MapHeaderPos(uint64(end))
	h.Encode(data[at : at+disk.MapHeaderSize])
}

// buildSynth builds files of every layout mkfs.erofs 1.5 cannot make
// and returns the image, each file's contents and the extra device.
func buildSynth(t testing.TB) (data []byte, want map[string][]byte, blob []byte) {
	s := newSynthImage()
	want = map[string][]byte{}
	const features = disk.IncompatZeroPadding | disk.IncompatComprCfgs | disk.IncompatComprHead2 |
		disk.IncompatZtailpacking | disk.IncompatFragments

	// a_compact_big: COMPACT 4-byte packs with big pclusters, built with
	// disk.CompactPack: a 3-block HEAD1 pcluster, a plain block, a
	// 2-block HEAD2 pcluster, laid out contiguously as COMPACT needs.
	{
		content := append(append(fileData(20, 10000), fileData(21, 4000)...), fileData(22, 6000)...)
		nid, end := s.file("a_compact_big", disk.LayoutCompressedCompact, uint64(len(content)))
		_ = nid
		b1 := s.pcluster(lz4Literals(content[:10000]), 3)
		b2 := s.alloc(1)
		copy(s.block(b2), content[10000:14000])
		s.pcluster(lz4Literals(content[14000:]), 2)
		putHeader(s.data, end, disk.MapHeader{Advise: disk.AdviseBigPcluster1 | disk.AdviseBigPcluster2, AlgorithmType: 0})
		l := disk.NewCompactLayout(disk.CompactIndexBase(uint64(end)), 5, false)
		packs := [][]disk.CompactEntry{
			{{Type: disk.LclusterTypeHead1, Lo: 0}, {Type: disk.LclusterTypeNonhead, Lo: disk.LID0CBlkCnt | 3}},
			{{Type: disk.LclusterTypePlain, Lo: 10000 - 8192}, {Type: disk.LclusterTypeHead2, Lo: 14000 - 12288}},
			{{Type: disk.LclusterTypeNonhead, Lo: disk.LID0CBlkCnt | 2}, {Type: disk.LclusterTypePlain}},
		}
		bases := []uint32{b1, b2, 0}
		for k, entries := range packs {
			p, pos, i := l.Locate(uint64(2 * k))
			if i != 0 || p != disk.CompactPack4B {
				t.Fatalf("pack %d: %d-byte pack, entry %d", k, p.Size, i)
			}
			if err := p.Encode(s.data[pos:pos+uint64(p.Size)], 12, entries, bases[k]); err != nil {
				t.Fatal(err)
			}
		}
		want["a_compact_big"] = content
	}
	// b_full_big: the same extents with FULL indexes.
	{
		content := append(append(fileData(30, 10000), fileData(31, 4000)...), fileData(32, 6000)...)
		_, end := s.file("b_full_big", disk.LayoutCompressedFull, uint64(len(content)))
		b1 := s.pcluster(lz4Literals(content[:10000]), 3)
		b2 := s.alloc(1)
		copy(s.block(b2), content[10000:14000])
		b3 := s.pcluster(lz4Literals(content[14000:]), 2)
		putHeader(s.data, end, disk.MapHeader{Advise: disk.AdviseBigPcluster1 | disk.AdviseBigPcluster2})
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, BlkAddr: b1})
		putFull(s.data, end, 1, disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{disk.LID0CBlkCnt | 3, 1}})
		putFull(s.data, end, 2, disk.LclusterIndex{Type: disk.LclusterTypePlain, ClusterOfs: 10000 - 8192, BlkAddr: b2})
		putFull(s.data, end, 3, disk.LclusterIndex{Type: disk.LclusterTypeHead2, ClusterOfs: 14000 - 12288, BlkAddr: b3})
		putFull(s.data, end, 4, disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{disk.LID0CBlkCnt | 2, 1}})
		want["b_full_big"] = content
	}
	// c_interlaced: a compressed extent, then a plain one stored
	// interlaced: its bytes at their in-block offsets, wrapping.
	{
		content := append(bytes.Repeat([]byte("c"), 5000), fileData(41, 4000)...)
		_, end := s.file("c_interlaced", disk.LayoutCompressedFull, uint64(len(content)))
		b1 := s.pcluster(lz4Run('c', 5000), 1)
		b2 := s.alloc(1)
		blk := s.block(b2)
		for i := 5000; i < len(content); i++ {
			blk[i%synthBlk] = content[i]
		}
		putHeader(s.data, end, disk.MapHeader{Advise: disk.AdviseInterlacedPcluster})
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, BlkAddr: b1})
		putFull(s.data, end, 1, disk.LclusterIndex{Type: disk.LclusterTypePlain, ClusterOfs: 5000 - 4096, BlkAddr: b2})
		// The file ends inside lcluster 2: a PLAIN HEAD at the end, as
		// mkfs writes, bounds the plain extent for the kernel.
		putFull(s.data, end, 2, disk.LclusterIndex{Type: disk.LclusterTypePlain, ClusterOfs: uint16(len(content) % synthBlk)})
		want["c_interlaced"] = content
	}
	// d_partial: PARTIAL_REF, the extent is the first 3000 of the 5000
	// bytes the pcluster decodes to.
	{
		_, end := s.file("d_partial", disk.LayoutCompressedFull, 3000)
		b := s.pcluster(lz4Run('d', 5000), 1)
		putHeader(s.data, end, disk.MapHeader{})
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, PartialRef: true, BlkAddr: b})
		want["d_partial"] = bytes.Repeat([]byte("d"), 3000)
		// Two more files use shorter prefixes of the same pcluster
		// (dedupe): Check decodes it once.
		for i, n := range []int{2000, 1000} {
			name := fmt.Sprintf("d_partial%d", i+2)
			_, end := s.file(name, disk.LayoutCompressedFull, uint64(n))
			putHeader(s.data, end, disk.MapHeader{})
			putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, PartialRef: true, BlkAddr: b})
			want[name] = bytes.Repeat([]byte("d"), n)
		}
	}
	// e_ztail: FULL with the tail pcluster inline after the index.
	{
		content := append(bytes.Repeat([]byte("z"), 5000), fileData(60, 1000)...)
		_, end := s.file("e_ztail", disk.LayoutCompressedFull, uint64(len(content)))
		b1 := s.pcluster(lz4Run('z', 5000), 1)
		tail := lz4Literals(content[5000:])
		h := disk.MapHeader{Advise: disk.AdviseInlinePcluster}
		h.SetIdataSize(uint16(len(tail)))
		putHeader(s.data, end, h)
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, BlkAddr: b1})
		putFull(s.data, end, 1, disk.LclusterIndex{Type: disk.LclusterTypeHead1, ClusterOfs: 5000 - 4096})
		at := disk.FullIndexPos(uint64(end), 1) + disk.LclusterIndexSize
		copy(s.data[at:], tail)
		want["e_ztail"] = content
	}
	// f_fragment_tail and g_fragment_whole: bytes in the packed inode.
	packedData := fileData(70, 9000)
	{
		content := append(bytes.Repeat([]byte("f"), 6000), packedData[100:1100]...)
		_, end := s.file("f_fragment_tail", disk.LayoutCompressedFull, uint64(len(content)))
		b1 := s.pcluster(lz4Run('f', 6000), 1)
		putHeader(s.data, end, disk.MapHeader{FragmentOff: 100, Advise: disk.AdviseFragmentPcluster})
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, BlkAddr: b1})
		putFull(s.data, end, 1, disk.LclusterIndex{Type: disk.LclusterTypeHead1, ClusterOfs: 6000 - 4096})
		want["f_fragment_tail"] = content
	}
	{
		_, end := s.file("g_fragment_whole", disk.LayoutCompressedCompact, 7000)
		putHeader(s.data, end, disk.WholeFileFragmentHeader(2000))
		want["g_fragment_whole"] = packedData[2000:9000]
	}
	// h_blob: pclusters in the extra device, addressed through the
	// device table's unified address space.
	{
		content := append(bytes.Repeat([]byte("h"), 5000), fileData(80, 3000)...)
		_, end := s.file("h_blob", disk.LayoutCompressedFull, uint64(len(content)))
		s.blob = make([]byte, 4*synthBlk)
		run := lz4Run('h', 5000) // device block 3, 0padded
		copy(s.blob[4*synthBlk-len(run):], run)
		copy(s.blob[synthBlk:], content[5000:]) // plain, device block 1
		putHeader(s.data, end, disk.MapHeader{})
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, BlkAddr: synthBlobBase + 3})
		putFull(s.data, end, 1, disk.LclusterIndex{Type: disk.LclusterTypePlain, ClusterOfs: 5000 - 4096, BlkAddr: synthBlobBase + 1})
		want["h_blob"] = content
	}
	// i_dir: a compressed directory holding an empty file; j_link: a
	// compressed symlink. The kernel reads both through the same
	// decompression as files.
	{
		dirNid, end := s.node("i_dir", disk.LayoutCompressedFull, sIFDIR|0o755, 0)
		leafNid := s.fileNid // allocated next
		d := encodeDir([]synthDirent{{".", dirNid, disk.FTDir}, {"..", 0, disk.FTDir}, {"leaf", leafNid, disk.FTRegFile}})
		s.inode(dirNid, disk.LayoutCompressedFull, sIFDIR|0o755, uint64(len(d)), 0)
		in, _ := disk.DecodeInode(s.data[synthBlk+dirNid*disk.InodeSlotSize:])
		in.Nlink = 2
		in.Encode(s.data[synthBlk+dirNid*disk.InodeSlotSize:][:disk.CompactInodeSize])
		b := s.pcluster(lz4Literals(d), 1)
		putHeader(s.data, end, disk.MapHeader{})
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, BlkAddr: b})
		if n, _ := s.node("", disk.LayoutFlatPlain, sIFREG|0o644, 0); n != leafNid {
			t.Fatalf("leaf nid %d, want %d", n, leafNid)
		}
		want["i_dir/leaf"] = []byte{}

		target := "a_compact_big"
		_, end = s.node("j_link", disk.LayoutCompressedFull, sIFLNK|0o777, uint64(len(target)))
		b = s.pcluster(lz4Literals([]byte(target)), 1)
		putHeader(s.data, end, disk.MapHeader{})
		putFull(s.data, end, 0, disk.LclusterIndex{Type: disk.LclusterTypeHead1, BlkAddr: b})
	}
	// The packed inode: a flat file, not in any directory.
	{
		s.packed = s.fileNid
		s.fileNid += synthSlot
		b := s.alloc(3)
		copy(s.data[b*synthBlk:], packedData)
		s.inode(s.packed, disk.LayoutFlatPlain, sIFREG|0o600, uint64(len(packedData)), b)
	}
	return s.finish(t, features), want, s.blob
}

// TestSynthCompressedLayouts reads hand-built files of every layout
// mkfs.erofs 1.5 cannot make, and checks the image.
func TestSynthCompressedLayouts(t *testing.T) {
	data, want, blob := buildSynth(t)
	blobs := BlobResolverFunc(func(dev int, tag string) (io.ReaderAt, error) {
		if dev != 1 {
			return nil, fmt.Errorf("no device %d", dev)
		}
		return bytes.NewReader(blob), nil
	})
	img, err := Open(bytes.NewReader(data), WithBlobs(blobs))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for name, w := range want {
		got, err := img.ReadFile(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s: %d bytes differ from the %d written at %d", name, len(got), len(w), firstDiff(got, w))
			continue
		}
		if err := readZPieces(img, name, w); err != nil {
			t.Error(err)
		}
	}
	rep, err := Check(context.Background(), bytes.NewReader(data), CheckOptions{VerifyData: true, Blobs: blobs})
	if err != nil {
		t.Errorf("Check: %v", err)
	} else {
		compressed := 0
		for name := range want {
			if l, err := img.Compression(name); err == nil {
				compressed += l.Compressed
			}
		}
		// Plus i_dir's and j_link's one each; d_partial2 and d_partial3
		// reuse d_partial's decode.
		if rep.CompressedFiles != len(want)-1 || rep.ExtentsDecoded != compressed+2-2 {
			t.Errorf("Check report %+v; the files have %d compressed extents", rep, compressed)
		}
	}
	// FileChunks reports the pclusters, in the blob for h_blob.
	var blobChunks []FileChunk
	err = img.FileChunks(context.Background(), 0, func(nid uint64, chunks []FileChunk) error {
		for _, c := range chunks {
			if c.Device == 1 {
				blobChunks = append(blobChunks, c)
			}
		}
		return nil
	})
	wantChunks := []FileChunk{
		{Offset: 0, Length: 5000, Device: 1, BlkAddr: 3, Encoded: synthBlk},
		{Offset: 5000, Length: 3000, Device: 1, BlkAddr: 1, Encoded: synthBlk},
	}
	if err != nil || !slices.Equal(blobChunks, wantChunks) {
		t.Errorf("FileChunks in the blob: %+v, %v; want %+v", blobChunks, err, wantChunks)
	}
	// With a chunk table listing the blob's pclusters, verified reads
	// return their bytes, and refuse a changed pcluster.
	blobPath := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(blobPath, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	withTable, _, entries := appendChunkTable(t, data, blobPath)
	if len(entries) != 2 {
		t.Fatalf("chunk table entries %+v, want the 2 pclusters", entries)
	}
	for _, damage := range []bool{false, true} {
		b := slices.Clone(blob)
		if damage {
			b[4*synthBlk-3] ^= 1 // in the LZ4 stream's last literals
		}
		vimg, err := Open(bytes.NewReader(withTable), WithVerifiedBlobs(), WithBlobs(BlobResolverFunc(func(int, string) (io.ReaderAt, error) {
			return bytes.NewReader(b), nil
		})))
		if err != nil {
			t.Fatal(err)
		}
		got, err := vimg.ReadFile("h_blob")
		switch {
		case damage && !errors.Is(err, ErrDigestMismatch):
			t.Errorf("damaged blob pcluster: %v", err)
		case !damage && (err != nil || !bytes.Equal(got, want["h_blob"])):
			t.Errorf("verified read: %v", err)
		}
		vimg.Close()
	}
	// A packed inode that is itself a fragment would read itself: both
	// Check and reads refuse it.
	{
		b := slices.Clone(data)
		pnid := img.Info().PackedNid
		patchInode(t, img, b, pnid, func(in *disk.Inode) { in.Format = disk.LayoutCompressedCompact << 1 })
		putHeader(b, inodeOff(img, pnid)+disk.CompactInodeSize, disk.WholeFileFragmentHeader(0))
		if _, err := Check(context.Background(), bytes.NewReader(b), CheckOptions{VerifyData: true, Blobs: blobs}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("packed inode made of a fragment: Check says %v", err)
		}
		bimg, err := Open(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bimg.ReadFile("g_fragment_whole"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("packed inode made of a fragment: ReadFile says %v", err)
		}
		bimg.Close()
	}
	// mkfs.erofs counts the packed inode in the superblock's inodes.
	for extra, ok := range map[uint64]bool{1: true, 2: false} {
		b := slices.Clone(data)
		sb, _ := disk.DecodeSuperblock(b[disk.SuperOffset:])
		sb.Inos += extra
		sb.Encode(b[disk.SuperOffset:])
		if _, err := Check(context.Background(), bytes.NewReader(b), CheckOptions{Blobs: blobs}); (err == nil) != ok {
			t.Errorf("%d more inodes than reachable: Check says %v", extra, err)
		}
	}
	// One chunk holding both pclusters (blocks 1..3), as the builder
	// packs them: verified reads and Check find it.
	packed := slices.Clone(withTable[:len(data)])
	e := disk.ChunkEntry{DeviceID: 1, BlkAddr: 1, Length: 3 * synthBlk}
	e.Digest = sha256.Sum256(blob[synthBlk : 4*synthBlk])
	packed = append(packed, encodeTable([]disk.ChunkEntry{e}, 1)...)
	pblobs := BlobResolverFunc(func(int, string) (io.ReaderAt, error) { return bytes.NewReader(blob), nil })
	if rep, err := Check(context.Background(), bytes.NewReader(packed), CheckOptions{VerifyData: true, Blobs: pblobs}); err != nil || rep.ChunksVerified != 1 {
		t.Errorf("Check with one chunk for two pclusters: %+v, %v", rep, err)
	}
	pimg, err := Open(bytes.NewReader(packed), WithVerifiedBlobs(), WithBlobs(pblobs))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pimg.ReadFile("h_blob"); err != nil || !bytes.Equal(got, want["h_blob"]) {
		t.Errorf("verified read from a chunk of two pclusters: %v", err)
	}
	pimg.Close()
	// A chunk that ends inside a pcluster holds none of it.
	e.Length = 3*synthBlk - 1
	e.Digest = sha256.Sum256(blob[synthBlk : 4*synthBlk-1])
	short := append(slices.Clone(withTable[:len(data)]), encodeTable([]disk.ChunkEntry{e}, 1)...)
	if _, err := Check(context.Background(), bytes.NewReader(short), CheckOptions{VerifyData: true, Blobs: pblobs}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "in no chunk") {
		t.Errorf("pcluster past its chunk: Check says %v", err)
	}
	// A plain extent running into a NONHEAD lcluster at the end of the
	// file: the kernel maps it to that lcluster's end, past its one
	// block, and refuses it (EFSCORRUPTED); so must the reader.
	bad := slices.Clone(data)
	cNid := nidOf(t, img, "c_interlaced")
	cEnd := inodeOff(img, cNid) + disk.CompactInodeSize
	putFull(bad, cEnd, 2, disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{1, 1}})
	if _, err := Check(context.Background(), bytes.NewReader(bad), CheckOptions{VerifyData: true, Blobs: blobs}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "mapped to 12288") {
		t.Errorf("plain extent into a trailing NONHEAD: Check says %v", err)
	}
	// Without the blob, its file fails with ErrNoBlob, the others read.
	noBlob, err := Open(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer noBlob.Close()
	if _, err := noBlob.ReadFile("h_blob"); !errors.Is(err, ErrNoBlob) {
		t.Errorf("h_blob without its blob: %v", err)
	}
	if got, err := img.ReadLink("j_link"); err != nil || got != "a_compact_big" {
		t.Errorf("compressed symlink: %q, %v", got, err)
	}
	if ents, err := img.ReadDir("i_dir"); err != nil || len(ents) != 1 || ents[0].Name() != "leaf" {
		t.Errorf("compressed directory: %v, %v", ents, err)
	}
	l, err := img.Compression("b_full_big")
	if err != nil || l.Indexes != "full" || l.Extents != 3 || l.Plain != 1 || l.BigPclusters != 2 || l.Encoded != 6*synthBlk {
		t.Errorf("Compression(b_full_big) = %+v, %v", l, err)
	}
}
