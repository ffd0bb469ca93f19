package ondemand

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
)

// TestCorruptMirrorFallsBackToUpstream: a registry mirror serving a
// corrupt copy of a blob does not make the image unreadable: the chunk
// fails its digest, and the retry goes to the upstream.
func TestCorruptMirrorFallsBackToUpstream(t *testing.T) {
	spec, blob := uniformImage(t)
	reg := testregistry.Start(t, testregistry.Options{})
	reg.PushBlob(t, "app", blob)
	// The mirror: the same registry behind a proxy flipping every body.
	mirror := faultproxy.Start(t, faultproxy.Options{Target: reg.URL(), FlipAt: 10, MaxFaults: 1000,
		Schedule: func(int, *http.Request) faultproxy.Fault { return faultproxy.Flip }})
	store, err := blobstore.NewOCI(reg.Host+"/app", blobstore.OCIOptions{PlainHTTP: true, Mirrors: []string{mirror.URL}})
	if err != nil {
		t.Fatal(err)
	}
	spec.Store = store
	r, _, obj := serveBlob(t, spec)
	m := newMemObject(t, obj.Size())
	if err := obj.Fill(context.Background(), 0, 64<<10, m); err != nil {
		t.Fatalf("a corrupt mirror made the read fail: %v", err)
	}
	if !bytes.Equal(m.data[:64<<10], blob[:64<<10]) {
		t.Fatal("content differs")
	}
	if r.Stats.DigestFailures.Load() == 0 || mirror.Faults(faultproxy.Flip) == 0 {
		t.Errorf("the mirror's corrupt copy was not served (%d flips, %d digest failures)", mirror.Faults(faultproxy.Flip), r.Stats.DigestFailures.Load())
	}
}
