package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/prefetchlist"
)

// cmdOptimize re-lays an image for a prefetch list: its tree, verified
// chunk by chunk, is extracted to a scratch directory and built again
// with the list, so the listed data comes first in the new blob and the
// new image records it as its start set.
func cmdOptimize(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("optimize", stderr)
	blobDir := fs.String("blob-dir", "", "`dir` holding SRC's blobs (named by digest)")
	outBlobs := fs.String("out-blob-dir", "", "`dir` for DST's blob (default: --blob-dir)")
	list := fs.String("prefetch-list", "", "prefetch list `file` (required; erofsctl trace writes one)")
	chunk := fs.String("chunk-size", "1M", "chunk `size` of DST's files (power of two, 4K..1G)")
	workDir := fs.String("work-dir", "", "scratch `dir` for SRC's extracted tree (default: DST's directory); needs room for its file data")
	asJSON := fs.Bool("json", false, "print the build summary as JSON")
	zflags := addCompressFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: erofs-image optimize --prefetch-list FILE [--blob-dir DIR] [--out-blob-dir DIR] SRC DST

Re-lays image SRC for a workload: the files (and ranges) of the prefetch
list go first in DST's blob, in list order, and DST records them as its
start set, which erofsd fetches in a few large requests at mount. SRC is
read and verified whole; DST holds the same tree in one blob. Run as root
to keep owners, devices and trusted.* xattrs. An image made by convert is
re-laid by converting again with --prefetch-list. DST is compressed only
if -z says so, whatever SRC is.

`+compressNote+`

flags:`)
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, splitAttached(args, "z", "C"))
	if err != nil {
		return err
	}
	if len(pos) != 2 || *list == "" {
		fs.Usage()
		return fmt.Errorf("%w: optimize needs --prefetch-list, SRC and DST", errUsage)
	}
	if *outBlobs == "" {
		*outBlobs = *blobDir
	}
	if *outBlobs == "" {
		return fmt.Errorf("%w: optimize writes a blob: give --blob-dir or --out-blob-dir", errUsage)
	}
	opts := build.Options{BlobDir: *outBlobs}
	if opts.Compression, opts.PclusterSize, err = zflags.values(); err != nil {
		return err
	}
	if opts.PrefetchList, err = prefetchlist.ReadFile(*list); err != nil {
		return fmt.Errorf("%w: --prefetch-list: %v", errUsage, err)
	}
	if opts.ChunkSize, err = parseSize(*chunk); err != nil {
		return fmt.Errorf("%w: --chunk-size: %v", errUsage, err)
	}
	if cs := opts.ChunkSize; cs < 4096 || cs > build.MaxChunkSize || cs&(cs-1) != 0 {
		return fmt.Errorf("%w: --chunk-size %s: must be a power of two from 4K to 1G", errUsage, *chunk)
	}

	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	ropts := []erofs.Option{erofs.WithVerifiedBlobs()}
	if *blobDir != "" {
		ropts = append(ropts, erofs.WithBlobs(erofs.DirBlobs(*blobDir)))
	}
	img, err := erofs.Open(f, ropts...)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	defer img.Close()
	// The same build time and label, where the superblock's are ones a
	// build can take.
	if info := img.Info(); info.BuildTimeSec >= 0 && info.BuildTimeSec < 253402300800 {
		opts.BuildTime = info.BuildTime
		if len(info.VolumeName) <= 15 {
			opts.Label = info.VolumeName
		}
	}

	scratchParent := *workDir
	if scratchParent == "" {
		scratchParent = filepath.Dir(pos[1])
	}
	scratch, err := os.MkdirTemp(scratchParent, ".erofs-optimize-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	tree := filepath.Join(scratch, "tree")
	if _, err := extract(ctx, img, tree); err != nil {
		return fmt.Errorf("reading %s: %w", pos[0], err)
	}
	res, err := buildImage(ctx, tree, pos[1], opts, build.TarOptions{}, nil)
	if err != nil {
		return err
	}
	if *asJSON {
		return printBuildJSON(stdout, pos[1], res)
	}
	printBuildSummary(stdout, pos[1], res)
	return nil
}
