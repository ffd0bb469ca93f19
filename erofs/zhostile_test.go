package erofs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// zHostileImages are built once per test run: a COMPACT image with big
// pclusters and ztailpacking, and a FULL (legacy) one.
var zHostileArgs = map[string][]string{
	"compact": {"-zlz4hc", "-C16384", "-Eztailpacking", "-T0", "--all-root"},
	"full":    {"-zlz4", "-Elegacy-compress", "-T0", "--all-root"},
}

// zpatchCtx gives a mutation what it needs to find a file's structures.
type zpatchCtx struct {
	t    *testing.T
	img  *Image // the unpatched image
	data []byte // the bytes to patch
	ino  *inode // the target file
	zi   *zinfo
}

// header returns the offset of the target's map header.
func (c *zpatchCtx) header() int64 { return int64(disk.MapHeaderPos(uint64(c.ino.tailOff()))) }

// full returns the offset of FULL index lcn.
func (c *zpatchCtx) full(lcn uint64) int64 {
	return int64(disk.FullIndexPos(uint64(c.ino.tailOff()), lcn))
}

// ext returns the target's extent holding byte off.
func (c *zpatchCtx) ext(off int64) zextent {
	m := zmapper{img: c.img, ino: c.ino, zi: c.zi}
	e, err := m.mapAt(off, false)
	if err != nil {
		c.t.Fatal(err)
	}
	return e
}

type zcorruption struct {
	name   string
	image  string // key of zHostileArgs
	file   string
	patch  func(c *zpatchCtx)
	want   string // substring of Check's error
	unsup  bool   // ErrUnsupported rather than ErrCorrupt
	noRead bool   // reading the file may still succeed (the damage is elsewhere)
}

var zcorruptions = []zcorruption{
	{name: "lclusterbits too large", image: "compact", file: "text", want: "lclusterbits", unsup: true,
		patch: func(c *zpatchCtx) { c.data[c.header()+7] = 5 }},
	{name: "compact lclusterbits 15", image: "compact", file: "text", want: "COMPACT indexes with lclusterbits 15", unsup: true,
		patch: func(c *zpatchCtx) { c.data[c.header()+7] = 3 }},
	{name: "unknown algorithm", image: "compact", file: "cat", want: "compression algorithm 7", unsup: true,
		patch: func(c *zpatchCtx) { c.data[c.header()+6] = 0x77 }},
	{name: "algorithm not in superblock", image: "compact", file: "cat", want: "not in the superblock",
		patch: func(c *zpatchCtx) { c.data[c.header()+6] = 0x11 }},
	{name: "big pcluster for HEAD1 only", image: "compact", file: "cat", want: "one head type only",
		patch: func(c *zpatchCtx) { c.data[c.header()+4] &^= disk.AdviseBigPcluster2 }},
	{name: "inline pcluster of 0 bytes", image: "compact", file: "cat", want: "inline pcluster of 0 bytes",
		patch: func(c *zpatchCtx) { binary.LittleEndian.PutUint16(c.data[c.header()+2:], 0) }},
	{name: "inline pcluster crosses a block", image: "compact", file: "cat", want: "crosses a block boundary",
		patch: func(c *zpatchCtx) { binary.LittleEndian.PutUint16(c.data[c.header()+2:], 4000) }},
	{name: "encoded extents (6.15)", image: "full", file: "cat", want: "encoded extent records", unsup: true,
		patch: func(c *zpatchCtx) {
			// FULL headers are read only on images with big pclusters,
			// ztailpacking or fragments: claim ztailpacking.
			c.data[disk.SuperOffset+0x50] |= disk.IncompatZtailpacking
			c.data[c.header()+4] |= disk.AdviseExtents
		}},
	{name: "full clusterofs beyond lcluster", image: "full", file: "cat", want: "clusterofs 5000",
		patch: func(c *zpatchCtx) { binary.LittleEndian.PutUint16(c.data[c.full(0)+2:], 5000) }},
	{name: "full head beyond image", image: "full", file: "cat", want: "beyond",
		patch: func(c *zpatchCtx) {
			for lcn := uint64(0); lcn < uint64(c.img.blocksOf(c.ino.size)); lcn++ {
				if d, _ := disk.DecodeLclusterIndex(c.data[c.full(lcn):]); d.IsHead() {
					binary.LittleEndian.PutUint32(c.data[c.full(lcn)+4:], 1<<30)
				}
			}
		}},
	{name: "full lookback distance 0", image: "full", file: "cat", want: "lookback distance 0",
		patch: func(c *zpatchCtx) {
			d := disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{0, 1}}
			d.Encode(c.data[c.full(2):])
		}},
	{name: "full lookback before the file", image: "full", file: "cat", want: "lookback distance 40",
		patch: func(c *zpatchCtx) {
			d := disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{40, 1}}
			d.Encode(c.data[c.full(2):])
		}},
	{name: "full first lcluster nonhead", image: "full", file: "text", want: "before the file",
		patch: func(c *zpatchCtx) {
			d := disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{1, 1}}
			d.Encode(c.data[c.full(0):])
		}},
	{name: "full CBLKCNT without big pclusters", image: "full", file: "text", want: "CBLKCNT without big pclusters",
		patch: func(c *zpatchCtx) {
			d := disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{disk.LID0CBlkCnt | 2, 1}}
			d.Encode(c.data[c.full(1):])
		}},
	{name: "full lookahead loops back", image: "full", file: "cat", want: "extent",
		patch: func(c *zpatchCtx) {
			// Every lcluster a NONHEAD pointing back to lcluster 0:
			// one extent as long as the file, from one pcluster.
			for lcn := uint64(1); lcn < uint64(c.img.blocksOf(c.ino.size)); lcn++ {
				d := disk.LclusterIndex{Type: disk.LclusterTypeNonhead, Delta: [2]uint16{uint16(lcn), 1}}
				d.Encode(c.data[c.full(lcn):])
			}
		}},
	{name: "size beyond the index", image: "full", file: "text", want: "index ends at byte",
		patch: func(c *zpatchCtx) {
			patchInode(c.t, c.img, c.data, c.ino.nid, func(in *disk.Inode) { in.Size = 1 << 31 })
		}},
	{name: "compact size beyond the index", image: "compact", file: "cat", want: "beyond",
		patch: func(c *zpatchCtx) {
			patchInode(c.t, c.img, c.data, c.ino.nid, func(in *disk.Inode) { in.Size = 1<<31 + 77 })
		}},
	{name: "compact packs all ones", image: "compact", file: "cat", want: "",
		patch: func(c *zpatchCtx) {
			start := disk.CompactIndexBase(uint64(c.ino.tailOff()))
			for i := start; i < c.zi.packs.End(); i++ {
				c.data[i] = 0xFF
			}
		}},
	{name: "compact packs all zeros", image: "compact", file: "cat", want: "",
		patch: func(c *zpatchCtx) {
			start := disk.CompactIndexBase(uint64(c.ino.tailOff()))
			clear(c.data[start:c.zi.packs.End()])
		}},
	{name: "zeroed pcluster", image: "compact", file: "cat", want: "no stream in its first",
		patch: func(c *zpatchCtx) {
			e := c.ext(0)
			clear(c.data[e.pa : e.pa+e.plen])
		}},
	{name: "garbage pcluster", image: "full", file: "text", want: "lz4",
		patch: func(c *zpatchCtx) {
			e := c.ext(0)
			for i := e.pa; i < e.pa+e.plen; i++ {
				c.data[i] = 0xF0 // literal runs longer than anything
			}
		}},
	{name: "unknown algorithm bit in superblock", image: "compact", file: "cat", want: "unknown compression algorithms", unsup: true,
		patch: func(c *zpatchCtx) { c.data[disk.SuperOffset+0x54] |= 0x20 }},
	{name: "lz4 max_pclusterblks too large", image: "compact", file: "cat", want: "max_pclusterblks",
		patch: func(c *zpatchCtx) {
			binary.LittleEndian.PutUint16(c.data[disk.SuperOffset+disk.SuperSize+2+2:], 1000)
		}},
	{name: "config record truncated", image: "compact", file: "cat", want: "lz4 config",
		patch: func(c *zpatchCtx) { binary.LittleEndian.PutUint16(c.data[disk.SuperOffset+disk.SuperSize:], 3) }},
}

// TestCompressedRejectsCorruption mutates the indexes, headers and
// pclusters of real mkfs.erofs images: Check must report each (wrapping
// ErrCorrupt or ErrUnsupported), reading the file must fail rather than
// return wrong bytes, and nothing may panic or allocate much.
func TestCompressedRejectsCorruption(t *testing.T) {
	requireMkfs(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("compressible text for a hostile test, "), 2000) // 76 KB
	if err := os.WriteFile(filepath.Join(src, "text"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	catBin, err := os.ReadFile("/usr/bin/cat")
	if err != nil {
		catBin = fileData(9, 40000)
		copy(catBin, text[:20000])
	}
	if err := os.WriteFile(filepath.Join(src, "cat"), catBin, 0o644); err != nil {
		t.Fatal(err)
	}
	images := map[string][]byte{}
	for name, args := range zHostileArgs {
		b, err := os.ReadFile(mkfs(t, src, args...))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Check(context.Background(), bytes.NewReader(b), CheckOptions{VerifyData: true}); err != nil {
			t.Fatalf("%s image: %v", name, err)
		}
		images[name] = b
	}
	for _, zc := range zcorruptions {
		t.Run(zc.name, func(t *testing.T) {
			orig := images[zc.image]
			img, err := Open(bytes.NewReader(orig))
			if err != nil {
				t.Fatal(err)
			}
			ino, err := img.inode(nidOf(t, img, zc.file))
			if err != nil {
				t.Fatal(err)
			}
			var meta metaBuf
			zi, err := img.zinfoOf(ino, &meta)
			if err != nil {
				t.Fatal(err)
			}
			c := &zpatchCtx{t: t, img: img, data: slices.Clone(orig), ino: ino, zi: zi}
			zc.patch(c)
			fixChecksum(c.data)

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err = Check(context.Background(), bytes.NewReader(c.data), CheckOptions{VerifyData: true})
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 64<<20 {
				t.Errorf("Check allocated %d MiB", grown>>20)
			}
			switch {
			case err == nil:
				t.Fatal("Check accepted the image")
			case zc.unsup && !errors.Is(err, ErrUnsupported), !zc.unsup && !errors.Is(err, ErrCorrupt):
				t.Fatalf("Check: %v (want unsupported: %v)", err, zc.unsup)
			case !strings.Contains(err.Error(), zc.want):
				t.Fatalf("Check: %v, want %q", err, zc.want)
			}
			t.Log(err)
			if patched, err := Open(bytes.NewReader(c.data)); err == nil {
				got, err := patched.ReadFile(zc.file)
				want, _ := os.ReadFile(filepath.Join(src, zc.file))
				switch {
				case err != nil && !isReported(err):
					t.Errorf("ReadFile: unclassified error %v", err)
				case err == nil && !zc.noRead && !bytes.Equal(got, want):
					t.Errorf("ReadFile returned %d wrong bytes without an error", len(got))
				}
				patched.Close()
			}
			walkImage(c.data, nil)
		})
	}
}
