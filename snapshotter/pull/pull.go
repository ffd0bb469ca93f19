// Package pull pulls images into containerd through erofsd's snapshotter,
// lazily: "erofsctl image pull" is the one command of it, for hosts where
// no kubelet pulls (the CRI plugin pulls lazily by itself when configured
// as docs/containerd.md says). containerd's own "ctr image pull" does not
// pass the image's reference and layer digests to the snapshotter, which
// an erofsd image needs to be mounted instead of downloaded.
package pull

import (
	"context"
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/distribution/reference"
	"github.com/erofsd/erofsd/oci"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Config is a pull.
type Config struct {
	// Address is containerd's socket (default DefaultAddress).
	Address string
	// Namespace is the containerd namespace (default "default", ctr's).
	Namespace string
	// Snapshotter is the name of erofsd's proxy plugin in containerd's
	// configuration (default "erofsd").
	Snapshotter string
	// PlainHTTP reaches the registry over plain HTTP. erofsd's
	// snapshotter decides for itself (snapshotter_plain_http_hosts).
	PlainHTTP bool
	// HostsDir is a containerd hosts.toml directory (certs.d) for the
	// registry's mirrors and TLS settings; empty: none.
	HostsDir string
	// Keychain gives the registry credentials (default: the docker
	// config and its credential helpers).
	Keychain authn.Keychain
}

// Defaults.
const (
	DefaultAddress     = "/run/containerd/containerd.sock"
	DefaultNamespace   = "default"
	DefaultSnapshotter = "erofsd"
)

// Result is a pulled image.
type Result struct {
	Name   string        // the image's name in containerd
	Digest string        // its manifest (or index) digest
	Took   time.Duration // from the first request to unpacked
}

// Image pulls ref into containerd and unpacks it with the snapshotter:
// the layers of an erofsd image are mounted lazily, never downloaded;
// other images are downloaded and unpacked as containerd would. An
// erofsd image of format 1 fails with oci.ErrOldFormat.
func Image(ctx context.Context, ref string, cfg Config) (*Result, error) {
	if cfg.Address == "" {
		cfg.Address = DefaultAddress
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = DefaultSnapshotter
	}
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	// erofsd's tools never assume Docker Hub: the registry must be named.
	if _, err := oci.ParseReference(ref, oci.RemoteOptions{}); err != nil {
		return nil, err
	}
	// containerd's resolver wants a tag or digest, and the snapshotter
	// gets the reference as the CRI would give it.
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	ref = named.String()

	client, err := containerd.New(cfg.Address, containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", cfg.Address, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, cfg.Namespace)

	hostOpts := config.HostOptions{Credentials: credentials(cfg.Keychain)}
	if cfg.PlainHTTP {
		hostOpts.DefaultScheme = "http"
	}
	if cfg.HostsDir != "" {
		hostOpts.HostDir = config.HostDirFromRoot(cfg.HostsDir)
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, hostOpts)})

	start := time.Now()
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(cfg.Snapshotter),
		containerd.WithImageHandlerWrapper(func(h images.Handler) images.Handler {
			return refuseOldFormat(snapshotters.AppendInfoHandlerWrapper(ref)(h))
		}))
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", ref, err)
	}
	return &Result{Name: img.Name(), Digest: img.Target().Digest.String(), Took: time.Since(start)}, nil
}

// refuseOldFormat stops the pull of an erofsd image of format 1 at its
// manifest, before containerd fails on its config's media type with a
// message that says nothing of erofsd.
func refuseOldFormat(h images.Handler) images.Handler {
	return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		children, err := h.Handle(ctx, desc)
		if err != nil {
			return nil, err
		}
		if images.IsManifestType(desc.MediaType) {
			for _, c := range children {
				if c.MediaType == string(oci.V1ConfigMediaType) {
					return nil, fmt.Errorf("manifest %s: %w", desc.Digest, oci.ErrOldFormat)
				}
			}
		}
		return children, nil
	})
}

// credentials turns a keychain into containerd's credential callback.
// A keychain that fails (a broken credential helper) leaves the pull
// anonymous rather than failing it: public images still pull, and a
// registry that wants credentials says so.
func credentials(kc authn.Keychain) func(host string) (string, string, error) {
	return func(host string) (string, string, error) {
		if host == "registry-1.docker.io" {
			host = name.DefaultRegistry // Docker Hub's key in the docker config
		}
		reg, err := name.NewRegistry(host)
		if err != nil {
			return "", "", nil
		}
		a, err := kc.Resolve(reg)
		if err != nil {
			return "", "", nil
		}
		c, err := a.Authorization()
		if err != nil {
			return "", "", nil
		}
		if c.IdentityToken != "" {
			return "", c.IdentityToken, nil // containerd: an empty user means a refresh token
		}
		return c.Username, c.Password, nil
	}
}
