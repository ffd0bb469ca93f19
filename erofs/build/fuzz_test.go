package build

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// FuzzAddTar feeds arbitrary bytes to the tar input. Whatever the input,
// building must end in an image or an error, never a panic, and must not
// allocate from sizes it is told.
func FuzzAddTar(f *testing.F) {
	f.Add(makeTar(f, []tarEntry{reg("a", "hello"), reg("d/b", "world")}))
	f.Add(makeTar(f, []tarEntry{
		{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "d/.wh..wh..opq"}},
		{hdr: tar.Header{Name: "d/.wh.x"}},
		reg("d/f", "data"),
		{hdr: tar.Header{Name: "d/h", Typeflag: tar.TypeLink, Linkname: "d/f"}},
		{hdr: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "/abs/target"}},
		{hdr: tar.Header{Name: "c", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "x", PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}}, body: "z"},
	}))
	f.Add(makeTar(f, []tarEntry{reg("../escape", "x")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if declaredSize(data) > 64<<20 {
			// Legitimate but slow by design: a sparse entry may claim
			// terabytes of zeros, and every byte is looked at.
			t.Skip("declares more than 64 MiB of file data")
		}
		fuzzBuild(t, data, Options{ChunkSize: 4096})
		// Compression reads holes as zeros: only modest sizes.
		if declaredSize(data) <= 4<<20 {
			fuzzBuild(t, data, Options{ChunkSize: 4096, Compression: "lz4"})
		}
	})
}

func fuzzBuild(t *testing.T, data []byte, opts Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := New(discardAt{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	if err := b.AddTar(ctx, bytes.NewReader(data), TarOptions{}); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%q: tar input of %d bytes took over 5 s", opts.Compression, len(data))
		}
		return
	}
	if _, err := b.Finish(ctx); err != nil && !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%q: Finish after a successful AddTar: %v", opts.Compression, err)
	}
}

// declaredSize sums the logical sizes of the entries a tar stream names.
func declaredSize(data []byte) int64 {
	var total int64
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err != nil {
			return total
		}
		if hdr.Size > 0 {
			total += hdr.Size
		}
		if total < 0 || total > 1<<40 {
			return 1 << 40
		}
	}
}
