package ondemand

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// TestFileRunsCompressed maps file runs of a compressed image, whose
// table chunks hold pclusters of several files: a reader going forward
// through a file earns readahead to the last chunk holding that file's
// pclusters, not just to the end of the chunk it is in, and no further.
func TestFileRunsCompressed(t *testing.T) {
	const k = 64 << 10
	src := t.TempDir()
	words := strings.Fields("lazy pulling serves the kernel verified chunks of compressed pclusters from blobs in stores")
	rng := rand.New(rand.NewSource(3))
	for _, name := range []string{"a", "b", "c"} {
		var sb strings.Builder
		for sb.Len() < 1<<20 {
			sb.WriteString(words[rng.Intn(len(words))])
			sb.WriteByte(" \n"[rng.Intn(2)])
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	blobDir := t.TempDir()
	img, _, res := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: k, Compression: "lz4hc", PclusterSize: 16 << 10})
	if res.CompressedFiles != 3 {
		t.Fatalf("%d files compressed, want 3", res.CompressedFiles)
	}
	store, err := blobstore.NewLocal(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	defer reg.Close()
	im, err := reg.Register(ImageSpec{FSID: "z", Bootstrap: img, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	b := im.blobs[0]

	// Each file's encoded span in the blob, from the reader.
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	eimg, err := erofs.Open(f, erofs.WithSize(st.Size()))
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ start, end int64 }
	var spans []span
	err = eimg.FileChunks(context.Background(), 0, func(_ uint64, chunks []erofs.FileChunk) error {
		s := span{start: -1}
		for _, c := range chunks {
			if c.Encoded == 0 || c.Device != 1 {
				t.Fatalf("chunk %+v: want pclusters in the blob", c)
			}
			from := int64(c.BlkAddr) * BlockSize
			if s.start < 0 || from < s.start {
				s.start = from
			}
			s.end = max(s.end, from+c.Encoded)
		}
		spans = append(spans, s)
		return nil
	})
	if err != nil || len(spans) != 3 {
		t.Fatalf("FileChunks: %d files, %v", len(spans), err)
	}
	for _, s := range spans {
		first, last := b.chunkHolding(s.start), b.chunkHolding(s.end-1)
		if first < 0 || last <= first {
			t.Fatalf("file at [%d, %d): chunks %d..%d; want a file spanning several chunks", s.start, s.end, first, last)
		}
		wantEnd := b.chunks[last].off + alignUp(b.chunks[last].length)
		// A file whose first chunk starts with another file's
		// pclusters is in that file's run there; from its next chunk
		// on the run is its own.
		from := s.start
		if b.chunks[first].off < s.start {
			from = b.chunks[first+1].off
		}
		if got := b.runLimit(from); got != wantEnd {
			t.Errorf("file at [%d, %d): run from %d ends at %d, want %d (the end of its last chunk)", s.start, s.end, from, got, wantEnd)
		}
	}
}
