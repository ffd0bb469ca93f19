// Package oci moves erofsd images through OCI registries and image
// layouts. Convert turns an OCI container image into an erofsd image: one
// merged EROFS bootstrap (the whole filesystem tree, whiteouts applied)
// plus, per source layer, a blob holding that layer's file data in
// chunks, deduplicated across layers. The result is an OCI image manifest
// whose layers are the blobs and then the bootstrap, of OCI layer media
// types of erofsd's own, with a standard image config carrying the
// source's run configuration: any OCI registry stores it, containerd
// hands it to erofsd's snapshotter, and the blobs' registry digests are
// the device tags the bootstrap names, so the daemon fetches chunks
// straight from the registry by range.
// ParseManifest and Resolve read such manifests back.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of erofsd images (format 2). Both are OCI layer types
// (application/vnd.oci.image.layer.*), so containerd hands every part of
// an erofsd image to its snapshotter as a layer and downloads nothing the
// snapshotter reports present; a containerd without erofsd's snapshotter
// fails to apply the first blob ("no processor for media-type") and never
// runs a wrong root filesystem. The config is a standard OCI image config.
const (
	// BlobMediaType is a blob of chunk data, a device of the bootstrap;
	// blobs come first, in device order.
	BlobMediaType types.MediaType = "application/vnd.oci.image.layer.erofsd.blob.v1"
	// BootstrapMediaType is the EROFS image holding the tree and the
	// chunk digest table: exactly one, the last layer (it mounts the
	// devices before it, as the EROFS image spec orders them).
	BootstrapMediaType types.MediaType = "application/vnd.oci.image.layer.erofsd.bootstrap.v1"
)

// Media types of format 1 (before containerd could run erofsd images):
// read, no longer written.
const (
	V1ConfigMediaType    types.MediaType = "application/vnd.erofsd.image.config.v1+json"
	V1BootstrapMediaType types.MediaType = "application/vnd.erofsd.image.bootstrap.v1.erofs"
	V1BlobMediaType      types.MediaType = "application/vnd.erofsd.image.blob.v1.erofs"
)

// FormatVersion is the format Convert writes.
const FormatVersion = 2

// Annotation keys erofsd writes. They link a converted image back to its
// source so that a conversion can be traced and repeated, and tell the
// snapshotter what each layer is.
const (
	AnnotationFormat         = "dev.erofsd.format"          // on the manifest: the format version
	AnnotationSourceRef      = "dev.erofsd.source.ref"      // the reference converted, as given
	AnnotationSourceManifest = "dev.erofsd.source.manifest" // digest of the source image manifest
	AnnotationSourceConfig   = "dev.erofsd.source.config"   // digest of the source image config
	AnnotationSourceIndex    = "dev.erofsd.source.index"    // digest of the source index, if any
	AnnotationSourceLayer    = "dev.erofsd.source.layer"    // on a blob: the source layer whose data it holds
	AnnotationChunkSize      = "dev.erofsd.chunk-size"      // on the bootstrap
	// AnnotationRole is "blob" or "bootstrap" on each layer: containerd
	// passes annotations of the containerd.io/snapshot/ prefix on to the
	// snapshotter as labels.
	AnnotationRole = "containerd.io/snapshot/erofsd.role"
	// AnnotationErofsRole "device" marks a blob as a raw device of the
	// EROFS layer after it, as the EROFS image spec draft names it.
	AnnotationErofsRole = "org.erofs.role"
)

// MaxManifestSize bounds a manifest read from a registry.
const MaxManifestSize = 4 << 20

// ErrNotErofsd is returned for a manifest that is not an erofsd image
// (for example the unconverted source image).
var ErrNotErofsd = errors.New("not an erofsd image")

// Manifest is a parsed erofsd image manifest.
type Manifest struct {
	Format      int // 1 or 2
	Bootstrap   v1.Descriptor
	Blobs       []v1.Descriptor // in device order
	Config      v1.Descriptor
	Annotations map[string]string
}

// ErrOldFormat wraps the errors of a runtime (containerd) asked to run an
// image of format 1: erofsctl mount serves it, containerd cannot.
var ErrOldFormat = errors.New("an erofsd image of format 1, which containerd cannot run: convert it again with erofs-image convert (erofsctl mount still mounts it)")

// ParseManifest checks that raw is an OCI image manifest of an erofsd
// image, of either format, and returns its parts.
func ParseManifest(raw []byte) (*Manifest, error) {
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("manifest of %d bytes: more than %d", len(raw), MaxManifestSize)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest schema version %d, want 2", m.SchemaVersion)
	}
	if m.MediaType != "" && m.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%w: manifest media type %q", ErrNotErofsd, m.MediaType)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	out := &Manifest{Config: m.Config, Annotations: m.Annotations}
	var blobs []v1.Descriptor
	blobType := BlobMediaType
	switch {
	case m.Config.MediaType == V1ConfigMediaType:
		// Format 1: the bootstrap first, then the blobs.
		if len(m.Layers) == 0 || m.Layers[0].MediaType != V1BootstrapMediaType {
			return nil, fmt.Errorf("%w: the first layer is not a bootstrap (%s)", ErrNotErofsd, V1BootstrapMediaType)
		}
		out.Format, out.Bootstrap, blobs, blobType = 1, m.Layers[0], m.Layers[1:], V1BlobMediaType
	case m.Config.MediaType == types.OCIConfigJSON:
		// Format 2: the blobs, then the bootstrap last.
		n := len(m.Layers)
		if n == 0 || m.Layers[n-1].MediaType != BootstrapMediaType {
			return nil, fmt.Errorf("%w: the last layer is not an erofsd bootstrap (%s)", ErrNotErofsd, BootstrapMediaType)
		}
		out.Format, out.Bootstrap, blobs = 2, m.Layers[n-1], m.Layers[:n-1]
	default:
		return nil, fmt.Errorf("%w: config media type %q", ErrNotErofsd, m.Config.MediaType)
	}
	if err := checkDescriptor(out.Bootstrap); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	seen := map[v1.Hash]bool{out.Bootstrap.Digest: true}
	for i, l := range blobs {
		if l.MediaType != blobType {
			return nil, fmt.Errorf("blob %d: media type %q, want %q", i, l.MediaType, blobType)
		}
		if err := checkDescriptor(l); err != nil {
			return nil, fmt.Errorf("blob %d: %w", i, err)
		}
		if seen[l.Digest] {
			return nil, fmt.Errorf("blob %d: %s listed twice", i, l.Digest)
		}
		seen[l.Digest] = true
		out.Blobs = append(out.Blobs, l)
	}
	return out, nil
}

// CheckConfig checks a format 2 image's config against its manifest:
// a runtime reads it, so it must be an image config whose diff IDs are
// the layers' digests (the layers are not tars: each names itself).
func (m *Manifest) CheckConfig(raw []byte) (*v1.ConfigFile, error) {
	if m.Format != 2 {
		return nil, ErrOldFormat
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	layers := append(append([]v1.Descriptor(nil), m.Blobs...), m.Bootstrap)
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != len(layers) {
		return nil, fmt.Errorf("config: rootfs %q with %d diff IDs for %d layers", cfg.RootFS.Type, len(cfg.RootFS.DiffIDs), len(layers))
	}
	for i, l := range layers {
		if cfg.RootFS.DiffIDs[i] != l.Digest {
			return nil, fmt.Errorf("config: diff ID %d is %s, the layer is %s", i, cfg.RootFS.DiffIDs[i], l.Digest)
		}
	}
	return &cfg, nil
}

func checkDescriptor(d v1.Descriptor) error {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
		return fmt.Errorf("digest %q: want sha256", d.Digest)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s: negative size %d", d.Digest, d.Size)
	}
	return nil
}
