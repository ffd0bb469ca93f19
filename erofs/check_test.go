package erofs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// sourceCounts counts distinct inodes by type in a host tree.
func sourceCounts(t *testing.T, root string) CheckReport {
	var r CheckReport
	seen := map[uint64]bool{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		ino := fi.Sys().(*syscall.Stat_t).Ino
		if seen[ino] {
			return nil
		}
		seen[ino] = true
		r.Inodes++
		switch m := fi.Mode(); {
		case m.IsDir():
			r.Dirs++
		case m.IsRegular():
			r.Files++
			r.DataBytes += fi.Size()
		case m&fs.ModeSymlink != 0:
			r.Symlinks++
		case m&fs.ModeDevice != 0:
			r.Devices++
		default:
			r.Others++
		}
		return nil
	})
	return r
}

func TestCheckAcceptsMkfsImages(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			src, im := buildVariant(t, v, treeOpts{linkToDir: true, special: true, owners: true})
			rep, err := Check(context.Background(), bytes.NewReader(im.data), CheckOptions{VerifyData: true, Blobs: im.resolver(t)})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			want := sourceCounts(t, src)
			got := *rep
			got.Xattrs, got.Chunks, got.HoleChunks, got.ChunksVerified = 0, 0, 0, 0
			if got != want {
				t.Errorf("report %+v\nsource %+v", got, want)
			}
			if rep.Xattrs < 9 || v.chunked != (rep.Chunks > 600) {
				t.Errorf("report %+v", rep)
			}
			// Check agrees with the reference checker.
			if !v.blobdev {
				if out, err := exec.Command("fsck.erofs", im.path).CombinedOutput(); err != nil {
					t.Errorf("fsck.erofs rejects the image: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestInodeCountOpen: the kernel mounts an image whatever its inode
// count says (it only shows it in statfs), so Open and the reader accept
// an impossible one and report it as is; Check finds it.
func TestInodeCountOpen(t *testing.T) {
	b, err := readSeed("flat")
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	walked := img.Info().Inodes
	rep, err := Check(context.Background(), bytes.NewReader(b), CheckOptions{})
	if err != nil || uint64(rep.Inodes) != walked {
		t.Fatalf("Check: %v, %d inodes, superblock %d", err, rep.Inodes, walked)
	}
	binary.LittleEndian.PutUint64(b[disk.SuperOffset+0x10:], 1<<58)
	fixChecksum(b)
	img, err = Open(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if img.Info().Inodes != 1<<58 {
		t.Fatalf("info %+v", img.Info())
	}
	if err := readAll(b); err != nil {
		t.Fatalf("reading: %v", err)
	}
	if _, err := Check(context.Background(), bytes.NewReader(b), CheckOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "inodes") {
		t.Fatalf("Check: %v", err)
	}
}

func TestCheckContext(t *testing.T) {
	_, im := buildVariant(t, variants[0], treeOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Check(ctx, bytes.NewReader(im.data), CheckOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled context: %v", err)
	}
}

// direntOff returns the byte offset of the dirent called name in the
// directory dir (whose blocks live on the primary device).
func direntOff(t *testing.T, img *Image, dir, name string) int64 {
	t.Helper()
	ino, err := img.resolve("test", dir, true)
	if err != nil {
		t.Fatal(err)
	}
	exts, err := img.flatExtents(ino)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, img.blkSize)
	for blk := int64(0); blk < img.dirBlocks(ino); blk++ {
		b, err := img.readDirBlock(ino, nil, blk, buf)
		if err != nil {
			t.Fatal(err)
		}
		ents, err := parseDirBlock(b, ino.nid, blk, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range ents {
			if string(e.name) != name {
				continue
			}
			l := blk << img.blkBits
			for _, x := range exts {
				if l >= x.lstart && l < x.lstart+x.llen {
					return x.pstart + (l - x.lstart) + int64(i)*disk.DirentSize
				}
			}
		}
	}
	t.Fatalf("%s/%s not found", dir, name)
	return 0
}

type corruption struct {
	name    string
	variant int // index into variants
	patch   func(t *testing.T, img *Image, data []byte) []byte
	blobs   bool
	want    string // substring of the error
	unsup   bool   // ErrUnsupported rather than ErrCorrupt
}

func sbPatch(f func(b []byte)) func(*testing.T, *Image, []byte) []byte {
	return func(t *testing.T, img *Image, data []byte) []byte {
		f(data[disk.SuperOffset:])
		fixChecksum(data)
		return data
	}
}

func inoPatch(name string, f func(*disk.Inode)) func(*testing.T, *Image, []byte) []byte {
	return func(t *testing.T, img *Image, data []byte) []byte {
		patchInode(t, img, data, nidOf(t, img, name), f)
		fixChecksum(data)
		return data
	}
}

func direntPatch(dir, name string, f func(t *testing.T, img *Image, data []byte, off int64)) func(*testing.T, *Image, []byte) []byte {
	return func(t *testing.T, img *Image, data []byte) []byte {
		f(t, img, data, direntOff(t, img, dir, name))
		fixChecksum(data)
		return data
	}
}

var corruptions = []corruption{
	{name: "truncated image", patch: func(t *testing.T, img *Image, d []byte) []byte { return d[:len(d)/2] }, want: "truncated"},
	{name: "truncated to 1500 bytes", patch: func(t *testing.T, img *Image, d []byte) []byte { return d[:1500] }, want: "short read"},
	{name: "truncated to 1100 bytes", patch: func(t *testing.T, img *Image, d []byte) []byte { return d[:1100] }, want: "too small"},
	{name: "bad magic", patch: func(t *testing.T, img *Image, d []byte) []byte { d[disk.SuperOffset] ^= 0xff; return d }, want: "magic"},
	{name: "bad checksum", patch: func(t *testing.T, img *Image, d []byte) []byte { d[disk.SuperOffset+0x40] = 'X'; return d }, want: "checksum"},
	{name: "unknown incompat bit", patch: sbPatch(func(b []byte) { b[0x50] |= 0x40 }), want: "xattr_prefixes", unsup: true},
	{name: "future incompat bit", patch: sbPatch(func(b []byte) { b[0x52] |= 1 }), want: "bit16", unsup: true},
	{name: "blkszbits 8", patch: sbPatch(func(b []byte) { b[0x0C] = 8 }), want: "blkszbits"},
	{name: "blkszbits 20", patch: sbPatch(func(b []byte) { b[0x0C] = 20 }), want: "blkszbits", unsup: true},
	{name: "dirblkbits", patch: sbPatch(func(b []byte) { b[0x5A] = 1 }), want: "dirblkbits", unsup: true},
	{name: "sb_extslots", patch: sbPatch(func(b []byte) { b[0x0D] = 200 }), want: "sb_extslots"},
	{name: "inode count 2^58", patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint64(b[0x10:], 1<<58) }), want: "claims 288230376151711744 inodes, more than the"},
	{name: "inode count 2^64-1", variant: 2, patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint64(b[0x10:], 1<<64-1) }), want: "inode slots"},
	{name: "inode count one more", patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint64(b[0x10:], binary.LittleEndian.Uint64(b[0x10:])+1) }), want: "are reachable from the root"},
	{name: "inode count one less", variant: 1, patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint64(b[0x10:], binary.LittleEndian.Uint64(b[0x10:])-1) }), want: "are reachable from the root"},
	{name: "inode count 0", patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint64(b[0x10:], 0) }), want: "claims 0 inodes"},
	{name: "root nid out of range", patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint16(b[0x0E:], 0xFFFF) }), want: "beyond image end"},
	{name: "root not a directory", patch: func(t *testing.T, img *Image, d []byte) []byte {
		binary.LittleEndian.PutUint16(d[disk.SuperOffset+0x0E:], uint16(nidOf(t, img, "hello.txt")))
		fixChecksum(d)
		return d
	}, want: "not a directory"},
	{name: "dirent nid out of range", patch: direntPatch(".", "hello.txt", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint64(d[off:], 1<<40)
	}), want: "beyond image end"},
	{name: "dirent nid huge", patch: direntPatch(".", "hello.txt", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint64(d[off:], 1<<63)
	}), want: "out of range"},
	{name: "directory contains itself", patch: direntPatch("many/sub_a", "deeper", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint64(d[off:], nidOf(t, img, "many/sub_a"))
	}), want: "reachable twice"},
	{name: "directory contains root", patch: direntPatch("many/sub_a", "deeper", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint64(d[off:], uint64(img.sb.RootNid))
	}), want: "reachable twice"},
	{name: "wrong dotdot", patch: direntPatch("many/sub_a", "..", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint64(d[off:], nidOf(t, img, "many/sub_b"))
	}), want: `".." names`},
	{name: "wrong dot", patch: direntPatch("many/sub_b", ".", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint64(d[off:], nidOf(t, img, "many/sub_a"))
	}), want: `"." names`},
	{name: "file type mismatch", patch: direntPatch(".", "hello.txt", func(t *testing.T, img *Image, d []byte, off int64) {
		d[off+10] = disk.FTSymlink
	}), want: "file type"},
	{name: "invalid file type", patch: direntPatch(".", "hello.txt", func(t *testing.T, img *Image, d []byte, off int64) {
		d[off+10] = 9
	}), want: "invalid file type"},
	{name: "bad first nameoff", patch: direntPatch(".", ".", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint16(d[off+8:], 13)
	}), want: "bad first nameoff"},
	{name: "nameoff beyond block", patch: direntPatch("many", "entry_100", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint16(d[off+8:], 0xFFF0)
	}), want: "bad nameoff"},
	{name: "nameoff decreasing", patch: direntPatch("many", "entry_100", func(t *testing.T, img *Image, d []byte, off int64) {
		binary.LittleEndian.PutUint16(d[off+8:], binary.LittleEndian.Uint16(d[off-4:])-1)
	}), want: "bad nameoff"},
	{name: "unsorted dirents", patch: direntPatch("many", "entry_100", func(t *testing.T, img *Image, d []byte, off int64) {
		// Swap the (equally long) names of entry_100 and entry_101.
		blk := off &^ 4095
		a := blk + int64(binary.LittleEndian.Uint16(d[off+8:]))
		b := blk + int64(binary.LittleEndian.Uint16(d[off+12+8:]))
		n := int64(len("entry_100"))
		tmp := slices.Clone(d[a : a+n])
		copy(d[a:a+n], d[b:b+n])
		copy(d[b:b+n], tmp)
	}), want: "not sorted"},
	{name: "slash in name", patch: direntPatch("many", "entry_100", func(t *testing.T, img *Image, d []byte, off int64) {
		d[off&^4095+int64(binary.LittleEndian.Uint16(d[off+8:]))+5] = '/'
	}), want: "invalid name"},
	{name: "block address out of range", patch: inoPatch("size_100000", func(in *disk.Inode) { in.U = 0x00FFFFFF }), want: "beyond"},
	{name: "no start block", patch: inoPatch("size_100000", func(in *disk.Inode) { in.U = disk.NullAddr }), want: "no start block"},
	{name: "huge i_size compact", patch: inoPatch("size_4096", func(in *disk.Inode) { in.Size = 0xFFFFFFFF }), want: "beyond"},
	{name: "huge i_size dir", patch: inoPatch("many", func(in *disk.Inode) { in.Size = 0xFFFFFFFF }), want: "crosses a block boundary"},
	{name: "huge i_size plain dir", patch: inoPatch("many", func(in *disk.Inode) { in.Size = 0xFFFFFFFF; in.Format = in.Format&1 | disk.LayoutFlatPlain<<1 }), want: "beyond"},
	{name: "huge i_size extended chunked", variant: 4, patch: inoPatch("size_100000", func(in *disk.Inode) { in.Size = 1 << 60 }), want: "chunk array"},
	{name: "i_size beyond int64", variant: 1, patch: inoPatch("size_4097", func(in *disk.Inode) { in.Size = 1 << 63 }), want: "too large"},
	{name: "i_size near int64 max", variant: 1, patch: inoPatch("size_4096", func(in *disk.Inode) { in.Size = 1<<63 - 1 }), want: "beyond 4 EiB", unsup: true},
	{name: "i_size 4 EiB flat", variant: 1, patch: inoPatch("size_4096", func(in *disk.Inode) { in.Size = 1 << 62 }), want: "beyond"},
	{name: "inline tail crosses block", patch: inoPatch("size_4097", func(in *disk.Inode) { in.Size = 4096 + 4000 }), want: "crosses a block boundary"},
	{name: "xattr count beyond image", patch: func(t *testing.T, img *Image, d []byte) []byte {
		nid := nidOf(t, img, "hello.txt")
		patchInode(t, img, d, nid, func(in *disk.Inode) {
			in.XattrICount = uint16((int64(len(d))-inodeOff(img, nid)-32-12)/4 + 2)
		})
		fixChecksum(d)
		return d
	}, want: "xattr area"},
	{name: "xattr count max", patch: inoPatch("hello.txt", func(in *disk.Inode) { in.XattrICount = 0xFFFF }), want: ""},
	{name: "shared xattr count beyond area", patch: func(t *testing.T, img *Image, d []byte) []byte {
		ino, _ := img.inode(nidOf(t, img, "hello.txt"))
		d[ino.xattrOff()+4] = 200
		fixChecksum(d)
		return d
	}, want: "shared xattr ids exceed"},
	{name: "shared xattr id out of range", patch: func(t *testing.T, img *Image, d []byte) []byte {
		ino, _ := img.inode(nidOf(t, img, "many/entry_000"))
		if d[ino.xattrOff()+4] == 0 {
			t.Fatal("mkfs did not share the xattr")
		}
		binary.LittleEndian.PutUint32(d[ino.xattrOff()+12:], 1<<30)
		fixChecksum(d)
		return d
	}, want: "shared xattr id"},
	{name: "xattr entry overflows area", patch: func(t *testing.T, img *Image, d []byte) []byte {
		ino, _ := img.inode(nidOf(t, img, "hello.txt"))
		pos := ino.xattrOff() + 12 + 4*int64(d[ino.xattrOff()+4])
		binary.LittleEndian.PutUint16(d[pos+2:], 60000)
		fixChecksum(d)
		return d
	}, want: "exceeds"},
	{name: "xattr unknown index", patch: func(t *testing.T, img *Image, d []byte) []byte {
		ino, _ := img.inode(nidOf(t, img, "hello.txt"))
		d[ino.xattrOff()+12+4*int64(d[ino.xattrOff()+4])+1] = 0x85
		fixChecksum(d)
		return d
	}, want: "name index"},
	{name: "nlink too high", patch: inoPatch("hello.txt", func(in *disk.Inode) { in.Nlink = 2 }), want: "nlink 2 but 1"},
	{name: "hardlink nlink too low", patch: inoPatch("size_4097", func(in *disk.Inode) { in.Nlink = 1 }), want: "nlink 1 but 3"},
	{name: "dir nlink", patch: inoPatch("many", func(in *disk.Inode) { in.Nlink = 3 }), want: "2 + 2 subdirectories"},
	{name: "empty symlink", patch: inoPatch("link_hello", func(in *disk.Inode) { in.Size = 0 }), want: "symlink"},
	{name: "special file with data", patch: inoPatch("fifo", func(in *disk.Inode) { in.Size = 10 }), want: "special file"},
	{name: "unknown format bits", patch: inoPatch("hello.txt", func(in *disk.Inode) { in.Format |= 0x10 }), want: "i_format", unsup: true},
	{name: "invalid layout", patch: inoPatch("hello.txt", func(in *disk.Inode) { in.Format = in.Format&1 | 6<<1 }), want: "layout"},
	{name: "compressed index beyond image", patch: inoPatch("size_4096", func(in *disk.Inode) {
		in.Format = in.Format&1 | disk.LayoutCompressedFull<<1
		in.Size = 1 << 31 // a compact inode's i_size is 32 bits
	}), want: "index ends at byte"},
	{name: "invalid mode", patch: inoPatch("hello.txt", func(in *disk.Inode) { in.Mode = 0o644 }), want: "file type"},
	{name: "extended reserved bits", variant: 1, patch: inoPatch("size_4096", func(in *disk.Inode) { in.Reserved06 = 1 }), want: "reserved"},
	{name: "chunk format 48bit", variant: 2, patch: inoPatch("size_100000", func(in *disk.Inode) { in.U |= disk.ChunkFormat48Bit }), want: "chunk format", unsup: true},
	{name: "chunk block out of range", variant: 2, patch: chunkPatch("size_100000", 3, func(b []byte) { binary.LittleEndian.PutUint32(b, 1<<28) }), want: "beyond"},
	{name: "blob chunk beyond blob", variant: 3, blobs: true, patch: chunkPatch("size_100000", 3, func(b []byte) { binary.LittleEndian.PutUint32(b[4:], 1<<28) }), want: "beyond blob end"},
	{name: "blob device id beyond table", variant: 3, patch: func(t *testing.T, img *Image, d []byte) []byte {
		binary.LittleEndian.PutUint16(d[disk.SuperOffset+0x56:], 2) // mask 3, but device 3 does not exist
		d = chunkPatch("size_100000", 0, func(b []byte) { binary.LittleEndian.PutUint16(b[2:], 3) })(t, img, d)
		binary.LittleEndian.PutUint64(d[int64(img.sb.DevtSlotOff)*128+128:], 0)
		fixChecksum(d)
		return d
	}, want: "device id 3"},
	{name: "mapped range inside primary", variant: 3, patch: func(t *testing.T, img *Image, d []byte) []byte {
		off := int64(img.sb.DevtSlotOff) * 128
		binary.LittleEndian.PutUint32(d[off+0x40:], 100) // blocks
		binary.LittleEndian.PutUint32(d[off+0x44:], 1)   // mapped_blkaddr
		fixChecksum(d)
		return d
	}, want: "inside the primary"},
	{name: "mapped ranges overlap", variant: 3, patch: func(t *testing.T, img *Image, d []byte) []byte {
		binary.LittleEndian.PutUint16(d[disk.SuperOffset+0x56:], 2)
		off := int64(img.sb.DevtSlotOff) * 128
		for i, mapped := range []uint32{1000, 1050} {
			binary.LittleEndian.PutUint32(d[off+int64(i)*128+0x40:], 100)
			binary.LittleEndian.PutUint32(d[off+int64(i)*128+0x44:], mapped)
		}
		fixChecksum(d)
		return d
	}, want: "overlap device 1"},
	{name: "device table overlaps superblock", variant: 3, patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint16(b[0x58:], 8) }), want: "overlaps the superblock"},
	{name: "device table beyond image", variant: 3, patch: sbPatch(func(b []byte) { binary.LittleEndian.PutUint16(b[0x56:], 0xFFFF) }), want: "device table"},
}

// chunkPatch lets f modify chunk entry k of file name.
func chunkPatch(name string, k int64, f func(entry []byte)) func(*testing.T, *Image, []byte) []byte {
	return func(t *testing.T, img *Image, d []byte) []byte {
		ino, err := img.inode(nidOf(t, img, name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := img.chunkLayout(ino)
		if err != nil || k >= c.count {
			t.Fatalf("chunk layout %+v %v", c, err)
		}
		f(d[c.base+k*c.unit:])
		fixChecksum(d)
		return d
	}
}

// TestCheckRejectsCorruption patches real mkfs.erofs images and checks
// that Check reports each defect (and the reader survives it) without
// large allocations.
func TestCheckRejectsCorruption(t *testing.T) {
	requireMkfs(t)
	images := map[int]*image{}
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			im := images[c.variant]
			if im == nil {
				_, im = buildVariant(t, variants[c.variant], treeOpts{linkToDir: true, special: true})
				images[c.variant] = im
			}
			img, err := Open(bytes.NewReader(im.data))
			if err != nil {
				t.Fatal(err)
			}
			data := c.patch(t, img, slices.Clone(im.data))
			opts := CheckOptions{VerifyData: true}
			if c.blobs {
				opts.Blobs = im.resolver(t)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err = Check(context.Background(), bytes.NewReader(data), opts)
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 32<<20 {
				t.Errorf("Check allocated %d MiB", grown>>20)
			}
			switch {
			case err == nil:
				t.Fatalf("Check accepted the image")
			case c.unsup && !errors.Is(err, ErrUnsupported), !c.unsup && !errors.Is(err, ErrCorrupt):
				t.Fatalf("Check: %v (unsupported=%v)", err, c.unsup)
			case !strings.Contains(err.Error(), c.want):
				t.Fatalf("Check: %v, want %q", err, c.want)
			}
			t.Log(err)
			runtime.ReadMemStats(&before)
			walkImage(data, opts.Blobs)
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 64<<20 {
				t.Errorf("walking the image allocated %d MiB", grown>>20)
			}
		})
	}
}

// walkImage opens data and uses every reader API on everything reachable,
// within byte, entry and time budgets, without and with verified blob
// reads. It must never panic or hang, whatever data holds.
func walkImage(data []byte, blobs BlobResolver) {
	walkImageWith(data, WithBlobs(blobs))
	walkImageWith(data, WithBlobs(blobs), WithVerifiedBlobs())
}

func walkImageWith(data []byte, opts ...Option) {
	img, err := Open(bytes.NewReader(data), opts...)
	if err != nil {
		return
	}
	defer img.Close()
	_ = img.Info()
	_ = img.Devices()
	img.ChunkTable()
	img.StartSet()
	deadline := time.Now().Add(2 * time.Second)
	entries, bytesLeft := 20000, int64(16<<20)
	seenDirs := map[uint64]bool{}
	queue := []string{"."}
	buf := make([]byte, 64<<10)
	for len(queue) > 0 && entries > 0 && time.Now().Before(deadline) {
		dir := queue[0]
		queue = queue[1:]
		if f, err := img.Open(dir); err == nil {
			if d, ok := f.(fs.ReadDirFile); ok {
				for i := 0; i < 100; i++ {
					if ents, err := d.ReadDir(7); err != nil || len(ents) == 0 {
						break
					}
				}
			}
			f.Close()
		}
		ents, _ := img.ReadDir(dir)
		for _, e := range ents {
			if entries--; entries <= 0 {
				break
			}
			p := e.Name()
			if dir != "." {
				p = dir + "/" + p
			}
			_ = e.Type()
			e.Info()
			img.Xattrs(p)
			fi, err := img.Lstat(p)
			if err != nil {
				continue
			}
			st := fi.Sys().(*Stat)
			switch {
			case fi.IsDir():
				if !seenDirs[st.Nid] {
					seenDirs[st.Nid] = true
					queue = append(queue, p)
				}
			case fi.Mode()&fs.ModeSymlink != 0:
				img.ReadLink(p)
				img.Stat(p)
			default:
				img.Chunks(p)
				f, err := img.Open(p)
				if err != nil {
					continue
				}
				ra := f.(interface {
					ReadAt([]byte, int64) (int, error)
				})
				for off := int64(0); off < fi.Size() && bytesLeft > 0; off += int64(len(buf)) {
					n, err := ra.ReadAt(buf, off)
					bytesLeft -= int64(n)
					if err != nil {
						break
					}
					if off > 1<<20 {
						break
					}
				}
				if fi.Size() < 1<<16 {
					img.ReadFile(p)
				}
				f.Close()
			}
		}
	}
}

// TestDirEntryTypeMismatch: an entry whose type is not its inode's is
// corrupt for a walker too (extract went by the entry's type), named as
// such rather than failing later as the wrong kind of read. An unknown
// type defers to the inode; one the format does not define is corrupt.
func TestDirEntryTypeMismatch(t *testing.T) {
	_, im := buildVariant(t, variants[0], treeOpts{})
	for _, tc := range []struct {
		name    string
		ftype   uint8
		wantErr string // "": the walk reads hello.txt as a regular file
	}{
		{"directory", disk.FTDir, "directory entry says directory, nid"},
		{"symlink", disk.FTSymlink, "directory entry says symlink, nid"},
		{"unknown", disk.FTUnknown, ""},
		{"undefined", disk.FTMax, "invalid file type 8"},
		{"undefined high", 0xff, "invalid file type 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Open(bytes.NewReader(im.data))
			if err != nil {
				t.Fatal(err)
			}
			data := direntPatch(".", "hello.txt", func(t *testing.T, img *Image, d []byte, off int64) {
				d[off+10] = tc.ftype
			})(t, img, slices.Clone(im.data))
			img, err = Open(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			var seen fs.FileMode = fs.ModeIrregular
			err = fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, err := d.Info()
				if err == nil && p == "hello.txt" {
					if d.Type() != fi.Mode().Type() {
						t.Errorf("entry type %v, inode type %v", d.Type(), fi.Mode().Type())
					}
					seen = fi.Mode().Type()
				}
				return err
			})
			if tc.wantErr != "" {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("walk: %v, want the mismatch named", err)
				}
				return
			}
			if err != nil || seen != 0 {
				t.Fatalf("walk: %v, hello.txt type %v; want a regular file", err, seen)
			}
		})
	}
}
