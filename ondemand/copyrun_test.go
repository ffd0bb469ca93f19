package ondemand

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
)

// memCopier is a memObject that also copies from files (FileCopier), in
// memory, and records each copy and whether the run's first chunk was
// finished when it began.
type memCopier struct {
	*memObject
	src        *blobSource
	first      int64
	copies     [][2]int64
	firstReady []bool
}

func (m *memCopier) CopyFrom(ctx context.Context, src *os.File, off, n int64, check func(data []byte) [][2]int64) error {
	m.src.mu.Lock()
	m.firstReady = append(m.firstReady, m.src.written[m.first])
	m.src.mu.Unlock()
	m.copies = append(m.copies, [2]int64{off, n})
	data := make([]byte, n)
	if _, err := src.ReadAt(data, off); err != nil {
		return err
	}
	for _, g := range check(data) {
		if err := m.WriteBlocks(data[g[0]-off:g[1]-off], g[0]); err != nil {
			return err
		}
	}
	return nil
}

// TestCopyRunInPieces: a run from a local store is copied in pieces of up
// to copyPiece, each finished before the next is copied, so that a reader
// of the run's first chunk does not wait for the whole run; every byte
// lands right.
func TestCopyRunInPieces(t *testing.T) {
	spec, blob := randomFileImage(t, 6<<20, 256<<10, 3)
	_, _, obj := serveBlob(t, spec)
	s := obj.blob
	m := &memCopier{memObject: newMemObject(t, obj.Size()), src: s, first: s.chunks[0].off}
	if err := obj.Fill(context.Background(), s.chunks[0].off, obj.Size()-s.chunks[0].off, m); err != nil {
		t.Fatal(err)
	}
	if len(m.copies) < 3 {
		t.Fatalf("copies %v: want the run in pieces of up to %d bytes", m.copies, copyPiece)
	}
	for i, c := range m.copies {
		if c[1] > copyPiece || (i > 0 && c[0] != m.copies[i-1][0]+m.copies[i-1][1]) {
			t.Fatalf("copies %v: want adjacent pieces of up to %d bytes", m.copies, copyPiece)
		}
		if i > 0 && !m.firstReady[i] {
			t.Fatalf("copy %d began before the first chunk was finished", i)
		}
	}
	end := m.copies[len(m.copies)-1][0] + m.copies[len(m.copies)-1][1]
	if !bytes.Equal(m.data[s.chunks[0].off:end], blob[s.chunks[0].off:end]) {
		t.Fatal("copied bytes differ from the blob")
	}
}

// TestCopyRunShortFirstChunk: a run that starts with a short file's tail
// (20 KiB, under minKernelCopy) before a 4 MiB chunk is still copied in
// the kernel: the tail goes with the chunk after it, not alone (which the
// copy refuses, sending the whole run through memory).
func TestCopyRunShortFirstChunk(t *testing.T) {
	src := t.TempDir()
	r := rand.New(rand.NewSource(3))
	a, b := make([]byte, 20<<10), make([]byte, 8<<20)
	r.Read(a)
	r.Read(b)
	os.WriteFile(filepath.Join(src, "a"), a, 0o644)
	os.WriteFile(filepath.Join(src, "b"), b, 0o644)
	blobDir := t.TempDir()
	img, _, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: 4 << 20})
	store, err := blobstore.NewLocal(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	_, _, obj := serveBlob(t, ImageSpec{FSID: "img1", Bootstrap: img, Store: store})
	s := obj.blob
	if len(s.chunks) < 2 || s.chunks[0].length >= minKernelCopy {
		t.Fatalf("chunks %+v: want a short one first", s.chunks)
	}
	m := &memCopier{memObject: newMemObject(t, obj.Size()), src: s, first: s.chunks[0].off}
	if err := obj.Fill(context.Background(), s.chunks[0].off, obj.Size()-s.chunks[0].off, m); err != nil {
		t.Fatal(err)
	}
	if len(m.copies) == 0 || m.copies[0][0] != s.chunks[0].off || m.copies[0][1] < minKernelCopy {
		t.Fatalf("copies %v: want the run copied from its short first chunk on, in pieces of at least %d bytes", m.copies, minKernelCopy)
	}
}

// TestFillAfterPanic: a fill whose write panics (the front end recovers
// it) leaves its chunk unclaimed: the next fill of it fetches it at once
// instead of waiting for a fetch nobody finishes.
func TestFillAfterPanic(t *testing.T) {
	spec, _ := buildImage(t, 64<<10)
	_, _, obj := serveBlob(t, spec)
	w := &panicOnce{memObject: newMemObject(t, obj.Size())}
	func() {
		defer func() { recover() }()
		obj.Fill(context.Background(), 0, BlockSize, w)
	}()
	if !w.panicked.Load() {
		t.Fatal("the write did not panic")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := obj.Fill(ctx, 0, BlockSize, w); err != nil {
		t.Fatalf("fill after a panicking one: %v", err)
	}
}
