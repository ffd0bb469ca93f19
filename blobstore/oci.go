package blobstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// OCIOptions configure an OCI registry store.
type OCIOptions struct {
	// HTTPOptions tune requests: timeout, retries, concurrency (shared
	// by the mirrors and the upstream), TLS (CAFile, Insecure), counters.
	HTTPOptions
	// PlainHTTP talks http:// to the upstream registry. Off by default:
	// https is never silently downgraded, not even for loopback hosts.
	PlainHTTP bool
	// Mirrors are tried in order before the upstream, which is tried
	// last (containerd's hosts.toml semantics). Each is HOST[:PORT]
	// (https) or http(s)://HOST[:PORT]; requests go to
	// /v2/<repo>/blobs/<digest>?ns=<upstream host> there. A mirror that
	// fails (not found, unauthorized, temporary, anything else) passes
	// the request on to the next; later retry rounds ask again only
	// hosts that failed temporarily.
	Mirrors []string
	// Keychain resolves credentials per host, mirrors included (default
	// authn.DefaultKeychain: ~/.docker/config.json, else
	// $DOCKER_CONFIG/config.json, with credential helpers).
	Keychain authn.Keychain
	// Auth, when set, is used for the upstream instead of Keychain
	// (mirrors still use Keychain: these credentials are the upstream's).
	Auth authn.Authenticator
}

// OCI is a Store over one repository of an OCI distribution registry:
// blobs are GET /v2/<repo>/blobs/<digest> with Range, sizes come from
// HEAD. Authentication (anonymous, basic, bearer tokens) is set up per
// host on first use, through go-containerregistry's transport.
type OCI struct {
	repo    name.Repository
	r       *remote
	targets []*target
}

// NewOCI returns a store for repo, "HOST[:PORT]/PATH" (an oci:// prefix
// is accepted). It does no network I/O: each host's auth handshake
// happens on the first request to it, and is tried again on a later
// request if it failed, so a registry that is briefly down at start does
// not stop a daemon.
func NewOCI(repo string, opts OCIOptions) (*OCI, error) {
	spec := strings.TrimPrefix(repo, "oci://")
	host, path, ok := strings.Cut(spec, "/")
	if !ok || host == "" || path == "" {
		return nil, fmt.Errorf("OCI repository %q: want HOST[:PORT]/REPO", repo)
	}
	reg, err := name.NewRegistry(host, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("OCI repository %q: %w", repo, err)
	}
	rep, err := name.NewRepository(path, name.WithDefaultRegistry(reg.RegistryStr()))
	if err != nil {
		return nil, fmt.Errorf("OCI repository %q: %w", repo, err)
	}
	if rep.RegistryStr() != reg.RegistryStr() {
		// The path's first component looks like a host of its own.
		return nil, fmt.Errorf("OCI repository %q: bad repository name %q", repo, path)
	}
	r, err := newRemote(opts.HTTPOptions)
	if err != nil {
		return nil, err
	}
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	o := &OCI{repo: rep, r: r}
	for _, m := range opts.Mirrors {
		// Mirrors get their own credentials from the keychain, never
		// Auth: those are the upstream's.
		h, err := o.newHost(m, "https", "?ns="+url.QueryEscape(reg.RegistryStr()), kc, nil)
		if err != nil {
			return nil, fmt.Errorf("mirror %q: %w", m, err)
		}
		o.targets = append(o.targets, h)
	}
	scheme := "https"
	if opts.PlainHTTP {
		scheme = "http"
	}
	h, err := o.newHost(scheme+"://"+reg.RegistryStr(), scheme, "", kc, opts.Auth)
	if err != nil {
		return nil, err
	}
	h.upstream = true
	o.targets = append(o.targets, h)
	return o, nil
}

// Stats returns the store's counters (those of HTTPOptions.Stats if set).
func (o *OCI) Stats() *BackendStats { return o.r.stats }

// Repository returns the repository as go-containerregistry names it.
func (o *OCI) Repository() name.Repository { return o.repo }

// Open asks the mirrors, then the upstream, for the blob's size and
// returns it opened where it was found; reads fall through the same way.
func (o *OCI) Open(ctx context.Context, d Digest) (Blob, error) {
	return o.r.open(ctx, d, o.targets, 0)
}

// OpenSized opens a blob of at least minSize bytes, passing over hosts
// (mirrors) whose copy is shorter (see SizedOpener).
func (o *OCI) OpenSized(ctx context.Context, d Digest, minSize int64) (Blob, error) {
	return o.r.open(ctx, d, o.targets, minSize)
}

// ociHost is one registry host (a mirror or the upstream) with its
// lazily built authenticating client.
type ociHost struct {
	o      *OCI
	reg    name.Registry
	scheme string
	query  string
	kc     authn.Keychain
	auth   authn.Authenticator

	mu     sync.Mutex
	client *http.Client
}

func (o *OCI) newHost(spec, defaultScheme, query string, kc authn.Keychain, auth authn.Authenticator) (*target, error) {
	scheme, hostPart := defaultScheme, spec
	if s, r, ok := strings.Cut(spec, "://"); ok {
		if s != "http" && s != "https" {
			return nil, fmt.Errorf("want http(s)://HOST[:PORT] or HOST[:PORT]")
		}
		scheme, hostPart = s, strings.TrimSuffix(r, "/")
	}
	if hostPart == "" || strings.ContainsAny(hostPart, "/?#@") {
		return nil, fmt.Errorf("want http(s)://HOST[:PORT] or HOST[:PORT]")
	}
	var opts []name.Option
	if scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(hostPart, append(opts, name.StrictValidation)...)
	if err != nil {
		return nil, err
	}
	h := &ociHost{o: o, reg: reg, scheme: scheme, query: query, kc: kc, auth: auth}
	return &target{host: reg.RegistryStr(), url: h.url, client: h.getClient, reset: h.reset}, nil
}

func (h *ociHost) url(d Digest) string {
	return h.scheme + "://" + h.reg.RegistryStr() + "/v2/" + h.o.repo.RepositoryStr() + "/blobs/" + d.String() + h.query
}

// getClient returns the host's client, doing the auth handshake (ping,
// and for bearer auth the token request) the first time, or again after
// a failed one.
func (h *ociHost) getClient(ctx context.Context) (*http.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.client != nil {
		return h.client, nil
	}
	host := h.reg.RegistryStr()
	auth := h.auth
	if auth == nil {
		var err error
		if auth, err = authn.Resolve(ctx, h.kc, h.reg); err != nil {
			return nil, fmt.Errorf("credentials for %s: %w: %v", host, ErrUnauthorized, err)
		}
	}
	hctx, cancel := context.WithTimeout(ctx, h.o.r.timeout)
	defer cancel()
	guard := &schemeGuard{host: host, scheme: h.scheme, inner: h.o.r.base}
	scope := h.o.repo.Scope(transport.PullScope)
	rt, err := transport.NewWithContext(hctx, h.reg, auth, guard, []string{scope})
	if err != nil {
		return nil, h.handshakeError(ctx, err)
	}
	h.client = &http.Client{Transport: rt, Timeout: h.o.r.timeout}
	return h.client, nil
}

func (h *ociHost) reset() {
	h.mu.Lock()
	h.client = nil
	h.mu.Unlock()
}

// handshakeError classifies a failed ping or token request like any
// failed request; a registry without the API (404) is not temporary.
func (h *ociHost) handshakeError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	what := "auth handshake with " + h.reg.RegistryStr()
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: no registry API here (HTTP 404): %v", what, err)
	}
	return transportError(what, err)
}

// schemeGuard sends every request to the registry host in its configured
// scheme. go-containerregistry pings loopback and private hosts over
// both https and http and switches to whichever answers; with the guard
// both pings use the configured scheme, so https is never downgraded
// unless PlainHTTP asks for it. Other hosts (token servers, storage
// backends that blobs redirect to) are not touched.
type schemeGuard struct {
	host, scheme string
	inner        http.RoundTripper
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == g.host && req.URL.Scheme != g.scheme {
		req = req.Clone(req.Context())
		req.URL.Scheme = g.scheme
	}
	return g.inner.RoundTrip(req)
}
