// Package oci moves erofsd images through OCI registries and image
// layouts. Convert turns an OCI container image into an erofsd image: one
// merged EROFS bootstrap (the whole filesystem tree, whiteouts applied)
// plus, per source layer, a blob holding that layer's file data in
// chunks, deduplicated across layers. The result is an OCI image manifest
// of erofsd's own media types, so any OCI registry stores it, and the
// blobs' registry digests are the device tags the bootstrap names, so the
// daemon fetches chunks straight from the registry by range.
// ParseManifest and Resolve read such manifests back.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of erofsd images.
const (
	// ConfigMediaType is the manifest's config: a JSON Config.
	ConfigMediaType types.MediaType = "application/vnd.erofsd.image.config.v1+json"
	// BootstrapMediaType is the EROFS image holding the tree and the
	// chunk digest table; exactly one per manifest, the first layer.
	BootstrapMediaType types.MediaType = "application/vnd.erofsd.image.bootstrap.v1.erofs"
	// BlobMediaType is a blob of chunk data, a device of the bootstrap.
	BlobMediaType types.MediaType = "application/vnd.erofsd.image.blob.v1.erofs"
)

// Annotation keys erofsd writes. They link a converted image back to its
// source so that a conversion can be traced and repeated.
const (
	AnnotationSourceRef      = "dev.erofsd.source.ref"      // the reference converted, as given
	AnnotationSourceManifest = "dev.erofsd.source.manifest" // digest of the source image manifest
	AnnotationSourceIndex    = "dev.erofsd.source.index"    // digest of the source index, if any
	AnnotationSourceLayer    = "dev.erofsd.source.layer"    // on a blob: the source layer whose data it holds
	AnnotationChunkSize      = "dev.erofsd.chunk-size"      // on the bootstrap
)

// MaxManifestSize bounds a manifest read from a registry.
const MaxManifestSize = 4 << 20

// ErrNotErofsd is returned for a manifest that is not an erofsd image
// (for example the unconverted source image).
var ErrNotErofsd = errors.New("not an erofsd image")

// Config is the JSON config of an erofsd image.
type Config struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
	// ChunkSize is the chunk size of the image's chunk-based files.
	ChunkSize int64 `json:"chunkSize"`
	// Source describes the image converted.
	Source SourceInfo `json:"source"`
	// Runtime is the source image's run configuration (entrypoint,
	// environment, ...) so that a runtime can start the converted image.
	Runtime *v1.Config `json:"config,omitempty"`
}

// SourceInfo names the source of a conversion.
type SourceInfo struct {
	Manifest string   `json:"manifest"`         // source manifest digest
	Config   string   `json:"config,omitempty"` // source config digest
	Layers   []string `json:"layers"`           // source layer digests, in order
}

// Manifest is a parsed erofsd image manifest.
type Manifest struct {
	Bootstrap   v1.Descriptor
	Blobs       []v1.Descriptor // in device order
	Config      v1.Descriptor
	Annotations map[string]string
}

// ParseManifest checks that raw is an OCI image manifest of an erofsd
// image and returns its parts.
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
	if m.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("%w: config media type %q, want %q", ErrNotErofsd, m.Config.MediaType, ConfigMediaType)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(m.Layers) == 0 || m.Layers[0].MediaType != BootstrapMediaType {
		return nil, fmt.Errorf("%w: the first layer is not a bootstrap (%s)", ErrNotErofsd, BootstrapMediaType)
	}
	out := &Manifest{Bootstrap: m.Layers[0], Config: m.Config, Annotations: m.Annotations}
	if err := checkDescriptor(out.Bootstrap); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	seen := map[v1.Hash]bool{}
	for i, l := range m.Layers[1:] {
		if l.MediaType != BlobMediaType {
			return nil, fmt.Errorf("layer %d: media type %q, want %q", i+1, l.MediaType, BlobMediaType)
		}
		if err := checkDescriptor(l); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
		if seen[l.Digest] {
			return nil, fmt.Errorf("layer %d: blob %s listed twice", i+1, l.Digest)
		}
		seen[l.Digest] = true
		out.Blobs = append(out.Blobs, l)
	}
	return out, nil
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
