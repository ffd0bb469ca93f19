package ondemand

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
)

// TestOpenStores: opening an image's stores ahead asks an HTTP store for
// each blob's size once (HEAD), so that the first fill then costs one
// data request, not a HEAD and a GET; once the image is gone its stores
// are not opened again, even by an open that raced with its end.
func TestOpenStores(t *testing.T) {
	spec, blobPath := buildImage(t, 64<<10)
	var heads, gets atomic.Int64
	files := http.FileServer(http.Dir(filepath.Dir(blobPath)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodHead:
			heads.Add(1)
		case http.MethodGet:
			gets.Add(1)
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	store, err := blobstore.NewHTTP(srv.URL, blobstore.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec.Store = store
	reg, im, obj := serveBlob(t, spec)
	ctx := context.Background()
	for range 2 {
		if err := im.OpenStores(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if heads.Load() != 1 || gets.Load() != 0 {
		t.Fatalf("opening the stores twice: %d HEAD, %d GET requests; want 1 HEAD", heads.Load(), gets.Load())
	}
	m := newMemObject(t, obj.Size())
	if err := obj.Fill(ctx, 0, 4096, m); err != nil {
		t.Fatal(err)
	}
	blob, _ := os.ReadFile(blobPath)
	if heads.Load() != 1 || gets.Load() != 1 || !bytes.Equal(m.data[:4096], blob[:4096]) {
		t.Fatalf("first fill after opening: %d HEAD, %d GET requests; want no HEAD more and 1 GET", heads.Load(), gets.Load())
	}
	// An open racing with the image's end (a store taken before, opened
	// after) must not open the blob again: nothing would close it.
	stores := im.blobs[0].storeList()
	obj.Release()
	if err := reg.Unregister(spec.FSID, spec.DomainID); err != nil {
		t.Fatal(err)
	}
	if err := im.OpenStores(ctx); err != nil || heads.Load() != 1 {
		t.Fatalf("opening the stores of an unregistered image: %v, %d HEAD requests; want nothing done", err, heads.Load())
	}
	if _, err := stores[0].open(ctx, im.blobs[0]); !errors.Is(err, errStoreClosed) || heads.Load() != 1 {
		t.Fatalf("opening a store of an unregistered image: %v, %d HEAD requests; want %v and none more", err, heads.Load(), errStoreClosed)
	}
}

// TestOpenStoresDoesNotWait: opening ahead leaves a store a read is
// already opening to that read, so it ends as soon as it is cancelled
// (an unmount must not wait for a slow registry's HEAD).
func TestOpenStoresDoesNotWait(t *testing.T) {
	spec, blobPath := buildImage(t, 64<<10)
	files := http.FileServer(http.Dir(filepath.Dir(blobPath)))
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			select { // a slow registry
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer close(release)
	store, err := blobstore.NewHTTP(srv.URL, blobstore.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec.Store = store
	_, im, obj := serveBlob(t, spec)
	filled := make(chan error, 1)
	go func() { filled <- obj.Fill(context.Background(), 0, 4096, newMemObject(t, obj.Size())) }()
	// Wait until the fill's open holds the store (its HEAD waits).
	bs := im.blobs[0].storeList()[0]
	for deadline := time.Now().Add(5 * time.Second); bs.openMu.TryLock(); {
		bs.openMu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the fill did not start opening the store")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	im.OpenStores(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("OpenStores took %v with a read's open under way, cancelled after 100ms", d)
	}
	release <- struct{}{}
	if err := <-filled; err != nil {
		t.Fatalf("the read's fill: %v", err)
	}
}

// gatedStore holds every Open until gate is closed, and counts the
// blobs it opened that were closed.
type gatedStore struct {
	blobstore.Store
	entered chan struct{}
	gate    chan struct{}
	closes  atomic.Int64
}

func (s *gatedStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.gate
	b, err := s.Store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return &closeCounter{b, &s.closes}, nil
}

type closeCounter struct {
	blobstore.Blob
	n *atomic.Int64
}

func (c *closeCounter) Close() error { c.n.Add(1); return c.Blob.Close() }

// TestUnregisterDoesNotWaitForOpen: an image's end does not wait for a
// read's open of its store (a registry's HEAD that hangs), so it does not
// hold the registry's other work up; the open, once it returns, closes
// what it opened instead of leaving it open with no image to close it.
func TestUnregisterDoesNotWaitForOpen(t *testing.T) {
	spec, _ := buildImage(t, 64<<10)
	gs := &gatedStore{Store: spec.Store, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	spec.Store = gs
	reg, im, obj := serveBlob(t, spec)
	release := sync.OnceFunc(func() { close(gs.gate) })
	defer release()
	filled := make(chan error, 1)
	go func() { filled <- obj.Fill(context.Background(), 0, 4096, newMemObject(t, obj.Size())) }()
	select {
	case <-gs.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the fill did not start opening the store")
	}
	obj.Release()
	unregistered := make(chan error, 1)
	go func() { unregistered <- reg.Unregister(spec.FSID, spec.DomainID) }()
	select {
	case err := <-unregistered:
		if err != nil {
			t.Fatalf("unregister: %v", err)
		}
	case <-time.After(5 * time.Second):
		release()
		t.Fatalf("unregister still waiting 5 s for a store's open under way (%v)", <-unregistered)
	}
	if _, ok := reg.Lookup(spec.FSID, spec.DomainID); ok {
		t.Fatal("the image is still registered")
	}
	release()
	if err := <-filled; err == nil {
		t.Error("a fill of an unregistered image's store succeeded")
	}
	if n := gs.closes.Load(); n != 1 {
		t.Errorf("the blob opened after the image went was closed %d times, want 1", n)
	}
	if n := len(im.blobs[0].storeList()); n != 0 {
		t.Errorf("%d stores left on the blob", n)
	}
}
