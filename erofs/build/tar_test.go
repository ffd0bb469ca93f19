package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

type tarEntry struct {
	hdr  tar.Header
	body string
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func buildTar(t testing.TB, data []byte, opts Options) (*Result, error) {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	b, err := New(out, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	if err := b.AddTar(context.Background(), bytes.NewReader(data), TarOptions{}); err != nil {
		return nil, err
	}
	return b.Finish(context.Background())
}

func reg(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name}, body: body}
}

func TestHostileTars(t *testing.T) {
	tests := []struct {
		name    string
		entries []tarEntry
		want    error
	}{
		{"dotdot", []tarEntry{reg("../etc/passwd", "x")}, ErrUnsafePath},
		{"dotdot inside", []tarEntry{reg("a/../../b", "x")}, ErrUnsafePath},
		{"absolute", []tarEntry{reg("/etc/passwd", "x")}, ErrUnsafePath},
		{"hardlink escaping", []tarEntry{reg("a", "x"), {hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "../a"}}}, ErrUnsafePath},
		{"hardlink absolute", []tarEntry{reg("a", "x"), {hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}}, ErrUnsafePath},
		{"hardlink missing", []tarEntry{{hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "nope"}}}, ErrBadLink},
		{"hardlink to dir", []tarEntry{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}}, {hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "d"}}}, ErrBadLink},
		{"duplicate file", []tarEntry{reg("a", "x"), reg("a", "y")}, ErrDuplicate},
		{"duplicate dir", []tarEntry{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}}, {hdr: tar.Header{Name: "d", Typeflag: tar.TypeDir, Mode: 0o700}}}, ErrDuplicate},
		{"file over dir", []tarEntry{reg("d/x", "x"), reg("d", "y")}, ErrDuplicate},
		{"through symlink", []tarEntry{{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}, reg("l/passwd", "x")}, ErrNotDir},
		{"through file", []tarEntry{reg("f", "x"), reg("f/g", "y")}, ErrNotDir},
		{"whiteout dotdot", []tarEntry{reg("d/.wh...", "")}, ErrUnsafePath},
		{"long name", []tarEntry{reg(string(bytes.Repeat([]byte("n"), 256)), "x")}, ErrBadName},
		{"bad xattr namespace", []tarEntry{{hdr: tar.Header{Name: "f", PAXRecords: map[string]string{"SCHILY.xattr.os2.foo": "x"}}}}, ErrBadXattr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildTar(t, makeTar(t, tt.entries), Options{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTruncatedTar(t *testing.T) {
	data := makeTar(t, []tarEntry{reg("a", string(bytes.Repeat([]byte("z"), 5000)))})
	_, err := buildTar(t, data[:1024], Options{})
	if err == nil {
		t.Fatal("truncated tar accepted")
	}
	if _, err := buildTar(t, []byte("this is not a tar stream at all, just text padding.......")[:50], Options{}); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestCompressedTars(t *testing.T) {
	data := makeTar(t, []tarEntry{reg("a", "hello"), reg("b/c", "world")})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	var zs bytes.Buffer
	enc, _ := zstd.NewWriter(&zs)
	enc.Write(data)
	enc.Close()
	for name, in := range map[string][]byte{"plain": data, "gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		res, err := buildTar(t, in, Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.Files != 2 || res.Dirs != 2 || res.DataBytes != 10 {
			t.Fatalf("%s: %+v", name, res)
		}
	}
}

func TestWhiteoutsAndDirDeclaredAfterChildren(t *testing.T) {
	data := makeTar(t, []tarEntry{
		reg("d/x", "1"),
		{hdr: tar.Header{Name: "d/.wh..wh..opq"}},
		{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 5}},
		{hdr: tar.Header{Name: "e/.wh.gone"}},
		{hdr: tar.Header{Name: ".wh..wh.plnk"}},
	})
	b, err := New(discardAt{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddTar(context.Background(), bytes.NewReader(data), TarOptions{}); err != nil {
		t.Fatal(err)
	}
	d := b.tree.lookup([]string{"d"})
	if d == nil || d.mode&0o7777 != 0o700 || d.uid != 5 {
		t.Fatalf("dir attributes not applied: %+v", d)
	}
	if len(d.xattr) != 1 || d.xattr[0] != (xattr{opaqueXattr, "y"}) {
		t.Fatalf("opaque xattr lost: %+v", d.xattr)
	}
	wh := b.tree.lookup([]string{"e", "gone"})
	if wh == nil || fileType(wh.mode) != 3 || wh.rdev != 0 {
		t.Fatalf("whiteout not a 0:0 char device: %+v", wh)
	}
	if b.tree.lookup([]string{".wh..wh.plnk"}) != nil {
		t.Fatal("aufs metadata entry kept")
	}
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
