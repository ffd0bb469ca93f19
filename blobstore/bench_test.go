package blobstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/testregistry"
)

// BenchmarkOCIRead reads a 256 MiB blob from the loopback registry:
// sequentially with 1 MiB ReadAt calls through the OCI store, and, for
// reference, with one plain GET of the whole blob (as curl would).
func BenchmarkOCIRead(b *testing.B) {
	const size = 256 << 20
	reg := testregistry.Start(b, testregistry.Options{})
	data := randomBlob(6, size)
	d := pushBlob(b, reg, "bench/blob", data)
	data = nil
	ctx := context.Background()

	b.Run("ReadAt-1MiB", func(b *testing.B) {
		o := mustOCI(b, reg.Host+"/bench/blob", OCIOptions{PlainHTTP: true})
		blob, err := o.Open(ctx, d)
		if err != nil {
			b.Fatal(err)
		}
		p := make([]byte, 1<<20)
		b.SetBytes(size)
		b.ResetTimer()
		for range b.N {
			for off := int64(0); off < size; off += int64(len(p)) {
				if _, err := blob.ReadAt(ctx, p, off); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	// The registry's own cost per request: the same 1 MiB ranges with
	// bare http.Client GETs, no store.
	b.Run("range-GET-1MiB", func(b *testing.B) {
		url := reg.URL() + "/v2/bench/blob/blobs/" + d.String()
		p := make([]byte, 1<<20)
		b.SetBytes(size)
		for range b.N {
			for off := 0; off < size; off += len(p) {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+len(p)-1))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, err = io.ReadFull(resp.Body, p)
				resp.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("single-GET", func(b *testing.B) {
		url := reg.URL() + "/v2/bench/blob/blobs/" + d.String()
		b.SetBytes(size)
		for range b.N {
			resp, err := http.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != size {
				b.Fatalf("%d bytes: %v", n, err)
			}
		}
	})
}
