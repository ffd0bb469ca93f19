package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/oci"
	"github.com/erofsd/erofsd/prefetchlist"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func cmdConvert(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert", stderr)
	chunk := fs.String("chunk-size", "1M", "chunk `size` of the image's files (power of two, 4K..1G)")
	platform := fs.String("platform", "", "`os/arch[/variant]` to convert from a multi-platform index (default: this host's), or \"all\"")
	plainHTTP := fs.Bool("plain-http", false, "talk plain HTTP to the registries (a test registry); never the default")
	insecure := fs.Bool("insecure", false, "skip TLS certificate verification; never the default")
	caFile := fs.String("ca-file", "", "extra CA certificates (PEM) to trust for the registries")
	workDir := fs.String("work-dir", "", "`dir` for the image while it is built (default $TMPDIR); needs room for the image's file data")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	prefetch := fs.String("prefetch-list", "", "prefetch list `file` (erofsctl trace writes one): the listed chunks go first in their blobs and the image records them for erofsd to fetch at mount")
	zflags := addCompressFlags(fs)
	pack := fs.Bool("pack-small-files", false, "store files smaller than a chunk in shared chunks of up to the chunk size (as compressed files always are): fewer registry requests for a cold read of many small files, a whole shared chunk fetched for any one of them")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: erofs-image convert [flags] SRC DST

Converts an OCI container image into an erofsd image: one merged EROFS
bootstrap and a chunk blob per layer, pushed as an OCI manifest.

SRC and DST are each a registry reference (oci://HOST/REPO:TAG, or a plain
reference such as HOST/REPO:TAG) or an OCI image layout directory (DIR or
DIR:TAG; a path starting with / or . is always a layout). Registry
credentials come from ~/.docker/config.json and its credential helpers.

`+compressNote+`

flags:`)
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, splitAttached(args, "z", "C"))
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fs.Usage()
		return fmt.Errorf("%w: convert needs SRC and DST", errUsage)
	}
	opts := oci.ConvertOptions{WorkDir: *workDir, PackSmallFiles: *pack}
	if opts.Compression, opts.PclusterSize, err = zflags.values(); err != nil {
		return err
	}
	if *prefetch != "" {
		if opts.PrefetchList, err = prefetchlist.ReadFile(*prefetch); err != nil {
			return fmt.Errorf("%w: --prefetch-list: %v", errUsage, err)
		}
	}
	if opts.ChunkSize, err = parseSize(*chunk); err != nil {
		return fmt.Errorf("%w: --chunk-size: %v", errUsage, err)
	}
	if cs := opts.ChunkSize; cs < 4096 || cs > build.MaxChunkSize || cs&(cs-1) != 0 {
		return fmt.Errorf("%w: --chunk-size %s: must be a power of two from 4K to 1G", errUsage, *chunk)
	}
	switch *platform {
	case "":
	case "all":
		opts.AllPlatforms = true
	default:
		p, err := v1.ParsePlatform(*platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("%w: --platform %q: want os/arch[/variant] or all", errUsage, *platform)
		}
		opts.Platform = p
	}
	ro := oci.RemoteOptions{PlainHTTP: *plainHTTP, Insecure: *insecure, CAFile: *caFile}
	src, err := oci.ParseLocation(pos[0], ro)
	if err != nil {
		return fmt.Errorf("%w: SRC: %v", errUsage, err)
	}
	dst, err := oci.ParseLocation(pos[1], ro)
	if err != nil {
		return fmt.Errorf("%w: DST: %v", errUsage, err)
	}
	// The canonical name, so that oci://HOST/R:T and HOST/R:T convert
	// to the same digest. A layout's path is this machine's business:
	// the source manifest's digest, always recorded, names the source.
	if src.Ref != nil {
		opts.SourceRef = src.Ref.Name()
	}
	if isTerminal(stderr) && !*asJSON {
		opts.Progress = newLayerProgress(stderr)
	}

	start := time.Now()
	source, err := oci.OpenSource(ctx, src, ro)
	if err != nil {
		return err
	}
	c, err := oci.Convert(ctx, source, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if opts.Progress != nil {
		fmt.Fprintf(stderr, "writing to %s\n", dst)
	}
	digest, err := oci.Write(ctx, dst, c, ro)
	if err != nil {
		return err
	}
	return printConverted(stdout, *asJSON, src, dst, digest, c, time.Since(start))
}

type convertedJSON struct {
	Source      string          `json:"source"`
	Destination string          `json:"destination"`
	Digest      string          `json:"digest"`
	MediaType   string          `json:"media_type"`
	Images      []convertedPart `json:"images"`
	Seconds     float64         `json:"seconds"`
}

type convertedPart struct {
	Digest    string          `json:"digest"`
	Platform  string          `json:"platform,omitempty"`
	Bootstrap v1.Descriptor   `json:"bootstrap"`
	Blobs     []v1.Descriptor `json:"blobs"`
}

func printConverted(w io.Writer, asJSON bool, src, dst oci.Location, digest v1.Hash, c *oci.Converted, took time.Duration) error {
	out := convertedJSON{Source: src.String(), Destination: dst.String(), Digest: digest.String(), Seconds: took.Seconds()}
	addImage := func(img v1.Image, platform string) error {
		raw, err := img.RawManifest()
		if err != nil {
			return err
		}
		m, err := oci.ParseManifest(raw)
		if err != nil {
			return err
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		out.Images = append(out.Images, convertedPart{Digest: d.String(), Platform: platform, Bootstrap: m.Bootstrap, Blobs: m.Blobs})
		return nil
	}
	if c.Index != nil {
		out.MediaType = "index"
		im, err := c.Index.IndexManifest()
		if err != nil {
			return err
		}
		for _, d := range im.Manifests {
			img, err := c.Index.Image(d.Digest)
			if err != nil {
				return err
			}
			if err := addImage(img, d.Platform.String()); err != nil {
				return err
			}
		}
	} else {
		out.MediaType = "manifest"
		if err := addImage(c.Image, ""); err != nil {
			return err
		}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "%s -> %s\n%s %s (%.1fs)\n", out.Source, out.Destination, out.MediaType, out.Digest, out.Seconds)
	for _, img := range out.Images {
		var total int64
		for _, b := range img.Blobs {
			total += b.Size
		}
		label := img.Digest
		if img.Platform != "" {
			label = img.Platform + " " + img.Digest
		}
		fmt.Fprintf(w, "  %s\n    bootstrap %s %s, %d blobs %s\n", label, img.Bootstrap.Digest, humanBytes(img.Bootstrap.Size), len(img.Blobs), humanBytes(total))
	}
	return nil
}

// newLayerProgress prints one line per layer, rewritten as it is read.
func newLayerProgress(w io.Writer) func(oci.LayerProgress) {
	var last time.Time
	return func(p oci.LayerProgress) {
		now := time.Now()
		if !p.Done && p.Read != 0 && now.Sub(last) < 100*time.Millisecond {
			return
		}
		last = now
		short := p.Digest
		if len(short) > 19 {
			short = short[:19]
		}
		pct := 100.0
		if p.Size > 0 {
			pct = 100 * float64(p.Read) / float64(p.Size)
		}
		fmt.Fprintf(w, "\r\033[K%s layer %d/%d %s  %s / %s  %3.0f%%", p.Platform, p.Layer, p.Layers, short, humanBytes(p.Read), humanBytes(p.Size), pct)
		if p.Done {
			fmt.Fprintln(w)
		}
	}
}
