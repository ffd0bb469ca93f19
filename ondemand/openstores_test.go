package ondemand

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

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
