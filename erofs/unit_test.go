package erofs

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// dirBlock encodes names (already sorted) as one directory block of size n.
func dirBlock(n int, names ...string) []byte {
	b := make([]byte, n)
	off := len(names) * disk.DirentSize
	for i, name := range names {
		d := disk.Dirent{Nid: uint64(100 + i), NameOff: uint16(off), FileType: disk.FTRegFile}
		d.Encode(b[i*disk.DirentSize:])
		off += copy(b[off:], name)
	}
	return b
}

func TestParseDirBlock(t *testing.T) {
	long := strings.Repeat("x", 255)
	tests := []struct {
		name  string
		block []byte
		want  []string
		err   string
	}{
		{name: "padded", block: dirBlock(4096, ".", "..", "a", "bb"), want: []string{".", "..", "a", "bb"}},
		{name: "exact end", block: dirBlock(12*3+1+2+3, ".", "..", "ccc"), want: []string{".", "..", "ccc"}},
		{name: "255-byte name", block: dirBlock(4096, ".", "..", long), want: []string{".", "..", long}},
		{name: "256-byte name", block: dirBlock(4096, ".", "..", long+"y"), err: "name of 256 bytes"},
		{name: "empty last name", block: func() []byte {
			b := dirBlock(100, ".", "..", "z")
			b[12*3+3] = 0
			return b
		}(), err: "bad nameoff"},
		{name: "too short", block: []byte{1, 2, 3}, err: "too short"},
		{name: "zero nameoff", block: make([]byte, 4096), err: "bad first nameoff 0"},
		{name: "nameoff past block", block: func() []byte {
			b := dirBlock(4096, ".", "..")
			binary.LittleEndian.PutUint16(b[8:], 4096)
			return b
		}(), err: "bad first nameoff"},
		{name: "NUL inside a name", block: func() []byte {
			b := dirBlock(4096, ".", "..", "ab", "cd")
			b[12*4+3+1] = 0
			return b
		}(), err: "invalid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ents, err := parseDirBlock(tt.block, 1, 0, nil)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors_Is(err, ErrCorrupt) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range ents {
				got = append(got, string(e.name))
			}
			if strings.Join(got, "/") != strings.Join(tt.want, "/") {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestMkdev(t *testing.T) {
	for _, d := range [][2]uint32{{0, 0}, {1, 3}, {8, 1}, {259, 70000}, {4095, 0xfffff}} {
		if got, want := mkdev(d[0], d[1]), unix.Mkdev(d[0], d[1]); got != want {
			t.Errorf("mkdev(%d, %d) = %#x, want %#x", d[0], d[1], got, want)
		}
	}
}

func TestSpanSet(t *testing.T) {
	var s spanSet
	s.add(10, 20)
	s.add(30, 40)
	s.add(20, 25) // adjacent: merges
	if got := s.missing(0, 50); len(got) != 3 || got[0] != (span{0, 10}) || got[1] != (span{25, 30}) || got[2] != (span{40, 50}) {
		t.Fatalf("missing %v, set %v", got, s.s)
	}
	s.add(0, 100)
	if len(s.s) != 1 || s.s[0] != (span{0, 100}) || len(s.missing(5, 95)) != 0 {
		t.Fatalf("set %v", s.s)
	}
	s.add(200, 300)
	s.add(150, 160)
	if len(s.s) != 3 || s.s[1] != (span{150, 160}) {
		t.Fatalf("set %v", s.s)
	}
}

func TestOpenOptions(t *testing.T) {
	b, err := readSeed("flat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bytes.NewReader(b), WithSize(int64(len(b)-4096))); !errors_Is(err, ErrCorrupt) {
		t.Errorf("WithSize smaller than the image: %v", err)
	}
	if _, err := Open(bytes.NewReader(b), WithSize(-1)); err == nil {
		t.Error("negative size accepted")
	}
	if _, err := Open(nil); err == nil {
		t.Error("nil reader accepted")
	}
	// A reader without Size: bounds come from short reads.
	img, err := Open(struct{ readerAtOnly }{readerAtOnly{bytes.NewReader(b)}})
	if err != nil {
		t.Fatal(err)
	}
	if img.size != -1 {
		t.Fatalf("size %d", img.size)
	}
	if _, err := img.ReadFile("tail"); err != nil {
		t.Fatal(err)
	}
	info := img.Info()
	if info.BlockSize != 4096 || info.RootNid == 0 || !info.HasChecksum || info.Inodes == 0 {
		t.Errorf("info %+v", info)
	}
}

type readerAtOnly struct{ r *bytes.Reader }

func (r readerAtOnly) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(p, off) }

func readSeed(name string) ([]byte, error) {
	return os.ReadFile("testdata/" + name + ".erofs")
}

func TestFeatureNames(t *testing.T) {
	if got := featureNames(0x40 | 0x100 | 1<<20); got != "xattr_prefixes,metabox,bit20" {
		t.Fatal(got)
	}
}

func TestValidPath(t *testing.T) {
	for name, want := range map[string]bool{
		".": true, "a": true, "a/b": true, "caf\xe9": true, "a/\xff/b": true,
		"": false, "/a": false, "a/": false, "a//b": false, "./a": false, "a/.": false, "..": false, "a/../b": false,
	} {
		if got := validPath(name); got != want {
			t.Errorf("validPath(%q) = %v", name, got)
		}
	}
}
