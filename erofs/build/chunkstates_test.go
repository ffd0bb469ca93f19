package build

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/sha256chain"
	"github.com/erofsd/erofsd/prefetchlist"
)

// TestChunkStates checks that every chunk's recorded state is sha256's
// state over its blob up to the chunk, however the blob was laid out.
func TestChunkStates(t *testing.T) {
	var list prefetchlist.List
	list.Add("/f17", 0, 0)
	list.Add("lib", 0, 0)
	list.Add("/f05", 64<<10, 1)
	for _, tc := range []struct {
		name string
		src  func(t *testing.T) string
		opts Options
	}{
		{"in place", writeStartTree, Options{ChunkSize: 64 << 10}},
		{"start set", writeStartTree, Options{ChunkSize: 64 << 10, PrefetchList: &list}},
		{"dedupe and holes", writeTree, Options{ChunkSize: 4096}},
		{"packed small files", func(t *testing.T) string { src, _ := writeSmallFilesTree(t, 64<<10); return src }, Options{ChunkSize: 64 << 10, PackSmallFiles: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blobDir := t.TempDir()
			tc.opts.BlobDir = blobDir
			img, res := buildDir(t, tc.src(t), tc.opts)
			im, err := erofs.Open(bytes.NewReader(img), erofs.WithBlobs(erofs.DirBlobs(blobDir)))
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			table, err := im.ChunkTable()
			if err != nil {
				t.Fatal(err)
			}
			states, err := im.ChunkStates()
			if err != nil {
				t.Fatal(err)
			}
			if len(states) != len(table) || len(table) == 0 {
				t.Fatalf("%d states for %d chunks", len(states), len(table))
			}
			for i, e := range table {
				blob, err := os.ReadFile(filepath.Join(blobDir, res.Blobs[e.Device-1].Digest))
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				h.Write(blob[:int64(e.BlkAddr)*4096])
				want, err := sha256chain.Of(h)
				if err != nil {
					t.Fatal(err)
				}
				if states[i] != want {
					t.Fatalf("chunk %d (device %d block %d): state %x, want %x", i, e.Device, e.BlkAddr, states[i], want)
				}
			}
			if _, err := erofs.Check(t.Context(), bytes.NewReader(img), erofs.CheckOptions{VerifyData: true, Blobs: erofs.DirBlobs(blobDir)}); err != nil {
				t.Fatalf("check: %v", err)
			}
		})
	}
}

// Chunk states are a claim of the image: a damaged section is an error.
func TestChunkStatesHostile(t *testing.T) {
	img, _ := buildDir(t, writeStartTree(t), Options{ChunkSize: 64 << 10, BlobDir: t.TempDir()})
	hdr := bytes.LastIndex(img, []byte("EROFSDCS"))
	if hdr < 0 {
		t.Fatal("no chunk states in the image")
	}
	count := int(binary.LittleEndian.Uint64(img[hdr+0x10:]))
	if len(img) != hdr+64+32*count || count < 2 {
		t.Fatalf("%d chunk states do not end the image", count)
	}
	rehash := func(b []byte) {
		sum := sha256.Sum256(b[hdr+64:])
		copy(b[hdr+0x18:], sum[:])
	}
	for _, tt := range []struct {
		name  string
		edit  func(b []byte) []byte
		want  error
		match string
	}{
		{"entries changed", func(b []byte) []byte { b[hdr+64+40]++; return b }, erofs.ErrCorrupt, "sha256"},
		{"first state not initial", func(b []byte) []byte { b[hdr+64]++; rehash(b); return b }, erofs.ErrCorrupt, "initial"},
		{"one entry fewer", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[hdr+0x10:], uint64(count-1))
			b = b[:len(b)-32]
			rehash(b)
			return b
		}, erofs.ErrCorrupt, "entries for"},
		{"huge count", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[hdr+0x10:], 1<<40); return b }, erofs.ErrCorrupt, "fit"},
		{"cut short", func(b []byte) []byte { return b[:len(b)-1] }, erofs.ErrCorrupt, "fit"},
		{"version 2", func(b []byte) []byte { b[hdr+8] = 2; return b }, erofs.ErrUnsupported, "version"},
		{"no magic", func(b []byte) []byte { b[hdr] = 'X'; return b }, erofs.ErrNoChunkStates, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.edit(bytes.Clone(img))
			im, err := erofs.Open(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			_, err = im.ChunkStates()
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.match) {
				t.Fatalf("ChunkStates: %v, want %v with %q", err, tt.want, tt.match)
			}
			if _, err := im.ChunkTable(); err != nil {
				t.Fatalf("the chunk table is still fine: %v", err)
			}
		})
	}
	// A state that is wrong for its blob, and a blob whose last step
	// does not end in its tag, are found by Check with the data.
	t.Run("wrong state", func(t *testing.T) {
		blobDir := t.TempDir()
		img, _ := buildDir(t, writeStartTree(t), Options{ChunkSize: 64 << 10, BlobDir: blobDir})
		b := bytes.Clone(img)
		at := bytes.LastIndex(b, []byte("EROFSDCS"))
		b[at+64+32+5]++
		sum := sha256.Sum256(b[at+64:])
		copy(b[at+0x18:], sum[:])
		if _, err := erofs.Check(t.Context(), bytes.NewReader(b), erofs.CheckOptions{VerifyData: true, Blobs: erofs.DirBlobs(blobDir)}); !errors.Is(err, erofs.ErrCorrupt) || !strings.Contains(err.Error(), "chunk states") {
			t.Fatalf("Check: %v, want a chunk states error", err)
		}
	})
	t.Run("not the tag's blob", func(t *testing.T) {
		// A byte of the last chunk's padding: no chunk digest covers
		// it, the blob's sha256 does.
		blobDir := t.TempDir()
		img, res := buildDir(t, writeStartTree(t), Options{ChunkSize: 64 << 10, BlobDir: blobDir})
		im, err := erofs.Open(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		table, _ := im.ChunkTable()
		im.Close()
		last := table[len(table)-1]
		if last.Length%4096 == 0 {
			t.Fatal("the last chunk has no padding")
		}
		p := filepath.Join(blobDir, res.Blobs[0].Digest)
		blob, _ := os.ReadFile(p)
		blob[int64(last.BlkAddr)*4096+int64(last.Length)] = 1
		os.WriteFile(p, blob, 0o644)
		if _, err := erofs.Check(t.Context(), bytes.NewReader(img), erofs.CheckOptions{VerifyData: true, Blobs: erofs.DirBlobs(blobDir)}); !errors.Is(err, erofs.ErrCorrupt) || !strings.Contains(err.Error(), "not its tag") {
			t.Fatalf("Check: %v, want the blob's sha256 against its tag", err)
		}
	})
}
