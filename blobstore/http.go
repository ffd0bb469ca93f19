package blobstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// HTTPOptions tune an HTTP store. Zero values pick the defaults.
type HTTPOptions struct {
	Timeout     time.Duration // per request (default 30 s)
	Retries     int           // extra attempts for temporary failures (default 3)
	Backoff     time.Duration // first retry delay, doubled each time, with jitter (default 200 ms)
	MaxInFlight int           // concurrent requests to this store (default 16)
	CAFile      string        // extra CA certificates (PEM) to trust
	Insecure    bool          // skip TLS verification (never the default)
	Client      *http.Client  // overrides everything above but retries and concurrency
}

// HTTP is a Store whose blob named d lives at BASE/<hex digest>, read
// with HTTP range requests.
type HTTP struct {
	base    *url.URL
	client  *http.Client
	opts    HTTPOptions
	tickets chan struct{}
}

// NewHTTP returns a store rooted at base (http:// or https://).
func NewHTTP(base string, opts HTTPOptions) (*HTTP, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("blob store URL %q: want http(s)://host/path", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Retries < 0 {
		opts.Retries = 0
	} else if opts.Retries == 0 {
		opts.Retries = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 200 * time.Millisecond
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 16
	}
	client := opts.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = opts.MaxInFlight
		tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.Insecure}
		if opts.CAFile != "" {
			pem, err := os.ReadFile(opts.CAFile)
			if err != nil {
				return nil, fmt.Errorf("CA file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s: no PEM certificates", opts.CAFile)
			}
			tlsConf.RootCAs = pool
		}
		tr.TLSClientConfig = tlsConf
		client = &http.Client{Transport: tr, Timeout: opts.Timeout}
	}
	return &HTTP{base: u, client: client, opts: opts, tickets: make(chan struct{}, opts.MaxInFlight)}, nil
}

func (h *HTTP) url(d Digest) string {
	u := *h.base
	u.Path += "/" + d.Hex()
	return u.String()
}

// Open asks for the blob's size (HEAD) and returns it.
func (h *HTTP) Open(ctx context.Context, d Digest) (Blob, error) {
	if d.IsZero() {
		return nil, fmt.Errorf("%w: empty digest", ErrBadDigest)
	}
	var size int64
	err := h.do(ctx, d, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, h.url(d), nil)
		if err != nil {
			return false, err
		}
		resp, err := h.client.Do(req)
		if err != nil {
			return transportError(err)
		}
		resp.Body.Close()
		if err := statusError(resp, d); err != nil {
			return errors.Is(err, ErrTemporary), err
		}
		if resp.ContentLength < 0 {
			return false, fmt.Errorf("%s: the server gives no Content-Length", d)
		}
		size = resp.ContentLength
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &httpBlob{h: h, d: d, size: size}, nil
}

// do runs attempt with retries and backoff while it reports a temporary
// failure, holding a ticket of the store's concurrency limit.
func (h *HTTP) do(ctx context.Context, d Digest, attempt func() (retry bool, err error)) error {
	select {
	case h.tickets <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-h.tickets }()
	delay := h.opts.Backoff
	var err error
	for i := 0; i <= h.opts.Retries; i++ {
		var retry bool
		if retry, err = attempt(); err == nil || !retry {
			return err
		}
		if i == h.opts.Retries {
			break
		}
		jittered := delay/2 + time.Duration(rand.Int64N(int64(delay)))
		select {
		case <-time.After(jittered):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay *= 2
	}
	return fmt.Errorf("%s: %d attempts: %w", d, h.opts.Retries+1, err)
}

func statusError(resp *http.Response, d Digest) error {
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
		return nil
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w", d, ErrNotFound)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s: HTTP %d: %w", d, resp.StatusCode, ErrUnauthorized)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s: %w", d, ErrOutOfRange)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return fmt.Errorf("%s: HTTP %d: %w", d, resp.StatusCode, ErrTemporary)
	}
	return fmt.Errorf("%s: unexpected HTTP %d", d, resp.StatusCode)
}

type httpBlob struct {
	h    *HTTP
	d    Digest
	size int64
}

func (b *httpBlob) Size() int64  { return b.size }
func (b *httpBlob) Close() error { return nil }

// ReadAt reads [off, off+len(p)) with a Range request; a short body,
// a reset connection or a 5xx is retried.
func (b *httpBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off > b.size {
		return 0, fmt.Errorf("%s: offset %d of %d: %w", b.d, off, b.size, ErrOutOfRange)
	}
	want := min(int64(len(p)), b.size-off)
	if want == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	err := b.h.do(ctx, b.d, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.h.url(b.d), nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+want-1, 10))
		resp, err := b.h.client.Do(req)
		if err != nil {
			return transportError(err)
		}
		defer resp.Body.Close()
		if err := statusError(resp, b.d); err != nil {
			return errors.Is(err, ErrTemporary), err
		}
		body := io.Reader(resp.Body)
		if resp.StatusCode == http.StatusOK {
			// The server ignored the range: skip to the offset.
			if _, err := io.CopyN(io.Discard, body, off); err != nil {
				return true, fmt.Errorf("%w: %v", ErrTemporary, err)
			}
		}
		if _, err := io.ReadFull(body, p[:want]); err != nil {
			return true, fmt.Errorf("%w: short body at %d: %v", ErrTemporary, off, err)
		}
		return false, nil
	})
	if err != nil {
		return 0, err
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// transportError classifies a failed request: TLS verification failures
// and cancellation are final; connection errors and timeouts are
// temporary and retried.
func transportError(err error) (retry bool, _ error) {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.Is(err, context.Canceled):
		return false, err
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
		return false, fmt.Errorf("%w: TLS verification failed (pass a CA file, or insecure only for tests): %v", ErrUnauthorized, err)
	}
	return true, fmt.Errorf("%w: %v", ErrTemporary, err)
}

// OpenStore returns the store named by spec: a directory path (or
// file:///path) for a local store, or an http(s):// URL.
func OpenStore(spec string, opts HTTPOptions) (Store, error) {
	switch {
	case strings.HasPrefix(spec, "http://"), strings.HasPrefix(spec, "https://"):
		return NewHTTP(spec, opts)
	case strings.HasPrefix(spec, "file://"):
		return NewLocal(strings.TrimPrefix(spec, "file://"))
	}
	return NewLocal(spec)
}
