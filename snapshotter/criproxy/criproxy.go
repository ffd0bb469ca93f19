// Package criproxy lets Kubernetes pull secrets reach erofsd. kubelet
// sends a pod's registry credentials with each CRI PullImage; containerd
// keeps them, and a remote snapshotter never sees them. Pointed at this
// proxy (kubelet --image-service-endpoint), kubelet's image calls go
// through erofsd: the proxy records each PullImage's credentials for the
// image's repository, in memory only, and forwards every call to
// containerd's CRI unchanged. erofsd then reads that repository's blobs
// with those credentials (Credentials is a keychain).
package criproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"google.golang.org/grpc"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Credentials are the registry credentials of the latest PullImage of
// each repository. It is an authn.Keychain for erofsd's registry
// requests: a repository it knows gets its credentials, anything else
// (a registry as a whole, an unknown repository) is anonymous, so it
// goes first in an authn.MultiKeychain.
type Credentials struct {
	// OnChange, if set before use, is called after each change (not
	// under a lock): erofsd hands a copy to its supervisor, so that a
	// restarted daemon keeps reading private images.
	OnChange func()

	mu     sync.Mutex
	byRepo map[string]authn.AuthConfig // by name.Repository.String()
	order  []string                    // repositories, oldest first
}

// MaxRepositories bounds the repositories remembered; the oldest is
// forgotten first (its next pull records it again).
const MaxRepositories = 4096

// NewCredentials returns an empty set.
func NewCredentials() *Credentials {
	return &Credentials{byRepo: map[string]authn.AuthConfig{}}
}

// repositoryKey names ref's repository as go-containerregistry does
// ("index.docker.io/library/nginx" for "nginx", as kubelet means it).
func repositoryKey(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	return r.Context().String(), nil
}

// Record remembers the credentials of a pull of ref; a pull without
// credentials forgets the repository's.
func (c *Credentials) Record(ref string, auth *rt.AuthConfig) error {
	key, err := repositoryKey(ref)
	if err != nil {
		return err
	}
	var cfg *authn.AuthConfig
	if auth != nil && (auth.Username != "" || auth.Password != "" || auth.Auth != "" || auth.IdentityToken != "" || auth.RegistryToken != "") {
		cfg = &authn.AuthConfig{Username: auth.Username, Password: auth.Password, Auth: auth.Auth,
			IdentityToken: auth.IdentityToken, RegistryToken: auth.RegistryToken}
	}
	c.mu.Lock()
	changed := c.set(key, cfg)
	c.mu.Unlock()
	if changed && c.OnChange != nil {
		c.OnChange()
	}
	return nil
}

// set records cfg (nil: forgets) for key and reports whether anything
// changed; call it with mu held.
func (c *Credentials) set(key string, cfg *authn.AuthConfig) bool {
	old, had := c.byRepo[key]
	if i := indexOf(c.order, key); i >= 0 {
		c.order = append(c.order[:i], c.order[i+1:]...)
	}
	delete(c.byRepo, key)
	if cfg == nil {
		return had
	}
	if len(c.order) >= MaxRepositories {
		delete(c.byRepo, c.order[0])
		c.order = c.order[1:]
	}
	c.byRepo[key] = *cfg
	c.order = append(c.order, key)
	return !had || old != *cfg
}

// savedCredential is one repository's credentials in Save's output.
type savedCredential struct {
	Repository string           `json:"repository"`
	Auth       authn.AuthConfig `json:"auth"`
}

// Save returns the credentials, oldest first, as JSON for Load.
func (c *Credentials) Save() ([]byte, error) {
	c.mu.Lock()
	out := make([]savedCredential, 0, len(c.order))
	for _, k := range c.order {
		out = append(out, savedCredential{Repository: k, Auth: c.byRepo[k]})
	}
	c.mu.Unlock()
	return json.Marshal(out)
}

// Load adds the credentials Save returned (of a daemon before this one).
func (c *Credentials) Load(data []byte) error {
	var in []savedCredential
	if err := json.Unmarshal(data, &in); err != nil {
		return fmt.Errorf("saved CRI credentials: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sc := range in {
		key, err := repositoryKey(sc.Repository)
		if err != nil {
			return fmt.Errorf("saved CRI credentials: %w", err)
		}
		auth := sc.Auth
		c.set(key, &auth)
	}
	return nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// Lookup returns the credentials recorded for a repository
// (HOST/PATH).
func (c *Credentials) Lookup(repo string) (authn.AuthConfig, bool) {
	key, err := repositoryKey(repo)
	if err != nil {
		return authn.AuthConfig{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.byRepo[key]
	return a, ok
}

// Resolve implements authn.Keychain: the credentials of the repository
// the resource names, or anonymous.
func (c *Credentials) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if res.String() == res.RegistryStr() {
		return authn.Anonymous, nil // a registry, not a repository
	}
	if a, ok := c.Lookup(res.String()); ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}

// For returns a keychain of one repository's credentials: asked for its
// registry (as erofsd's blob store asks, per host), it answers with the
// repository's; for other hosts (mirrors) it is anonymous.
func (c *Credentials) For(repo string) authn.Keychain { return repoKeychain{c: c, repo: repo} }

type repoKeychain struct {
	c    *Credentials
	repo string
}

func (k repoKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	r, err := name.NewRepository(k.repo)
	if err != nil || res.RegistryStr() != r.RegistryStr() {
		return authn.Anonymous, nil
	}
	if a, ok := k.c.Lookup(k.repo); ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}

// Proxy is a CRI ImageService that records credentials and forwards
// every call to containerd's.
type Proxy struct {
	rt.UnimplementedImageServiceServer
	upstream rt.ImageServiceClient
	creds    *Credentials
}

// New returns a proxy to upstream (containerd's CRI) recording into
// creds.
func New(upstream grpc.ClientConnInterface, creds *Credentials) *Proxy {
	return &Proxy{upstream: rt.NewImageServiceClient(upstream), creds: creds}
}

// Register adds the proxy to a gRPC server.
func (p *Proxy) Register(s *grpc.Server) { rt.RegisterImageServiceServer(s, p) }

// PullImage records the request's credentials, then pulls through
// containerd (whose snapshotter, erofsd, may need them at once).
func (p *Proxy) PullImage(ctx context.Context, req *rt.PullImageRequest) (*rt.PullImageResponse, error) {
	if ref := req.GetImage().GetImage(); ref != "" {
		// An unparsable reference is containerd's to refuse.
		p.creds.Record(ref, req.GetAuth())
	}
	return p.upstream.PullImage(ctx, req)
}

// ListImages forwards.
func (p *Proxy) ListImages(ctx context.Context, req *rt.ListImagesRequest) (*rt.ListImagesResponse, error) {
	return p.upstream.ListImages(ctx, req)
}

// ImageStatus forwards.
func (p *Proxy) ImageStatus(ctx context.Context, req *rt.ImageStatusRequest) (*rt.ImageStatusResponse, error) {
	return p.upstream.ImageStatus(ctx, req)
}

// RemoveImage forwards.
func (p *Proxy) RemoveImage(ctx context.Context, req *rt.RemoveImageRequest) (*rt.RemoveImageResponse, error) {
	return p.upstream.RemoveImage(ctx, req)
}

// ImageFsInfo forwards.
func (p *Proxy) ImageFsInfo(ctx context.Context, req *rt.ImageFsInfoRequest) (*rt.ImageFsInfoResponse, error) {
	return p.upstream.ImageFsInfo(ctx, req)
}

// StreamImages forwards the stream.
func (p *Proxy) StreamImages(req *rt.StreamImagesRequest, out grpc.ServerStreamingServer[rt.StreamImagesResponse]) error {
	in, err := p.upstream.StreamImages(out.Context(), req)
	if err != nil {
		return err
	}
	for {
		resp, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Send(resp); err != nil {
			return err
		}
	}
}
