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
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// HTTPOptions tune a remote store (HTTP, and the transport of OCI
// registries). Zero values pick the defaults.
type HTTPOptions struct {
	Timeout     time.Duration // per request (default 30 s)
	Retries     int           // extra rounds for temporary failures (default 3; negative: none)
	Backoff     time.Duration // first retry delay, doubled each time, with jitter (default 200 ms)
	MaxInFlight int           // concurrent requests to this store (default 16)
	CAFile      string        // extra CA certificates (PEM) to trust
	Insecure    bool          // skip TLS verification (never the default)
	Client      *http.Client  // overrides everything above but retries and concurrency
	// Stats receives the store's counters; nil gives the store its own
	// (see the store's Stats method).
	Stats *BackendStats
}

// NewTransport returns a clone of http.DefaultTransport that verifies TLS
// (TLS 1.2 at least) against the system's CAs plus those in caFile, or not
// at all when insecure is set (never the default).
func NewTransport(caFile string, insecure bool) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	conf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificates", caFile)
		}
		conf.RootCAs = pool
	}
	tr.TLSClientConfig = conf
	return tr, nil
}

// remote is the request path every HTTP-based store shares: defaults,
// the TLS transport, the concurrency limit, retries with backoff and
// jitter, fallback across hosts, error classification and counters.
type remote struct {
	opts    HTTPOptions
	base    http.RoundTripper // TLS-configured; OCI wraps it with auth
	timeout time.Duration
	tickets chan struct{}
	stats   *BackendStats
}

func newRemote(opts HTTPOptions) (*remote, error) {
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
	r := &remote{opts: opts, timeout: opts.Timeout, tickets: make(chan struct{}, opts.MaxInFlight), stats: opts.Stats}
	if r.stats == nil {
		r.stats = new(BackendStats)
	}
	if c := opts.Client; c != nil {
		r.base, r.timeout = c.Transport, c.Timeout
		if r.base == nil {
			r.base = http.DefaultTransport
		}
		return r, nil
	}
	tr, err := NewTransport(opts.CAFile, opts.Insecure)
	if err != nil {
		return nil, err
	}
	tr.MaxIdleConnsPerHost = opts.MaxInFlight
	r.base = tr
	return r, nil
}

// target is one host a blob can be fetched from.
type target struct {
	upstream bool                                            // the origin, whose answers are final (mirrors' are not)
	host     string                                          // for messages
	url      func(d Digest) string                           // the blob's URL there
	client   func(ctx context.Context) (*http.Client, error) // may set up auth lazily
	// reset, if set, drops state the client was built from (resolved
	// credentials, tokens) after the host refused them, so the next
	// request resolves them again (a docker login in between counts).
	reset func()
}

// maxBackoff caps the retry delay, however many retries are asked for.
const maxBackoff = 10 * time.Second

// do runs op against targets in order, falling through to the next
// target when one fails, and repeats the round with backoff while some
// target failed temporarily; later rounds only ask the targets that
// failed temporarily (a mirror that said "not found" is not asked
// again). Each attempt holds one of the store's tickets (not while
// sleeping, so a backing-off read does not starve others). It returns
// the target that answered.
func (r *remote) do(ctx context.Context, targets []*target, op func(context.Context, *target) error) (*target, error) {
	delay := r.opts.Backoff
	errs := make([]error, len(targets))
	for round := 0; ; round++ {
		temporary, asked := false, 0
		for i, t := range targets {
			if errs[i] != nil && !errors.Is(errs[i], ErrTemporary) {
				continue // a final answer from this host
			}
			if asked > 0 {
				r.stats.Fallbacks.Add(1)
			}
			asked++
			select {
			case r.tickets <- struct{}{}:
			case <-ctx.Done():
				return nil, r.fail(ctx.Err())
			}
			r.stats.Requests.Add(1)
			err := op(ctx, t)
			<-r.tickets
			if err == nil {
				return t, nil
			}
			errs[i] = err
			if errors.Is(err, ErrUnauthorized) && t.reset != nil {
				t.reset()
			}
			if ctx.Err() != nil || (errors.Is(err, ErrOutOfRange) && targets[i].upstream) {
				// The caller gave up, or the upstream has no such
				// bytes; a mirror's answer is not final.
				return nil, r.fail(err)
			}
			temporary = temporary || errors.Is(err, ErrTemporary)
		}
		if !temporary || round == r.opts.Retries {
			return nil, r.fail(summarize(targets, errs, round+1))
		}
		r.stats.Retries.Add(1)
		jittered := delay/2 + time.Duration(rand.Int64N(int64(delay)))
		select {
		case <-time.After(jittered):
		case <-ctx.Done():
			return nil, r.fail(ctx.Err())
		}
		delay = min(2*delay, maxBackoff)
	}
}

func (r *remote) fail(err error) error {
	r.stats.countError(err)
	return err
}

// summarize returns the upstream's error (else the last host's: with
// mirrors the upstream's answer is the authoritative one), naming the
// others' failures in the message.
func summarize(targets []*target, errs []error, rounds int) error {
	last := errs[len(errs)-1]
	for i, t := range targets {
		if t.upstream && errs[i] != nil {
			last = errs[i] // the upstream's answer is the authoritative one
		}
	}
	var others []string
	for _, e := range errs {
		if e != nil && e != last {
			others = append(others, e.Error())
		}
	}
	suffix := ""
	if rounds > 1 {
		suffix = fmt.Sprintf(" (%d attempts)", rounds)
	}
	if len(others) > 0 {
		return fmt.Errorf("%w%s; also tried: %s", last, suffix, strings.Join(others, "; "))
	}
	if suffix != "" {
		return fmt.Errorf("%w%s", last, suffix)
	}
	return last
}

// head asks t for the blob's size.
func (r *remote) head(ctx context.Context, d Digest, t *target) (int64, error) {
	c, err := t.client(ctx)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, t.url(d), nil)
	if err != nil {
		return 0, fmt.Errorf("%s at %s: %w", d, t.host, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, transportError(fmt.Sprintf("%s at %s", d, t.host), err)
	}
	resp.Body.Close()
	if err := statusError(resp, d, t.host); err != nil {
		return 0, err
	}
	if resp.ContentLength < 0 {
		return 0, fmt.Errorf("%s at %s: the server gives no Content-Length", d, t.host)
	}
	return resp.ContentLength, nil
}

// get reads len(p) bytes at off from t with a Range request. A short
// body or a reset connection is a temporary failure.
func (r *remote) get(ctx context.Context, d Digest, t *target, p []byte, off int64) error {
	c, err := t.client(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url(d), nil)
	if err != nil {
		return fmt.Errorf("%s at %s: %w", d, t.host, err)
	}
	// http.Client keeps this header on redirects (to storage backends);
	// it drops Authorization when a redirect leaves the host.
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+int64(len(p))-1, 10))
	resp, err := c.Do(req)
	if err != nil {
		return transportError(fmt.Sprintf("%s at %s", d, t.host), err)
	}
	defer resp.Body.Close()
	if err := statusError(resp, d, t.host); err != nil {
		return err
	}
	if err := checkRange(resp, d, t.host, off); err != nil {
		return err
	}
	body := &countingReader{r: resp.Body, n: &r.stats.Bytes}
	if resp.StatusCode == http.StatusOK {
		// The server ignored the range: skip to the offset.
		if _, err := io.CopyN(io.Discard, body, off); err != nil {
			return fmt.Errorf("%s at %s: skipping to %d: %w: %v", d, t.host, off, ErrTemporary, err)
		}
	}
	if n, err := io.ReadFull(body, p); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s at %s: short body at %d (%d of %d bytes): %w: %v", d, t.host, off, n, len(p), ErrTemporary, err)
	}
	return nil
}

// checkRange refuses a partial answer that starts elsewhere than off: it
// would be read as the wrong bytes. Chunk digests above would catch it,
// but only after the whole fetch, and every retry would repeat it.
func checkRange(resp *http.Response, d Digest, host string, off int64) error {
	cr := resp.Header.Get("Content-Range")
	if resp.StatusCode != http.StatusPartialContent || cr == "" {
		return nil
	}
	var start int64
	if _, err := fmt.Sscanf(cr, "bytes %d-", &start); err != nil || start != off {
		return fmt.Errorf("%s at %s: asked for bytes from %d, got Content-Range %q", d, host, off, cr)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n interface{ Add(int64) int64 }
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func statusError(resp *http.Response, d Digest, host string) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusOK || code == http.StatusPartialContent:
		return nil
	case code == http.StatusNotFound:
		return fmt.Errorf("%s at %s: %w", d, host, ErrNotFound)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("%s at %s: HTTP %d: %w", d, host, code, ErrUnauthorized)
	case code == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s at %s: %w", d, host, ErrOutOfRange)
	case code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
		return fmt.Errorf("%s at %s: HTTP %d: %w", d, host, code, ErrTemporary)
	}
	return fmt.Errorf("%s at %s: unexpected HTTP %d", d, host, code)
}

// transportError classifies a failed request: TLS verification failures,
// a scheme mismatch, refused credentials (from a token server, through
// go-containerregistry's transport) and cancellation are final;
// connection errors, timeouts and 5xx from a token server are temporary
// and retried.
func transportError(what string, err error) error {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var te *transport.Error
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, http.ErrSchemeMismatch):
		// Retrying cannot help, and falling back to plain HTTP silently
		// would drop TLS: the user must ask for it.
		return fmt.Errorf("%s: %w (the server speaks plain HTTP; use it only if intended)", what, err)
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
		return fmt.Errorf("%s: %w: TLS verification failed (pass a CA file, or insecure only for tests): %v", what, ErrUnauthorized, err)
	case errors.As(err, &te):
		switch code := te.StatusCode; {
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return fmt.Errorf("%s: %w: %v", what, ErrUnauthorized, err)
		case code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
			return fmt.Errorf("%s: %w: %v", what, ErrTemporary, err)
		}
		return fmt.Errorf("%s: %v", what, err)
	}
	return fmt.Errorf("%s: %w: %v", what, ErrTemporary, err)
}

// remoteBlob is an opened blob of a remote store: reads go to the host
// that answered last, falling through to the others in their order.
type remoteBlob struct {
	r       *remote
	d       Digest
	size    int64
	targets []*target
	prefer  atomic.Pointer[target]

	mu         sync.Mutex
	distrusted map[*target]time.Time // until when a host's data is not wanted
}

// distrustFor is how long a host whose data failed verification is
// asked last.
const distrustFor = 10 * time.Minute

// order returns the targets to ask, in order: the preferred one first,
// hosts whose data failed verification last.
func (b *remoteBlob) order() []*target {
	p := b.prefer.Load()
	b.mu.Lock()
	var bad []*target
	for t, until := range b.distrusted {
		if time.Now().After(until) {
			delete(b.distrusted, t)
		} else {
			bad = append(bad, t)
		}
	}
	b.mu.Unlock()
	if len(b.targets) == 1 || (len(bad) == 0 && (p == nil || p == b.targets[0])) {
		return b.targets
	}
	out := make([]*target, 0, len(b.targets))
	if p != nil && !slices.Contains(bad, p) {
		out = append(out, p)
	}
	for _, t := range b.targets {
		if t != p && !slices.Contains(bad, t) {
			out = append(out, t)
		}
	}
	for _, t := range b.targets {
		if slices.Contains(bad, t) {
			out = append(out, t)
		}
	}
	return out
}

// preferHost remembers the host that answered, unless its data is
// distrusted.
func (b *remoteBlob) preferHost(t *target) {
	b.mu.Lock()
	_, bad := b.distrusted[t]
	b.mu.Unlock()
	if !bad {
		b.prefer.Store(t)
	}
}

// ReadAtFrom reads like ReadAt and names the host that answered.
func (b *remoteBlob) ReadAtFrom(ctx context.Context, p []byte, off int64) (int, string, error) {
	n, t, err := b.readAt(ctx, p, off)
	if t == nil {
		return n, "", err
	}
	return n, t.host, err
}

// Distrust asks host last for a while: the caller found its data wrong
// (a chunk failed its digest), as a stale or corrupt mirror serves it.
func (b *remoteBlob) Distrust(host string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.targets {
		if t.host == host && len(b.targets) > 1 {
			if b.distrusted == nil {
				b.distrusted = map[*target]time.Time{}
			}
			b.distrusted[t] = time.Now().Add(distrustFor)
			b.prefer.CompareAndSwap(t, nil)
		}
	}
}

func (b *remoteBlob) Size() int64  { return b.size }
func (b *remoteBlob) Close() error { return nil }

func (b *remoteBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, _, err := b.readAt(ctx, p, off)
	return n, err
}

func (b *remoteBlob) readAt(ctx context.Context, p []byte, off int64) (int, *target, error) {
	if off < 0 || off > b.size {
		return 0, nil, fmt.Errorf("%s: offset %d of %d: %w", b.d, off, b.size, ErrOutOfRange)
	}
	want := min(int64(len(p)), b.size-off)
	if want == 0 {
		if len(p) == 0 {
			return 0, nil, nil
		}
		return 0, nil, io.EOF
	}
	t, err := b.r.do(ctx, b.order(), func(ctx context.Context, t *target) error {
		return b.r.get(ctx, b.d, t, p[:want], off)
	})
	if err != nil {
		return 0, nil, err
	}
	b.preferHost(t)
	if want < int64(len(p)) {
		return int(want), t, io.EOF
	}
	return int(want), t, nil
}

// OpenRange streams [off, off+n) from the first host that answers; the
// request is retried like ReadAt until the response starts, after which a
// failure ends the stream with an error for the caller to handle (it
// knows which bytes it already has). The stream holds no ticket of the
// concurrency limit: callers bound how many they keep open.
func (b *remoteBlob) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n <= 0 || off+n > b.size {
		return nil, fmt.Errorf("%s: range %d+%d of %d: %w", b.d, off, n, b.size, ErrOutOfRange)
	}
	var body io.ReadCloser
	t, err := b.r.do(ctx, b.order(), func(ctx context.Context, t *target) error {
		var err error
		body, err = b.r.stream(ctx, b.d, t, off, n)
		return err
	})
	if err != nil {
		return nil, err
	}
	b.preferHost(t)
	return body, nil
}

// stream starts a Range request for [off, off+n) at t and returns its
// body, limited to n bytes and failing if it ends early.
//
// A stream is bounded by its progress, not its length: the client's
// timeout covers a whole request, body included, and would cut a long
// range on a slow link that keeps delivering. The response must start,
// and then every read bring bytes, within that timeout.
func (r *remote) stream(ctx context.Context, d Digest, t *target, off, n int64) (io.ReadCloser, error) {
	c, err := t.client(ctx)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("%s at %s", d, t.host)
	sctx, cancel := context.WithCancel(ctx)
	idle := newIdleTimer(c.Timeout, cancel)
	unlimited := *c
	unlimited.Timeout = 0
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, t.url(d), nil)
	if err != nil {
		idle.stop()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
	resp, err := unlimited.Do(req)
	if err != nil {
		idle.stop()
		if idle.fired() && ctx.Err() == nil {
			return nil, fmt.Errorf("%s: %w: no response in %v", what, ErrTemporary, c.Timeout)
		}
		return nil, transportError(what, err)
	}
	body := &idleBody{r: &countingReader{r: resp.Body, n: &r.stats.Bytes}, c: resp.Body, idle: idle, what: what}
	if err := statusError(resp, d, t.host); err != nil {
		body.Close()
		return nil, err
	}
	if err := checkRange(resp, d, t.host, off); err != nil {
		body.Close()
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		if _, err := io.CopyN(io.Discard, body, off); err != nil {
			body.Close()
			return nil, fmt.Errorf("%s: skipping to %d: %w: %v", what, off, ErrTemporary, err)
		}
	}
	return &exactBody{r: io.LimitReader(body, n), left: n, c: body}, nil
}

// idleTimer cancels a stream that brought no bytes for its timeout (0:
// never).
type idleTimer struct {
	timeout time.Duration
	timer   *time.Timer
	cancel  context.CancelFunc
	expired atomic.Bool
}

func newIdleTimer(timeout time.Duration, cancel context.CancelFunc) *idleTimer {
	it := &idleTimer{timeout: timeout, cancel: cancel}
	if timeout > 0 {
		it.timer = time.AfterFunc(timeout, func() {
			it.expired.Store(true)
			cancel()
		})
	}
	return it
}

// progress restarts the timeout after bytes came.
func (it *idleTimer) progress() {
	if it.timer != nil && !it.expired.Load() {
		it.timer.Reset(it.timeout)
	}
}

// fired reports whether the timeout ended the stream.
func (it *idleTimer) fired() bool { return it.expired.Load() }

// stop ends the timer and the stream's context.
func (it *idleTimer) stop() {
	if it.timer != nil {
		it.timer.Stop()
	}
	it.cancel()
}

// idleBody is a stream's body under its idleTimer: each read that brings
// bytes restarts it, and an end it caused is named as such.
type idleBody struct {
	r    io.Reader
	c    io.Closer
	idle *idleTimer
	what string
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.idle.progress()
	}
	if err != nil && err != io.EOF && b.idle.fired() {
		err = fmt.Errorf("%s: %w: no bytes for %v", b.what, ErrTemporary, b.idle.timeout)
	}
	return n, err
}

func (b *idleBody) Close() error {
	err := b.c.Close()
	b.idle.stop()
	return err
}

// exactBody turns an early end of a range body into io.ErrUnexpectedEOF.
type exactBody struct {
	r    io.Reader
	left int64
	c    io.Closer
}

func (e *exactBody) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (e *exactBody) Close() error { return e.c.Close() }

// open finds the first target that has the blob and returns it
// opened there.
func (r *remote) open(ctx context.Context, d Digest, targets []*target, minSize int64) (Blob, error) {
	if d.IsZero() {
		return nil, fmt.Errorf("%w: empty digest", ErrBadDigest)
	}
	var size int64
	t, err := r.do(ctx, targets, func(ctx context.Context, t *target) error {
		var err error
		size, err = r.head(ctx, d, t)
		if err == nil && size < minSize {
			// A host with a short copy (a stale mirror): the next one
			// may have the whole blob.
			err = fmt.Errorf("%s at %s: %d bytes, want at least %d", d, t.host, size, minSize)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	b := &remoteBlob{r: r, d: d, size: size, targets: targets}
	b.prefer.Store(t)
	return b, nil
}
