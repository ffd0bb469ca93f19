package erofstrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Format files as Linux 6.18 and 6.1 show them (6.1 calls the readahead
// event erofs_readpages, with the same fields).
const (
	readaheadFormat = `name: erofs_readahead
ID: 2027
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:dev_t dev;	offset:8;	size:4;	signed:0;
	field:erofs_nid_t nid;	offset:16;	size:8;	signed:0;
	field:unsigned long start;	offset:24;	size:8;	signed:0;
	field:unsigned int nrpage;	offset:32;	size:4;	signed:0;
	field:bool raw;	offset:36;	size:1;	signed:0;

print fmt: "dev = (%d,%d), nid = %llu, start = %lu nrpage = %u raw = %d", ((unsigned int) ((REC->dev) >> 20)), ((unsigned int) ((REC->dev) & ((1U << 20) - 1))), REC->nid, (unsigned long)REC->start, REC->nrpage, REC->raw
`
	readFolioFormat = `name: erofs_read_folio
ID: 2028
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:dev_t dev;	offset:8;	size:4;	signed:0;
	field:erofs_nid_t nid;	offset:16;	size:8;	signed:0;
	field:int dir;	offset:24;	size:4;	signed:1;
	field:unsigned long index;	offset:32;	size:8;	signed:0;
	field:int uptodate;	offset:40;	size:4;	signed:1;
	field:bool raw;	offset:44;	size:1;	signed:0;

print fmt: "dev = (%d,%d), nid = %llu, %s, index = %lu, uptodate = %d raw = %d", ((unsigned int) ((REC->dev) >> 20)), ((unsigned int) ((REC->dev) & ((1U << 20) - 1))), REC->nid, __print_symbolic(REC->dir, { 0, "FILE" }, { 1, "DIR" }), (unsigned long)REC->index, REC->uptodate, REC->raw
`
)

func TestLayoutOf(t *testing.T) {
	tests := []struct {
		name   string
		format string
		kind   int
		want   layout
		err    string
		noFld  bool // the error wraps errNoField
	}{
		{name: "readahead", format: readaheadFormat, kind: readahead,
			want: layout{Dev: field{8, 4}, Nid: field{16, 8}, Index: field{24, 8}, Count: field{32, 4}}},
		{name: "read_folio", format: readFolioFormat, kind: readFolio,
			want: layout{Dev: field{8, 4}, Nid: field{16, 8}, Index: field{32, 8}, Dir: field{24, 4}}},
		{name: "another layout", kind: readahead,
			format: "\tfield:erofs_nid_t nid;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:dev_t dev;\toffset:40;\tsize:4;\tsigned:0;\n" +
				"\tfield:unsigned int nrpage;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:unsigned long start;\toffset:24;\tsize:8;\tsigned:0;\n",
			want: layout{Dev: field{40, 4}, Nid: field{8, 8}, Index: field{24, 8}, Count: field{16, 4}}},
		{name: "readahead format read as read_folio", format: readaheadFormat, kind: readFolio, err: `"index"`, noFld: true},
		{name: "missing nrpage", kind: readahead, err: `"nrpage"`, noFld: true,
			format: strings.Replace(readaheadFormat, "nrpage;", "nr_pages;", 1)},
		{name: "missing dev", kind: readFolio, err: `"dev"`, noFld: true,
			format: strings.Replace(readFolioFormat, "dev_t dev;", "dev_t sdev;", 1)},
		{name: "empty", kind: readahead, err: `"dev"`, noFld: true},
		{name: "not an integer", kind: readahead, err: "want an integer",
			format: strings.Replace(readaheadFormat, "offset:24;\tsize:8;", "offset:24;\tsize:16;", 1)},
		{name: "no offset", kind: readahead, err: "want field, offset and size",
			format: strings.Replace(readaheadFormat, "offset:16;\t", "", 1)},
		{name: "bad offset", kind: readahead, err: "offset",
			format: strings.Replace(readaheadFormat, "offset:16;", "offset:x;", 1)},
		{name: "negative size", kind: readahead, err: "size",
			format: strings.Replace(readaheadFormat, "size:8;", "size:-8;", 1)},
		{name: "out of the record", kind: readahead, err: "out of",
			format: strings.Replace(readaheadFormat, "offset:16;", "offset:65535;", 1)},
		{name: "twice", kind: readahead, err: "twice",
			format: readaheadFormat + "\tfield:int nid;\toffset:40;\tsize:4;\tsigned:1;\n"},
		{name: "no name", kind: readahead, err: "type and a name",
			format: "\tfield:dev;\toffset:8;\tsize:4;\tsigned:0;\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := layoutOf([]byte(tt.format), tt.kind)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("layoutOf: %v, want an error with %q", err, tt.err)
				}
				if errors.Is(err, errNoField) != tt.noFld {
					t.Fatalf("layoutOf: %v: errors.Is(errNoField) = %v", err, !tt.noFld)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseFormatArrays(t *testing.T) {
	fields, err := parseFormat([]byte("\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:1;\n" +
		"\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]formatField{"comm": {8, 16, true}, "name": {24, 4, false}}
	if len(fields) != len(want) || fields["comm"] != want["comm"] || fields["name"] != want["name"] {
		t.Fatalf("got %+v, want %+v", fields, want)
	}
}

func FuzzParseFormat(f *testing.F) {
	f.Add([]byte(readaheadFormat))
	f.Add([]byte(readFolioFormat))
	f.Add([]byte("field:int a[;offset:1;size:1;signed:1;"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fields, err := parseFormat(data)
		if err != nil {
			return
		}
		for name, fl := range fields {
			if name == "" || strings.ContainsAny(name, " \t[;") || fl.Offset < 0 || fl.Size <= 0 || fl.Offset+fl.Size > maxRecord {
				t.Fatalf("field %q: %+v", name, fl)
			}
		}
		for _, kind := range []int{readahead, readFolio} {
			l, err := layoutOf(data, kind)
			if err != nil {
				continue
			}
			for _, fl := range []field{l.Dev, l.Nid, l.Index} {
				if fl.Size != 1 && fl.Size != 2 && fl.Size != 4 && fl.Size != 8 {
					t.Fatalf("layout %+v: size %d", l, fl.Size)
				}
			}
		}
	})
}

func TestKernelDev(t *testing.T) {
	tests := []struct {
		major, minor uint32
		want         uint32
		err          bool
	}{
		{0, 0, 0, false},
		{0, 47, 47, false},       // an anonymous device: file-backed and fscache mounts
		{7, 3, 7<<20 | 3, false}, // a loop device
		{259, 1 << 19, 259<<20 | 1<<19, false},
		{0, 1 << 20, 0, true}, // minor of 21 bits
		{1 << 12, 0, 0, true}, // major of 13 bits
	}
	for _, tt := range tests {
		got, err := KernelDev(unix.Mkdev(tt.major, tt.minor))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("KernelDev(%d:%d) = %#x, %v; want %#x, error %v", tt.major, tt.minor, got, err, tt.want, tt.err)
		}
	}
}

func TestDecodeEvent(t *testing.T) {
	b := []byte{
		1, 0, 0, 0, 0, 0, 0, 0, // ktime_ns
		0x2a, 0, 0, 0, 0, 0, 0, 0, // nid
		0, 1, 0, 0, 0, 0, 0, 0, // index
		16, 0, 0, 0, // count
		0, 0, 0, 0,
	}
	ev, ok := decodeEvent(b)
	if want := (Event{Time: 1, Nid: 42, Index: 256, Pages: 16}); !ok || ev != want {
		t.Fatalf("decodeEvent: %+v %v, want %+v", ev, ok, want)
	}
	if _, ok := decodeEvent(b[:31]); ok {
		t.Fatal("short record decoded")
	}
}

func TestParseDirent(t *testing.T) {
	rec := make([]byte, 24)
	binary.NativeEndian.PutUint64(rec, 5)
	binary.NativeEndian.PutUint16(rec[16:], 24)
	rec[18] = unix.DT_REG
	copy(rec[19:], "abc\x00")
	ino, typ, name, reclen, ok := parseDirent(rec)
	if !ok || ino != 5 || typ != unix.DT_REG || name != "abc" || reclen != 24 {
		t.Fatalf("parseDirent: %d %d %q %d %v", ino, typ, name, reclen, ok)
	}
	long := slices.Clone(rec)
	binary.NativeEndian.PutUint16(long[16:], 200)
	for _, bad := range [][]byte{rec[:18], rec[:20], long} {
		if _, _, _, _, ok := parseDirent(bad); ok {
			t.Errorf("parseDirent(%v) accepted", bad)
		}
	}
}

func TestStatMountNotErofs(t *testing.T) {
	if _, err := StatMount(t.TempDir()); !errors.Is(err, ErrNotErofs) {
		t.Fatalf("StatMount of a temporary directory: %v, want ErrNotErofs", err)
	}
}

// TestEventLayout reads format files from a made-up tracefs: the
// readahead event under its 6.1 name, and errors matching ErrUnsupported
// for a missing event or field.
func TestEventLayout(t *testing.T) {
	tracefs := t.TempDir()
	write := func(event, format string) {
		dir := filepath.Join(tracefs, "events", "erofs", event)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "format"), []byte(format), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := eventLayout(tracefs, readaheadEvents, readahead); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "no event erofs/erofs_readahead") {
		t.Fatalf("no event: %v", err)
	}
	write("erofs_readpages", strings.Replace(readaheadFormat, "erofs_readahead", "erofs_readpages", 1))
	name, l, err := eventLayout(tracefs, readaheadEvents, readahead)
	if err != nil || name != "erofs_readpages" || l.Count != (field{32, 4}) {
		t.Fatalf("6.1 name: %q %+v %v", name, l, err)
	}
	write("erofs_read_folio", strings.Replace(readFolioFormat, "int dir;", "int is_dir;", 1))
	_, _, err = eventLayout(tracefs, readFolioEvents, readFolio)
	if !errors.Is(err, ErrUnsupported) || !errors.Is(err, errNoField) || !strings.Contains(err.Error(), `erofs/erofs_read_folio: no such field "dir"`) {
		t.Fatalf("missing field: %v", err)
	}
}

func TestUnsupported(t *testing.T) {
	tests := []struct {
		err         error
		unsupported bool
	}{
		{fmt.Errorf("load: %w", unix.EPERM), true},
		{fmt.Errorf("map create: %w", ebpf.ErrNotSupported), true},
		{fmt.Errorf("tracepoint: %w", os.ErrNotExist), true},
		{fmt.Errorf("verifier: %w", unix.EINVAL), false},
	}
	for _, tt := range tests {
		err := unsupported("step", tt.err)
		if errors.Is(err, ErrUnsupported) != tt.unsupported || !errors.Is(err, tt.err) || !strings.Contains(err.Error(), "step") {
			t.Errorf("unsupported(%v) = %v", tt.err, err)
		}
	}
}
