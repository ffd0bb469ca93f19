package build

import (
	"errors"
	"reflect"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

func head(typ uint8, ofs uint16, blk uint32) disk.LclusterIndex {
	return disk.LclusterIndex{Type: typ, ClusterOfs: ofs, BlkAddr: blk}
}

func nonhead(d0, d1 uint16) disk.LclusterIndex {
	return disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{d0, d1}}
}

const (
	tPlain = disk.LclusterTypePlain
	tHead1 = disk.LclusterTypeHead1
	cblk   = disk.LID0CBlkCnt
)

func TestLclusterIndexes(t *testing.T) {
	tests := []struct {
		name string
		size uint64
		exts []zextent
		big  bool
		want []disk.LclusterIndex
	}{
		{
			name: "one extent, partial last lcluster gets a PLAIN end marker",
			size: 10000,
			exts: []zextent{{off: 0, blocks: 1}},
			want: []disk.LclusterIndex{head(tHead1, 0, 100), nonhead(1, 1), head(tPlain, 10000%4096, 0)},
		},
		{
			name: "one extent, whole lclusters: NONHEADs look ahead past the end",
			size: 3 * 4096,
			exts: []zextent{{off: 0, blocks: 1}},
			want: []disk.LclusterIndex{head(tHead1, 0, 100), nonhead(1, 2), nonhead(2, 1)},
		},
		{
			name: "raw extent after a compressed one, then a tail starting in the last lcluster",
			size: 9000,
			exts: []zextent{{off: 0, blocks: 1}, {off: 5000, plain: true, blocks: 1}, {off: 9000 - 100, plain: true, blocks: 1}},
			want: []disk.LclusterIndex{head(tHead1, 0, 100), head(tPlain, 5000-4096, 101), head(tPlain, 8900-8192, 102)},
		},
		{
			name: "big pcluster: CBLKCNT on the first NONHEAD of a compressed extent only",
			size: 6*4096 + 10,
			exts: []zextent{{off: 0, blocks: 3}, {off: 4*4096 + 7, blocks: 1}},
			big:  true,
			want: []disk.LclusterIndex{
				head(tHead1, 0, 100), nonhead(cblk|3, 3), nonhead(2, 2), nonhead(3, 1),
				head(tHead1, 7, 101), nonhead(cblk|1, 1), head(tPlain, 10, 0),
			},
		},
		{
			name: "inline tail: no block address",
			size: 2*4096 + 50,
			exts: []zextent{{off: 0, blocks: 1}, {off: 4096 + 4000, inline: true}},
			want: []disk.LclusterIndex{head(tHead1, 0, 100), head(tHead1, 4000, 0), head(tPlain, 50, 0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lclusterIndexes(tt.size, tt.exts, tt.big, func(i int) uint32 { return 100 + uint32(i) })
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLclusterIndexesRefusesTwoHeadsInOneLcluster(t *testing.T) {
	for _, exts := range [][]zextent{
		{{off: 0}, {off: 100}},
		{{off: 10}},
		{{off: 0}, {off: 5000}, {off: 6000}},
	} {
		if _, err := lclusterIndexes(20000, exts, false, func(int) uint32 { return 0 }); err == nil {
			t.Errorf("%+v: no error", exts)
		}
	}
}

// compactHeads decodes the block address of every HEAD of a COMPACT
// index the way the kernel does, from the packs alone.
func compactHeads(t *testing.T, idx []byte, prefix int, nlc uint64, big bool) map[int]uint32 {
	t.Helper()
	l := compactLayout(prefix, nlc)
	hdr := disk.MapHeaderPos(uint64(prefix)) + disk.MapHeaderSize
	out := map[int]uint32{}
	for lcn := uint64(0); lcn < nlc; lcn++ {
		p, packPos, k := l.Locate(lcn)
		pack := idx[packPos-hdr:][:p.Size]
		ents := make([]disk.CompactEntry, p.VCnt)
		for i := range ents {
			e, err := p.Entry(pack, blockSizeBits, i)
			if err != nil {
				t.Fatal(err)
			}
			ents[i] = e
		}
		if ents[k].Type == disk.LclusterTypeNonhead {
			continue
		}
		n, err := compactBlocksBefore(ents, k, big)
		if err != nil {
			t.Fatal(err)
		}
		base, _ := p.Base(pack)
		out[int(lcn)] = base + n
	}
	return out
}

func TestCompactIndexes(t *testing.T) {
	tests := []struct {
		name   string
		prefix int // inode + xattrs: moves the first packs
		big    bool
		exts   []zextent
		size   uint64
	}{
		{"one-block pclusters across 2B packs", 32, false, manyExtents(60, 1), 60*4096*2 - 5},
		{"big pclusters across 2B packs", 64, true, manyExtents(40, 3), 40 * 4 * 4096},
		{"odd prefix", 76, true, manyExtents(25, 2), 25*3*4096 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := make([]uint32, len(tt.exts))
			next := uint32(1000)
			for i, e := range tt.exts {
				addr[i] = next
				next += e.blocks
			}
			ents, err := lclusterIndexes(tt.size, tt.exts, tt.big, func(i int) uint32 { return addr[i] })
			if err != nil {
				t.Fatal(err)
			}
			nlc := uint64(len(ents))
			size := compactIndexSize(tt.prefix, nlc)
			if full := fullIndexSize(nlc); size >= full {
				t.Errorf("compact %d bytes, FULL %d", size, full)
			}
			idx := make([]byte, size-disk.MapHeaderSize)
			stored := map[int]bool{}
			for _, e := range tt.exts {
				stored[int(e.off/blockSize)] = true
			}
			if err := encodeCompact(idx, tt.prefix, ents, tt.big, func(lcn int) bool { return stored[lcn] }); err != nil {
				t.Fatal(err)
			}
			got := compactHeads(t, idx, tt.prefix, nlc, tt.big)
			for i, e := range tt.exts {
				if lcn := int(e.off / blockSize); got[lcn] != addr[i] {
					t.Errorf("extent %d (lcluster %d): block %d, want %d", i, lcn, got[lcn], addr[i])
				}
			}
		})
	}
}

func TestCompactRefusesScatteredPclusters(t *testing.T) {
	exts := manyExtents(20, 1)
	ents, err := lclusterIndexes(20*2*4096, exts, false, func(i int) uint32 { return uint32(1000 + 2*i) }) // a gap after each
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]byte, compactIndexSize(32, uint64(len(ents)))-disk.MapHeaderSize)
	err = encodeCompact(idx, 32, ents, false, func(lcn int) bool { return lcn%2 == 0 })
	if !errors.Is(err, errNotCompact) {
		t.Fatalf("err = %v, want errNotCompact", err)
	}
}

// manyExtents returns n compressed extents of the given pcluster size, each
// decoding to one lcluster more than its pcluster (starting mid-lcluster
// after the first).
func manyExtents(n int, blocks uint32) []zextent {
	exts := make([]zextent, n)
	off := uint64(0)
	for i := range exts {
		exts[i] = zextent{off: off, blocks: blocks}
		off += uint64(blocks+1)*4096 + uint64(i%3)*7
	}
	return exts
}
