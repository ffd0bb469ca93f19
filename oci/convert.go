package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/prefetchlist"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrNoPlatform is returned when an index has no image for the platform
// asked for.
var ErrNoPlatform = errors.New("no image for the platform")

// ConvertOptions control a conversion.
type ConvertOptions struct {
	// ChunkSize of the image's files (default build.DefaultChunkSize).
	ChunkSize int64
	// WorkDir holds the bootstrap and blobs until they are written
	// (default: os.TempDir()). Convert needs room for the image's
	// uncompressed file data, deduplicated.
	WorkDir string
	// SourceRef is recorded in the AnnotationSourceRef annotation.
	SourceRef string
	// Platform selects the image of an index (default: HostPlatform).
	// AllPlatforms converts every image of an index instead.
	Platform     *v1.Platform
	AllPlatforms bool
	// PrefetchList names the files (and ranges) the image's workload
	// reads first: their chunks go to the front of each layer's blob and
	// the bootstrap records them as its start set, which erofsd fetches
	// in a few large requests at mount (see build.Options.PrefetchList).
	PrefetchList *prefetchlist.List
	// Compression and PclusterSize compress the image's files in their
	// blobs (see build.Options.Compression): fewer registry bytes for
	// the same tree, served lazily through the fanotify front end. Linux
	// before 6.9 cannot read compressed files in fscache mode.
	Compression  string
	PclusterSize int
	// PackSmallFiles stores each layer's files smaller than a chunk in
	// shared digest table entries (build.Options.PackSmallFiles): fewer
	// registry requests when a cold start reads many small files.
	PackSmallFiles bool
	// Progress, if set, is called as layers are read.
	Progress func(LayerProgress)
}

// LayerProgress reports a layer being converted.
type LayerProgress struct {
	Platform string // os/arch of the image
	Layer    int    // 1-based
	Layers   int
	Digest   string // the source layer
	Read     int64  // compressed bytes read so far
	Size     int64  // compressed size
	Done     bool
}

// HostPlatform is the platform this program runs on.
func HostPlatform() v1.Platform {
	return v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
}

// Converted is the result of a conversion: an image (Image) or, for
// AllPlatforms on an index, an index of images (Index). Its files live in
// the work dir until Close.
type Converted struct {
	Image v1.Image
	Index v1.ImageIndex
	dirs  []string
}

// Close removes the converted files. It is safe to call twice.
func (c *Converted) Close() error {
	var first error
	for _, d := range c.dirs {
		if err := os.RemoveAll(d); err != nil && first == nil {
			first = err
		}
	}
	c.dirs = nil
	return first
}

// Digest returns the digest of the image or index manifest.
func (c *Converted) Digest() (v1.Hash, error) {
	if c.Index != nil {
		return c.Index.Digest()
	}
	return c.Image.Digest()
}

// Convert converts src, a v1.Image or a v1.ImageIndex.
func Convert(ctx context.Context, src partial.Describable, opts ConvertOptions) (*Converted, error) {
	switch s := src.(type) {
	case v1.Image:
		return convertOne(ctx, s, nil, opts)
	case v1.ImageIndex:
		return convertIndex(ctx, s, opts)
	}
	return nil, fmt.Errorf("convert: source is %T, want an image or an index", src)
}

func convertIndex(ctx context.Context, idx v1.ImageIndex, opts ConvertOptions) (*Converted, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("source index: %w", err)
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	want := HostPlatform()
	if opts.Platform != nil {
		want = *opts.Platform
	}
	out := &Converted{}
	var adds []mutate.IndexAddendum
	for _, desc := range im.Manifests {
		if !desc.MediaType.IsImage() {
			continue // nested indexes and attestations are not converted
		}
		if desc.Platform == nil || desc.Platform.OS == "unknown" {
			continue // attestation manifests (buildkit) carry no platform
		}
		if !opts.AllPlatforms && !platformMatches(*desc.Platform, want) {
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			out.Close()
			return nil, fmt.Errorf("source image %s: %w", desc.Digest, err)
		}
		c, err := convertOne(ctx, img, &idxDigest, opts)
		if err != nil {
			out.Close()
			return nil, fmt.Errorf("%s: %w", desc.Platform, err)
		}
		out.dirs = append(out.dirs, c.dirs...)
		if !opts.AllPlatforms {
			out.Image = c.Image
			return out, nil
		}
		adds = append(adds, mutate.IndexAddendum{Add: c.Image, Descriptor: v1.Descriptor{Platform: desc.Platform}})
	}
	if len(adds) == 0 {
		out.Close()
		if opts.AllPlatforms {
			return nil, fmt.Errorf("%w: the index lists no image with a platform", ErrNoPlatform)
		}
		return nil, fmt.Errorf("%w %s in index %s", ErrNoPlatform, want, idxDigest)
	}
	converted := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	converted = mutate.Annotations(converted, sourceAnnotations(opts.SourceRef, idxDigest.String(), "")).(v1.ImageIndex)
	out.Index = converted
	return out, nil
}

func platformMatches(have, want v1.Platform) bool {
	return have.OS == want.OS && have.Architecture == want.Architecture &&
		(want.Variant == "" || have.Variant == want.Variant)
}

func sourceAnnotations(ref, indexDigest, manifestDigest string) map[string]string {
	a := map[string]string{}
	if ref != "" {
		a[AnnotationSourceRef] = ref
	}
	if indexDigest != "" {
		a[AnnotationSourceIndex] = indexDigest
	}
	if manifestDigest != "" {
		a[AnnotationSourceManifest] = manifestDigest
	}
	return a
}

// convertOne converts one image: its layers, in order, into one merged
// bootstrap and a blob per layer that adds file data.
func convertOne(ctx context.Context, img v1.Image, index *v1.Hash, opts ConvertOptions) (_ *Converted, err error) {
	srcDigest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("source config: %w", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("source layers: %w", err)
	}
	platform := cfg.Platform()
	if platform == nil {
		platform = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture}
	}

	dir, err := os.MkdirTemp(opts.WorkDir, "erofsd-convert-*")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	bootstrapPath := filepath.Join(dir, "bootstrap")
	f, err := os.Create(bootstrapPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	chunkSize := opts.ChunkSize
	if chunkSize == 0 {
		chunkSize = build.DefaultChunkSize
	}
	// The source's creation time (else the newest mtime, the builder's
	// default) keeps a conversion reproducible.
	b, err := build.New(f, build.Options{ChunkSize: chunkSize, BlobDir: dir, BuildTime: cfg.Created.Time, PrefetchList: opts.PrefetchList,
		Compression: opts.Compression, PclusterSize: opts.PclusterSize, PackSmallFiles: opts.PackSmallFiles})
	if err != nil {
		return nil, err
	}
	defer b.Abort()

	var src struct{ Layers []string } // source layer digests, in order
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		src.Layers = append(src.Layers, d.String())
		if err := addLayer(ctx, b, l, LayerProgress{Platform: platform.String(), Layer: i + 1, Layers: len(layers), Digest: d.String()}, opts.Progress); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i+1, d, err)
		}
	}
	res, err := b.Finish(ctx)
	if err != nil {
		return nil, fmt.Errorf("building the bootstrap: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}

	// Format 2: the blobs first, in device order, then the bootstrap.
	image := &image{layers: map[v1.Hash]*fileLayer{}}
	image.manifest = v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	var history []v1.History
	for _, bl := range res.Blobs {
		ann := map[string]string{AnnotationRole: "blob", AnnotationErofsRole: "device"}
		comment := "erofsd blob"
		if bl.Layer > 0 && bl.Layer <= len(src.Layers) {
			ann[AnnotationSourceLayer] = src.Layers[bl.Layer-1]
			comment += " of " + src.Layers[bl.Layer-1]
		}
		layer, err := newFileLayer(filepath.Join(dir, bl.Digest), BlobMediaType, ann)
		if err != nil {
			return nil, err
		}
		if layer.digest.Hex != bl.Digest {
			return nil, fmt.Errorf("blob %s: file digest %s", bl.Digest, layer.digest)
		}
		image.layers[layer.digest] = layer
		image.manifest.Layers = append(image.manifest.Layers, layer.descriptor())
		history = append(history, v1.History{Created: cfg.Created, CreatedBy: comment})
	}
	bootstrap, err := newFileLayer(bootstrapPath, BootstrapMediaType,
		map[string]string{AnnotationRole: "bootstrap", AnnotationChunkSize: strconv.FormatInt(chunkSize, 10)})
	if err != nil {
		return nil, err
	}
	image.layers[bootstrap.digest] = bootstrap
	image.manifest.Layers = append(image.manifest.Layers, bootstrap.descriptor())
	history = append(history, v1.History{Created: cfg.Created, CreatedBy: "erofsd bootstrap (the merged tree)"})

	// A standard image config, so that a runtime starts the image as it
	// would the source: the source's platform and run configuration. The
	// layers are not tars: each one's diff ID is its own digest. No
	// os.features: containerd 2.x would not unpack through the
	// snapshotter a platform its unpacker does not match.
	config := v1.ConfigFile{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		Variant:      platform.Variant,
		OSVersion:    platform.OSVersion,
		Created:      cfg.Created,
		Author:       cfg.Author,
		Config:       cfg.Config,
		RootFS:       v1.RootFS{Type: "layers"},
		History:      history,
	}
	for _, l := range image.manifest.Layers {
		config.RootFS.DiffIDs = append(config.RootFS.DiffIDs, l.Digest)
	}
	if image.config, err = json.Marshal(config); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(image.config)
	image.manifest.Config = v1.Descriptor{
		MediaType: types.OCIConfigJSON,
		Size:      int64(len(image.config)),
		Digest:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
	}
	idx := ""
	if index != nil {
		idx = index.String()
	}
	image.manifest.Annotations = sourceAnnotations(opts.SourceRef, idx, srcDigest.String())
	image.manifest.Annotations[AnnotationFormat] = strconv.Itoa(FormatVersion)
	image.manifest.Annotations[AnnotationSourceConfig] = cfgName.String()
	if image.raw, err = json.Marshal(image.manifest); err != nil {
		return nil, err
	}
	out, err := partial.CompressedToImage(image)
	if err != nil {
		return nil, err
	}
	return &Converted{Image: out, dirs: []string{dir}}, nil
}

// addLayer feeds one source layer to the builder, reading it compressed
// (the builder decompresses gzip and zstd) so that progress counts
// against the layer's known size, then drains it: a registry layer
// verifies its digest only when read to the end.
func addLayer(ctx context.Context, b *build.Builder, l v1.Layer, p LayerProgress, progress func(LayerProgress)) error {
	size, err := l.Size()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	p.Size = size
	var r io.Reader = rc
	if progress != nil {
		progress(p)
		r = &progressReader{r: rc, p: p, fn: progress}
	}
	if err := b.AddLayer(ctx, r); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("reading to the end: %w", err)
	}
	if progress != nil {
		p.Read, p.Done = size, true
		progress(p)
	}
	return nil
}

type progressReader struct {
	r    io.Reader
	p    LayerProgress
	fn   func(LayerProgress)
	last int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Read += int64(n)
	if pr.p.Read-pr.last >= 1<<20 {
		pr.last = pr.p.Read
		pr.fn(pr.p)
	}
	return n, err
}

// image is a converted image backed by files: it implements
// partial.CompressedImageCore (our layers are stored as they are served).
type image struct {
	manifest v1.Manifest
	raw      []byte
	config   []byte
	layers   map[v1.Hash]*fileLayer
}

func (i *image) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *image) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *image) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	if h == i.manifest.Config.Digest {
		return partial.ConfigLayer(i)
	}
	return nil, fmt.Errorf("converted image has no layer %s", h)
}

// ConfigFile is refused: the config is erofsd's, not a container config.
func (i *image) ConfigFile() (*v1.ConfigFile, error) {
	return nil, fmt.Errorf("%w: an erofsd image has no container config", ErrNotErofsd)
}

// fileLayer is a blob stored in a file, served as is.
type fileLayer struct {
	path        string
	digest      v1.Hash
	size        int64
	mediaType   types.MediaType
	annotations map[string]string
}

func newFileLayer(path string, mt types.MediaType, ann map[string]string) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, err
	}
	return &fileLayer{
		path:        path,
		digest:      v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))},
		size:        n,
		mediaType:   mt,
		annotations: ann,
	}, nil
}

func (l *fileLayer) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: l.mediaType, Size: l.size, Digest: l.digest, Annotations: l.annotations}
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
