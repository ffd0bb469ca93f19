package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
)

// TestOCIOpenRange streams ranges from the real registry: the bytes
// asked for, a 503 before the body retried, and a body cut short ending
// in io.ErrUnexpectedEOF rather than looking complete.
func TestOCIOpenRange(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	data := randomBlob(9, 1<<20)
	d := pushBlob(t, reg, "stream/repo", data)
	proxy := faultproxy.Start(t, faultproxy.Options{Target: reg.URL(), CutAfter: 5000})
	o := mustOCI(t, proxy.Host+"/stream/repo", OCIOptions{PlainHTTP: true, HTTPOptions: HTTPOptions{Backoff: time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := o.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	ro, ok := b.(RangeOpener)
	if !ok {
		t.Fatal("an OCI blob does not stream ranges")
	}
	read := func(off, n int64) ([]byte, error) {
		rc, err := ro.OpenRange(ctx, off, n)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	for _, r := range [][2]int64{{0, 1 << 20}, {4096, 100_000}, {1<<20 - 10, 10}} {
		got, err := read(r[0], r[1])
		if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Errorf("range %d+%d: %d bytes, %v", r[0], r[1], len(got), err)
		}
	}
	if _, err := read(1<<20-10, 11); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("past the end: %v, want ErrOutOfRange", err)
	}
	proxy.SetSchedule(faultproxy.Sequence(faultproxy.Status503))
	if got, err := read(0, 200_000); err != nil || !bytes.Equal(got, data[:200_000]) {
		t.Errorf("after a 503: %d bytes, %v", len(got), err)
	}
	for _, f := range []faultproxy.Fault{faultproxy.Truncate, faultproxy.Reset} {
		proxy.SetSchedule(faultproxy.Sequence(f))
		got, err := read(0, 200_000)
		if err == nil {
			t.Errorf("%v: the stream looked complete with %d bytes", f, len(got))
		}
		if !bytes.Equal(got, data[:len(got)]) {
			t.Errorf("%v: the bytes before the cut differ", f)
		}
	}
}

// TestDistrust: a host whose data failed verification is asked last,
// however many readers report it, and a success of a read already on
// its way to it does not make it preferred again.
func TestDistrust(t *testing.T) {
	mirror, upstream := &target{host: "mirror"}, &target{host: "upstream"}
	b := &remoteBlob{targets: []*target{mirror, upstream}}
	b.prefer.Store(mirror)
	if got := b.order()[0].host; got != "mirror" {
		t.Fatalf("first host %s, want the mirror", got)
	}
	b.Distrust("mirror")
	b.Distrust("mirror") // a second reader that got the same bad data
	if got := b.order()[0].host; got != "upstream" {
		t.Fatalf("after distrust, first host %s, want the upstream", got)
	}
	b.preferHost(mirror) // a read to the mirror that was in flight succeeds
	if got := b.order(); got[0].host != "upstream" || got[1].host != "mirror" {
		t.Fatalf("order %s, %s; want upstream, then the mirror", got[0].host, got[1].host)
	}
	b.Distrust("upstream") // both bad: still both asked
	if got := b.order(); len(got) != 2 {
		t.Fatalf("%d hosts in the order, want 2", len(got))
	}
}

// TestOpenSizedPassesShortMirror: a mirror whose copy of a blob is short
// (stale) is passed over when the caller needs the whole blob; the
// upstream, the real registry, serves it.
func TestOpenSizedPassesShortMirror(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	data := randomBlob(11, 256<<10)
	d := pushBlob(t, reg, "sized/repo", data)
	// The mirror claims a copy 4 KiB short; it serves nothing else.
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)-4096))
			return
		}
		if r.URL.Path == "/v2/" {
			return
		}
		http.NotFound(w, r)
	}))
	defer mirror.Close()
	o := mustOCI(t, reg.Host+"/sized/repo", OCIOptions{PlainHTTP: true, Mirrors: []string{mirror.URL}})
	ctx := context.Background()
	if b, err := o.Open(ctx, d); err != nil || b.Size() != int64(len(data))-4096 {
		t.Fatalf("plain open: %v; want the mirror's short size", err)
	}
	b, err := o.OpenSized(ctx, d, int64(len(data)))
	if err != nil {
		t.Fatalf("open of the whole blob: %v", err)
	}
	if b.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", b.Size(), len(data))
	}
	got := make([]byte, len(data))
	if _, err := b.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading the whole blob: %v", err)
	}
}

// TestStreamIdleTimeout: a stream's timeout bounds its progress, not its
// length. A range that keeps coming for longer than the timeout is read
// whole; one that stops for the timeout fails naming it, as a temporary
// error, with the bytes before the stop right; a response that does not
// start in time fails too.
func TestStreamIdleTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	data := randomBlob(12, 512<<10)
	d := DigestOf(sha256.Sum256(data))
	for _, tc := range []struct {
		name    string
		serve   func(w http.ResponseWriter, r *http.Request, body []byte)
		wantErr string // "": the whole range
	}{
		{"slow but steady", func(w http.ResponseWriter, r *http.Request, body []byte) {
			// 32 KiB every 60 ms: 16 pieces, about 1 s in all.
			w.WriteHeader(http.StatusPartialContent)
			for len(body) > 0 {
				n := min(len(body), 32<<10)
				w.Write(body[:n])
				w.(http.Flusher).Flush()
				body = body[n:]
				time.Sleep(60 * time.Millisecond)
			}
		}, ""},
		{"stalls", func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body[:100<<10])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, "no bytes for 300ms"},
		{"no response", func(w http.ResponseWriter, r *http.Request, body []byte) {
			<-r.Context().Done()
		}, "no response in 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodHead {
					w.Header().Set("Content-Length", strconv.Itoa(len(data)))
					return
				}
				var off, end int
				if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &off, &end); err != nil {
					http.Error(w, "want a range", http.StatusBadRequest)
					return
				}
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, end, len(data)))
				w.Header().Set("Content-Length", strconv.Itoa(end+1-off))
				tc.serve(w, r, data[off:end+1])
			}))
			defer srv.Close()
			h, err := NewHTTP(srv.URL+"/blobs/", HTTPOptions{Timeout: timeout, Retries: -1})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := h.Open(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			var got []byte
			rc, err := b.(RangeOpener).OpenRange(ctx, 4096, int64(len(data))-4096)
			if err == nil {
				got, err = io.ReadAll(rc)
				rc.Close()
			}
			elapsed := time.Since(start)
			if !bytes.Equal(got, data[4096:4096+len(got)]) {
				t.Fatalf("the %d bytes read are not the blob's", len(got))
			}
			if tc.wantErr == "" {
				if err != nil || len(got) != len(data)-4096 || elapsed < 2*timeout {
					t.Fatalf("read %d of %d bytes in %v: %v; want all, over more than the timeout", len(got), len(data)-4096, elapsed, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrTemporary) || elapsed > timeout+2*time.Second {
				t.Fatalf("after %v: %v; want %q, temporary", elapsed, err, tc.wantErr)
			}
		})
	}
}
