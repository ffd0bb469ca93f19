package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestParseDigest(t *testing.T) {
	hex := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, s := range []string{hex, "sha256:" + hex} {
		d, err := ParseDigest(s)
		if err != nil || d.Hex() != hex || d.String() != "sha256:"+hex {
			t.Fatalf("%s: %v %v", s, d, err)
		}
	}
	for _, s := range []string{"", "sha256:", hex[:63], hex + "0", "sha256:" + hex[:62] + "AB", "../../../../etc/passwd" + hex[:42], "sha512:" + hex} {
		if _, err := ParseDigest(s); !errors.Is(err, ErrBadDigest) {
			t.Errorf("%q accepted (%v)", s, err)
		}
	}
}

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("blob data "), 1000)
	d := DigestOf(sha256.Sum256(data))
	if err := os.WriteFile(filepath.Join(dir, d.Hex()), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != int64(len(data)) {
		t.Fatalf("size %d", b.Size())
	}
	p := make([]byte, 100)
	if n, err := b.ReadAt(ctx, p, 5); n != 100 || err != nil || !bytes.Equal(p, data[5:105]) {
		t.Fatalf("ReadAt: %d %v", n, err)
	}
	if n, err := b.ReadAt(ctx, p, int64(len(data))-10); n != 10 || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt at end: %d %v", n, err)
	}
	if _, err := b.ReadAt(ctx, p, int64(len(data))+1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("ReadAt past end: %v", err)
	}
	other := DigestOf(sha256.Sum256([]byte("missing")))
	if _, err := s.Open(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
	if _, err := NewLocal(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("missing directory accepted")
	}
}
