package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryScheme prefixes a registry reference: oci://HOST[:PORT]/REPO[:TAG|@DIGEST].
const RegistryScheme = "oci://"

// ErrPlainHTTP is returned when a registry would be reached over plain
// HTTP without RemoteOptions.PlainHTTP.
var ErrPlainHTTP = errors.New("plain HTTP to a registry needs --plain-http")

// RemoteOptions say how to reach registries.
type RemoteOptions struct {
	// PlainHTTP talks HTTP, not HTTPS, to the registry. Never the
	// default, also not for loopback registries.
	PlainHTTP bool
	// Insecure skips TLS certificate verification. Never the default.
	Insecure bool
	// CAFile adds PEM CA certificates to the system's.
	CAFile string
	// Keychain finds credentials (default: authn.DefaultKeychain, which
	// reads ~/.docker/config.json and runs credential helpers).
	Keychain authn.Keychain
	// Transport is the base transport (default: a clone of
	// http.DefaultTransport with the TLS settings above).
	Transport http.RoundTripper
}

// ErrNoRegistry is returned for a reference that does not name its
// registry ("app:v1"): erofsd never falls back to Docker Hub on its own.
var ErrNoRegistry = errors.New("the reference names no registry")

// ParseReference parses a registry reference, with or without the
// oci:// prefix. The registry must be written out (a host with a dot or
// a port, or localhost): "docker.io/library/alpine:3", not "alpine:3".
// A missing tag means "latest".
func ParseReference(s string, o RemoteOptions) (name.Reference, error) {
	s = strings.TrimPrefix(s, RegistryScheme)
	host, _, _ := strings.Cut(s, "/")
	if !strings.Contains(s, "/") || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return nil, fmt.Errorf("image reference %q: %w (write it out, as in docker.io/library/alpine:3 or 127.0.0.1:5000/app:v1)", s, ErrNoRegistry)
	}
	opts := []name.Option{name.WithDefaultTag("latest")}
	if o.PlainHTTP {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", s, err)
	}
	return ref, nil
}

// Transport returns the HTTP transport these options describe.
func (o RemoteOptions) transport() (http.RoundTripper, error) {
	base := o.Transport
	if base == nil {
		tr, err := blobstore.NewTransport(o.CAFile, o.Insecure)
		if err != nil {
			return nil, err
		}
		base = tr
	}
	if o.PlainHTTP {
		return base, nil
	}
	return httpsOnly{base}, nil
}

// httpsOnly refuses plain-HTTP requests: go-containerregistry falls back
// to HTTP for loopback and private addresses on its own, which we allow
// only when asked.
type httpsOnly struct{ next http.RoundTripper }

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("%w: %s", ErrPlainHTTP, req.URL.Host)
	}
	return h.next.RoundTrip(req)
}

// Options returns go-containerregistry remote options for these settings.
func (o RemoteOptions) Options(ctx context.Context) ([]remote.Option, error) {
	tr, err := o.transport()
	if err != nil {
		return nil, err
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr), remote.WithAuthFromKeychain(kc), remote.WithUserAgent("erofsd")}, nil
}

// Location is a parsed SRC or DST of a conversion: a registry reference
// or an OCI image layout directory (with an optional tag).
type Location struct {
	Ref       name.Reference // registry
	LayoutDir string         // layout
	LayoutTag string         // the org.opencontainers.image.ref.name to pick or write
}

func (l Location) String() string {
	if l.Ref != nil {
		return l.Ref.Name()
	}
	if l.LayoutTag != "" {
		return l.LayoutDir + ":" + l.LayoutTag
	}
	return l.LayoutDir
}

// ParseLocation reads "oci://REF" or "REF" as a registry reference and an
// existing directory, or a path starting with "/" or ".", as an image
// layout; "DIR:TAG" names an image of the layout by tag.
func ParseLocation(s string, o RemoteOptions) (Location, error) {
	if strings.HasPrefix(s, RegistryScheme) {
		ref, err := ParseReference(s, o)
		return Location{Ref: ref}, err
	}
	looksLikePath := strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".")
	if st, err := os.Stat(s); (err == nil && st.IsDir()) || (looksLikePath && !strings.Contains(filepath.Base(s), ":")) {
		return Location{LayoutDir: s}, nil
	}
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		dir, tag := s[:i], s[i+1:]
		if st, err := os.Stat(dir); (err == nil && st.IsDir()) || looksLikePath {
			if tag == "" || strings.Contains(tag, "/") {
				return Location{}, fmt.Errorf("layout %q: bad tag %q", dir, tag)
			}
			return Location{LayoutDir: dir, LayoutTag: tag}, nil
		}
	}
	ref, err := ParseReference(s, o)
	return Location{Ref: ref}, err
}

// OpenSource returns the image or index at loc.
func OpenSource(ctx context.Context, loc Location, o RemoteOptions) (partial.Describable, error) {
	if loc.Ref != nil {
		opts, err := o.Options(ctx)
		if err != nil {
			return nil, err
		}
		desc, err := remote.Get(loc.Ref, opts...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", loc.Ref, err)
		}
		if desc.MediaType.IsIndex() {
			return desc.ImageIndex()
		}
		return desc.Image()
	}
	p, err := layout.FromPath(loc.LayoutDir)
	if err != nil {
		return nil, fmt.Errorf("image layout %s: %w", loc.LayoutDir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("image layout %s: %w", loc.LayoutDir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image layout %s: %w", loc.LayoutDir, err)
	}
	var picked []v1.Descriptor
	for _, d := range im.Manifests {
		if loc.LayoutTag == "" || d.Annotations[refNameAnnotation] == loc.LayoutTag {
			picked = append(picked, d)
		}
	}
	switch {
	case len(picked) == 0 && loc.LayoutTag != "":
		return nil, fmt.Errorf("image layout %s: no image tagged %q", loc.LayoutDir, loc.LayoutTag)
	case len(picked) == 0:
		return nil, fmt.Errorf("image layout %s: empty", loc.LayoutDir)
	case len(picked) > 1:
		return nil, fmt.Errorf("image layout %s: %d images; name one as DIR:TAG", loc.LayoutDir, len(picked))
	}
	if picked[0].MediaType.IsIndex() {
		return idx.ImageIndex(picked[0].Digest)
	}
	return idx.Image(picked[0].Digest)
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

// Write stores a converted image at loc and returns its digest.
func Write(ctx context.Context, loc Location, c *Converted, o RemoteOptions) (v1.Hash, error) {
	digest, err := c.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if loc.Ref != nil {
		opts, err := o.Options(ctx)
		if err != nil {
			return v1.Hash{}, err
		}
		if c.Index != nil {
			err = remote.WriteIndex(loc.Ref, c.Index, opts...)
		} else {
			err = remote.Write(loc.Ref, c.Image, opts...)
		}
		if err != nil {
			return v1.Hash{}, fmt.Errorf("pushing to %s: %w", loc.Ref, err)
		}
		return digest, nil
	}
	p, err := layout.FromPath(loc.LayoutDir)
	if err != nil {
		if p, err = layout.Write(loc.LayoutDir, empty.Index); err != nil {
			return v1.Hash{}, fmt.Errorf("image layout %s: %w", loc.LayoutDir, err)
		}
	}
	var lopts []layout.Option
	if loc.LayoutTag != "" {
		lopts = append(lopts, layout.WithAnnotations(map[string]string{refNameAnnotation: loc.LayoutTag}))
	}
	// A tag names one image: the new one replaces an older one of that
	// tag, and an untagged write replaces the same digest.
	matcher := match.Digests(digest)
	if loc.LayoutTag != "" {
		matcher = match.Annotation(refNameAnnotation, loc.LayoutTag)
	}
	if c.Index != nil {
		err = p.ReplaceIndex(c.Index, matcher, lopts...)
	} else {
		err = p.ReplaceImage(c.Image, matcher, lopts...)
	}
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image layout %s: %w", loc.LayoutDir, err)
	}
	return digest, nil
}

// Resolved is an erofsd image found in a registry.
type Resolved struct {
	Ref        name.Reference
	Repository name.Repository
	Digest     v1.Hash // of the image manifest
	Manifest   *Manifest
}

// Resolve finds the erofsd image ref names in its registry: a manifest,
// or the manifest for platform (default: the host's) of an index.
func Resolve(ctx context.Context, ref string, platform *v1.Platform, o RemoteOptions) (*Resolved, error) {
	r, err := ParseReference(ref, o)
	if err != nil {
		return nil, err
	}
	opts, err := o.Options(ctx)
	if err != nil {
		return nil, err
	}
	want := HostPlatform()
	if platform != nil {
		want = *platform
	}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	raw, digest := desc.Manifest, desc.Digest
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		var found *v1.Descriptor
		for i, d := range im.Manifests {
			if d.Platform != nil && platformMatches(*d.Platform, want) {
				found = &im.Manifests[i]
				break
			}
		}
		if found == nil {
			return nil, fmt.Errorf("%s: %w %s", r, ErrNoPlatform, want)
		}
		img, err := idx.Image(found.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		if raw, err = img.RawManifest(); err != nil {
			return nil, fmt.Errorf("%s@%s: %w", r.Context(), found.Digest, err)
		}
		digest = found.Digest
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	return &Resolved{Ref: r, Repository: r.Context(), Digest: digest, Manifest: m}, nil
}
