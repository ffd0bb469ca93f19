package erofs

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// TestFscacheLinux61 checks which layouts the report calls unsafe for
// Linux 6.1's fscache mode: a null chunk with data after it in the same
// file, and nothing else.
func TestFscacheLinux61(t *testing.T) {
	const chunk = 64 << 10
	data := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i%251 + 1)
		}
		return p
	}
	layout := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	zeros := make([]byte, chunk)
	files := map[string][]byte{
		"hole-first":  layout(zeros, data(chunk), data(10)),
		"hole-middle": layout(data(chunk), zeros, zeros, data(4)),
		"hole-last":   layout(data(chunk), zeros),
		"all-holes":   layout(zeros, zeros, zeros[:100]),
		"dense":       data(3*chunk + 7),
	}
	unsafe := map[string]bool{"hole-first": true, "hole-middle": true}
	for _, tc := range []struct {
		name  string
		blobs bool
		holes build.HolePolicy
		safe  bool
	}{
		{"self-contained sparse", false, build.HolesAuto, false},
		{"self-contained zero chunk", false, build.HolesZeroChunk, true},
		{"blob sparse", true, build.HolesSparse, false},
		{"blob default", true, build.HolesAuto, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, only := range []string{"", "hole-last", "all-holes", "dense", "hole-first", "hole-middle"} {
				src := t.TempDir()
				for name, content := range files {
					if only != "" && name != only {
						continue
					}
					if err := os.WriteFile(filepath.Join(src, name), content, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				opts := build.Options{ChunkSize: chunk, Holes: tc.holes}
				if tc.blobs {
					opts.BlobDir = t.TempDir()
				}
				path, _, _ := testimage.Build(t, src, opts)
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				img, err := Open(f)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := img.FscacheLinux61(context.Background())
				img.Close()
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				want := tc.safe || (only != "" && !unsafe[only])
				if rep.Safe() != want || !rep.Mountable {
					t.Errorf("files %q: report %+v, want safe=%v", only, rep, want)
				}
				if !want && (rep.HoleFile == "" || len(rep.Problems) == 0) {
					t.Errorf("files %q: unsafe without naming a file: %+v", only, rep)
				}
			}
		})
	}
}
