package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// faultServer serves blobs from a map and injects faults: the first
// failN requests get 503, or a body cut short, as chosen.
type faultServer struct {
	blobs    map[string][]byte
	fail     atomic.Int32 // requests left to fail
	mode     string       // "503" or "short"
	requests atomic.Int32
	ranged   atomic.Int32
}

func (s *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	data, ok := s.blobs[strings.TrimPrefix(r.URL.Path, "/blobs/")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if s.fail.Add(-1) >= 0 {
		if s.mode == "503" {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if s.mode == "short" && r.Method == http.MethodGet {
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:10])
			return
		}
	}
	if r.Header.Get("Range") != "" {
		s.ranged.Add(1)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func newFaultServer(t *testing.T) (*faultServer, Digest, []byte, *HTTP) {
	t.Helper()
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	d := DigestOf(sha256.Sum256(data))
	fs := &faultServer{blobs: map[string][]byte{d.Hex(): data}}
	srv := httptest.NewServer(fs) // 127.0.0.1 only
	t.Cleanup(srv.Close)
	h, err := NewHTTP(srv.URL+"/blobs/", HTTPOptions{Backoff: time.Millisecond, Retries: 3})
	if err != nil {
		t.Fatal(err)
	}
	return fs, d, data, h
}

func TestHTTPRangeReads(t *testing.T) {
	fs, d, data, h := newFaultServer(t)
	ctx := context.Background()
	b, err := h.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(data)) {
		t.Fatalf("size %d", b.Size())
	}
	p := make([]byte, 5000)
	if n, err := b.ReadAt(ctx, p, 1234); n != 5000 || err != nil || !bytes.Equal(p, data[1234:6234]) {
		t.Fatalf("ReadAt: %d %v", n, err)
	}
	if n, err := b.ReadAt(ctx, p, int64(len(data))-100); n != 100 || !errors.Is(err, io.EOF) || !bytes.Equal(p[:100], data[len(data)-100:]) {
		t.Fatalf("ReadAt at the end: %d %v", n, err)
	}
	if fs.ranged.Load() != 2 {
		t.Fatalf("%d range requests, want 2", fs.ranged.Load())
	}
	if _, err := h.Open(ctx, DigestOf(sha256.Sum256([]byte("nope")))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
}

func TestHTTPRetries(t *testing.T) {
	for _, mode := range []string{"503", "short"} {
		t.Run(mode, func(t *testing.T) {
			fs, d, data, h := newFaultServer(t)
			ctx := context.Background()
			b, err := h.Open(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			// Two failures, then success: retried transparently.
			fs.mode = mode
			fs.fail.Store(2)
			p := make([]byte, 4096)
			if _, err := b.ReadAt(ctx, p, 8192); err != nil || !bytes.Equal(p, data[8192:12288]) {
				t.Fatalf("after 2 faults: %v", err)
			}
			// More failures than retries: a temporary error, bounded.
			fs.fail.Store(100)
			before := fs.requests.Load()
			_, err = b.ReadAt(ctx, p, 0)
			if !errors.Is(err, ErrTemporary) {
				t.Fatalf("after exhausting retries: %v", err)
			}
			if n := fs.requests.Load() - before; n != 4 {
				t.Fatalf("%d attempts, want 1 + 3 retries", n)
			}
		})
	}
}

func TestOpenStoreAndBadURLs(t *testing.T) {
	for _, bad := range []string{"ftp://x/y", "http://", "https:///path"} {
		if _, err := NewHTTP(bad, HTTPOptions{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s, err := Open(t.TempDir(), StoreOptions{}); err != nil {
		t.Fatal(err)
	} else if _, ok := s.(*Local); !ok {
		t.Fatalf("a directory gave %T", s)
	}
	if s, err := Open("http://127.0.0.1:1/blobs", StoreOptions{}); err != nil {
		t.Fatal(err)
	} else if _, ok := s.(*HTTP); !ok {
		t.Fatalf("a URL gave %T", s)
	}
	// TLS verification is on by default: a self-signed test server is refused.
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	h, _ := NewHTTP(srv.URL, HTTPOptions{Retries: -1})
	if _, err := h.Open(context.Background(), DigestOf(sha256.Sum256(nil))); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("self-signed server: %v", err)
	}
}

// TestHTTPWrongContentRange: a 206 for another range than asked is an
// error, not data.
func TestHTTPWrongContentRange(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1000)
	d := DigestOf(sha256.Sum256(data))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Length", "10")
			w.Header().Set("Content-Range", "bytes 0-9/1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:10])
		}
	}))
	defer srv.Close()
	h, err := NewHTTP(srv.URL, HTTPOptions{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	if _, err := b.ReadAt(context.Background(), p, 500); err == nil || !strings.Contains(err.Error(), "Content-Range") {
		t.Fatalf("wrong range accepted: %v", err)
	}
	if h.Stats().Retries.Load() != 0 || h.Stats().Other.Load() != 1 {
		t.Fatalf("retries %d, other errors %d", h.Stats().Retries.Load(), h.Stats().Other.Load())
	}
}
