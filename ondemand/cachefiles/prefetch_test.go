package cachefiles

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/ondemand"
	abi "github.com/erofsd/erofsd/ondemand/internal/cachefiles"
)

// TestPrefetchIntoOpenObject: an OPENed blob object is a prefetch
// target; prefetch fills its fd with the blob while READs still work;
// after CLOSE it is no target any more.
func TestPrefetchIntoOpenObject(t *testing.T) {
	src := t.TempDir()
	data := make([]byte, 3<<20+5000)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "f"), data, 0o644)
	blobDir := t.TempDir()
	img, blobs, _ := testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: 256 << 10})
	store, err := blobstore.NewLocal(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	reg := ondemand.NewRegistry()
	defer reg.Close()
	im, err := reg.Register(ondemand.ImageSpec{FSID: "p", Bootstrap: img, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel(2) // the copen and one READ_COMPLETE
	s := newServer(k, reg, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	k.push(abi.EncodeOpenMsg(1, 7, 70, im.VolumeKey(), im.Blobs[0].Digest.Hex()))
	k.push(abi.EncodeReadMsg(2, 7, 0, 4096))
	select {
	case <-k.done:
	case <-time.After(5 * time.Second):
		t.Fatal("OPEN and READ not answered")
	}
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	res, err := reg.Prefetch(pctx, im, ondemand.PrefetchOptions{Whole: true, TargetWait: time.Second})
	if err != nil || res.Done != res.Planned || res.Planned != int64(len(data)) {
		t.Fatalf("prefetch: %v %+v", err, res)
	}
	want, _ := os.ReadFile(blobs[0])
	k.mu.Lock()
	got := k.data[70]
	k.mu.Unlock()
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatal("the object's data differs from the blob")
	}
	if f := reg.Stats.Fetches.Load(); f != int64(im.Blobs[0].Chunks) {
		t.Errorf("%d fetches for %d chunks", f, im.Blobs[0].Chunks)
	}

	k.push(abi.EncodeCloseMsg(3, 7))
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats.OpenObjects.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	_, err = reg.Prefetch(ctx, im, ondemand.PrefetchOptions{Whole: true, TargetWait: 50 * time.Millisecond})
	if !errors.Is(err, ondemand.ErrNoTarget) {
		t.Fatalf("prefetch after CLOSE: %v, want ErrNoTarget", err)
	}
	cancel()
	<-served
}
