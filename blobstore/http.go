package blobstore

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// HTTP is a Store whose blob named d lives at BASE/<hex digest>, read
// with HTTP range requests.
type HTTP struct {
	base   *url.URL
	r      *remote
	target *target
}

// NewHTTP returns a store rooted at base (http:// or https://). It does
// no network I/O.
func NewHTTP(base string, opts HTTPOptions) (*HTTP, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("blob store URL %q: want http(s)://host/path", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	r, err := newRemote(opts)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: r.base, Timeout: r.timeout}
	if opts.Client != nil {
		client = opts.Client
	}
	h := &HTTP{base: u, r: r}
	h.target = &target{
		upstream: true,
		host:     u.Host,
		url:      h.url,
		client:   func(context.Context) (*http.Client, error) { return client, nil },
	}
	return h, nil
}

func (h *HTTP) url(d Digest) string {
	u := *h.base
	u.Path += "/" + d.Hex()
	return u.String()
}

// Stats returns the store's counters (those of HTTPOptions.Stats if set).
func (h *HTTP) Stats() *BackendStats { return h.r.stats }

// Open asks for the blob's size (HEAD) and returns it.
func (h *HTTP) Open(ctx context.Context, d Digest) (Blob, error) {
	return h.r.open(ctx, d, []*target{h.target}, 0)
}

// OpenSized opens a blob of at least minSize bytes (see SizedOpener).
func (h *HTTP) OpenSized(ctx context.Context, d Digest, minSize int64) (Blob, error) {
	return h.r.open(ctx, d, []*target{h.target}, minSize)
}
