package ondemand

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/prefetchlist"
)

// TestStartPlan: the start set comes first in the plan, eager up to
// StartMax bytes and paced past it; StartBytes is the set's size.
func TestStartPlan(t *testing.T) {
	const k = 64 << 10
	src := t.TempDir()
	rng := rand.New(rand.NewSource(3))
	for _, name := range []string{"a", "b", "c", "d"} {
		data := make([]byte, k)
		rng.Read(data)
		os.WriteFile(filepath.Join(src, name), data, 0o644)
	}
	var list prefetchlist.List
	for _, name := range []string{"/d", "/b", "/c"} {
		list.Add(name, 0, 0)
	}
	blobDir := t.TempDir()
	img, _, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: k, PrefetchList: &list})
	store, err := blobstore.NewLocal(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	defer reg.Close()
	im, err := reg.Register(ImageSpec{FSID: "img1", Bootstrap: img, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if im.StartBytes() != 3*k {
		t.Fatalf("StartBytes %d, want %d", im.StartBytes(), 3*k)
	}
	for _, tc := range []struct {
		max   int64
		eager []bool
	}{
		{0, []bool{true, true, true, false}},
		{2 * k, []bool{true, true, false, false}},
	} {
		plan, _, err := im.prefetchPlan(PrefetchOptions{Start: true, StartMax: tc.max, Whole: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(plan) != 4 {
			t.Fatalf("plan of %d chunks, want 4", len(plan))
		}
		for i, p := range plan {
			if i < 3 && p.c.off != int64(i)*k {
				t.Errorf("start chunk %d at %d, want the front, in order", i, p.c.off)
			}
			if p.eager != tc.eager[i] {
				t.Errorf("StartMax %d: chunk %d eager %v, want %v", tc.max, i, p.eager, tc.eager[i])
			}
		}
	}
}

// TestStartSetLaterVersion: a start set of a version this daemon does not
// know is ignored, as a chunk-states section of one is: the image is
// served without them (the states, which follow the start set, cannot
// even be found), its chunks checked by digest.
func TestStartSetLaterVersion(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), bytes.Repeat([]byte{7}, 200<<10), 0o644)
	var list prefetchlist.List
	list.Add("/a", 0, 0)
	blobDir := t.TempDir()
	img, _, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: 64 << 10, PrefetchList: &list})
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	data[bytes.LastIndex(data, []byte("EROFSDSS"))+8] = 2
	os.WriteFile(img, data, 0o644)
	_, im, obj := serveBlob(t, ImageSpec{FSID: "img1", Bootstrap: img, Store: localStore(t, blobDir)})
	if im.StartBytes() != 0 || obj.blob.chained() {
		t.Fatalf("start set of %d bytes, chained %v: want neither", im.StartBytes(), obj.blob.chained())
	}
	if err := obj.Fill(context.Background(), 0, obj.Size(), newMemObject(t, obj.Size())); err != nil {
		t.Fatal(err)
	}
}
