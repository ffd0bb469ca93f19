package ondemand

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
)

func TestFetchBootstrap(t *testing.T) {
	spec, _ := buildImage(t, 64<<10)
	img, _ := os.ReadFile(spec.Bootstrap)
	d := blobstore.DigestOf(sha256.Sum256(img))
	storeDir := t.TempDir()
	os.WriteFile(filepath.Join(storeDir, d.Hex()), img, 0o644)
	store, _ := blobstore.NewLocal(storeDir)
	state := t.TempDir()
	ctx := context.Background()

	p, err := FetchBootstrap(ctx, store, d, state)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(img) {
		t.Fatal("fetched bootstrap differs")
	}
	// A second fetch reuses the verified local copy.
	os.Remove(filepath.Join(storeDir, d.Hex()))
	if p2, err := FetchBootstrap(ctx, store, d, state); err != nil || p2 != p {
		t.Fatalf("refetch: %s %v", p2, err)
	}

	// A store serving wrong bytes under the name: refused, nothing kept.
	bad := append([]byte{}, img...)
	bad[2000] ^= 1
	d2 := blobstore.DigestOf(sha256.Sum256(append(img, 'x')))
	os.WriteFile(filepath.Join(storeDir, d2.Hex()), bad, 0o644)
	if _, err := FetchBootstrap(ctx, store, d2, state); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("corrupt bootstrap: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, d2.Hex())); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("corrupt bootstrap kept")
	}
	if _, err := FetchBootstrap(ctx, store, blobstore.DigestOf(sha256.Sum256([]byte("none"))), state); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("missing bootstrap: %v", err)
	}
}
