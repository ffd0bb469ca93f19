package metrics

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBackendMetricsMove opens stores of every kind through
// blobstore.Open with shared Stats, does work that succeeds, retries and
// fails, and scrapes /metrics over HTTP to see the series move.
func TestBackendMetricsMove(t *testing.T) {
	var stats blobstore.Stats
	reg := prometheus.NewPedanticRegistry()
	Register(reg, "test", &stats)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	scrape := func() string {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	before := scrape()
	for _, line := range []string{
		`erofsd_backend_requests_total{backend="oci"} 0`,
		`erofsd_backend_errors_total{backend="http",class="not_found"} 0`,
		"# HELP erofsd_backend_received_bytes_total",
	} {
		if !strings.Contains(before, line) {
			t.Fatalf("scrape lacks %q:\n%s", line, before)
		}
	}

	data := bytes.Repeat([]byte("erofsd"), 5000)
	d := blobstore.DigestOf(sha256.Sum256(data))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, d.Hex()), data, 0o644); err != nil {
		t.Fatal(err)
	}
	files := httptest.NewServer(http.StripPrefix("/blobs/", http.FileServer(http.Dir(dir))))
	defer files.Close()
	proxy := faultproxy.Start(t, faultproxy.Options{Target: files.URL, Schedule: faultproxy.Sequence(faultproxy.Status503)})

	ctx := context.Background()
	opts := blobstore.StoreOptions{HTTPOptions: blobstore.HTTPOptions{Backoff: time.Millisecond, Retries: 2}, Stats: &stats}
	for _, spec := range []string{dir, proxy.URL + "/blobs/"} {
		s, err := blobstore.Open(spec, opts)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Open(ctx, d)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		p := make([]byte, 1000)
		if _, err := b.ReadAt(ctx, p, 10); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, blobstore.DigestOf(sha256.Sum256(nil))); err == nil {
			t.Fatal("missing blob opened")
		}
	}
	// An oci:// store whose registry is not there: temporary errors.
	s, err := blobstore.Open("oci+http://127.0.0.1:1/r", opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, d); err == nil {
		t.Fatal("oci store without a registry opened a blob")
	}

	after := scrape()
	for _, line := range []string{
		`erofsd_backend_requests_total{backend="local"} 3`,
		`erofsd_backend_errors_total{backend="local",class="not_found"} 1`,
		`erofsd_backend_received_bytes_total{backend="local"} 1000`,
		`erofsd_backend_requests_total{backend="http"} 4`, // 503, retried HEAD, GET, missing HEAD
		`erofsd_backend_retries_total{backend="http"} 1`,
		`erofsd_backend_errors_total{backend="http",class="not_found"} 1`,
		`erofsd_backend_received_bytes_total{backend="http"} 1000`,
		`erofsd_backend_retries_total{backend="oci"} 2`,
		`erofsd_backend_errors_total{backend="oci",class="temporary"} 1`,
	} {
		if !strings.Contains(after, line+"\n") {
			t.Errorf("scrape lacks %q", line)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", grep(after, "erofsd_backend_"))
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
