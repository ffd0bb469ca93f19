package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/units"
	"github.com/erofsd/erofsd/prefetchlist"
	"golang.org/x/sys/unix"
)

func cmdBuild(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("build", stderr)
	out := fs.String("o", "", "output image `file` (required)")
	chunk := fs.String("chunk-size", "1M", "chunk `size` of chunk-based files (power of two, 4K..1G; suffixes K, M, G)")
	blobDir := fs.String("blob-dir", "", "store file data in a blob in `dir`, named by its sha256 digest")
	mkfsTime := fs.String("mkfs-time", "", "build `time` (unix seconds or RFC 3339); default $SOURCE_DATE_EPOCH, else the newest mtime in SOURCE")
	allRoot := fs.Bool("all-root", false, "make all files owned by root")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	label := fs.String("label", "", "volume `name` (at most 15 bytes)")
	uuidFlag := fs.String("uuid", "", "filesystem `UUID` (default: derived from the content)")
	keepWh := fs.Bool("keep-whiteouts", false, "tar input: keep .wh.* entries as files instead of overlayfs whiteouts")
	holes := fs.String("holes", "auto", "how chunks of zeros are stored: `sparse` (no space; Linux before 6.2 reads them wrong in fscache mode), zero-chunk (one stored zero chunk, safe everywhere) or auto (zero-chunk with --blob-dir, else sparse)")
	zflags := addCompressFlags(fs)
	pack := fs.Bool("pack-small-files", false, "with --blob-dir: store files smaller than a chunk in shared chunks of up to the chunk size (as compressed files always are): fewer fetches and events for a cold read of many small files, a whole shared chunk fetched for any one of them")
	prefetch := fs.String("prefetch-list", "", "with --blob-dir: prefetch list `file` (erofsctl trace writes one): the listed files (and ranges) go first in the blob, in list order, and the image records them for erofsd to fetch at mount")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: erofs-image build [flags] -o IMAGE SOURCE

SOURCE is a directory, a tar file (plain, gzip or zstd) or - for standard input.

`+compressNote+`

flags:`)
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, splitAttached(args, "z", "C"))
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		fs.Usage()
		return fmt.Errorf("%w: build needs -o IMAGE and one SOURCE", errUsage)
	}
	opts := build.Options{AllRoot: *allRoot, Label: *label, BlobDir: *blobDir, PackSmallFiles: *pack}
	if opts.Compression, opts.PclusterSize, err = zflags.values(); err != nil {
		return err
	}
	if *pack && *blobDir == "" {
		return fmt.Errorf("%w: --pack-small-files packs blob data: it needs --blob-dir", errUsage)
	}
	if *prefetch != "" {
		if *blobDir == "" {
			return fmt.Errorf("%w: --prefetch-list orders blob data: it needs --blob-dir", errUsage)
		}
		if opts.PrefetchList, err = prefetchlist.ReadFile(*prefetch); err != nil {
			return fmt.Errorf("%w: --prefetch-list: %v", errUsage, err)
		}
	}
	if opts.Holes, err = build.ParseHolePolicy(*holes); err != nil {
		return fmt.Errorf("%w: --holes: %v", errUsage, err)
	}
	if opts.ChunkSize, err = parseSize(*chunk); err != nil {
		return fmt.Errorf("%w: --chunk-size: %v", errUsage, err)
	}
	if cs := opts.ChunkSize; cs < 4096 || cs > build.MaxChunkSize || cs&(cs-1) != 0 {
		return fmt.Errorf("%w: --chunk-size %s: must be a power of two from 4K to 1G", errUsage, *chunk)
	}
	t := *mkfsTime
	if t == "" {
		t = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if t != "" {
		if opts.BuildTime, err = parseTime(t); err != nil {
			return fmt.Errorf("%w: build time: %v", errUsage, err)
		}
	}
	if *uuidFlag != "" {
		u, err := parseUUID(*uuidFlag)
		if err != nil {
			return fmt.Errorf("%w: --uuid: %v", errUsage, err)
		}
		opts.UUID = &u
	}
	if isTerminal(stderr) && !*asJSON {
		opts.Progress = newProgressPrinter(stderr)
	}

	res, err := buildImage(ctx, pos[0], *out, opts, build.TarOptions{KeepWhiteouts: *keepWh}, stdin)
	if opts.Progress != nil {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printBuildJSON(stdout, *out, res)
	}
	printBuildSummary(stdout, *out, res)
	return nil
}

// splitAttached separates the values mkfs.erofs users attach to its
// one-letter options ("-zlz4hc,9", "-C65536") into their own argument,
// as the flag package wants them.
func splitAttached(args []string, letters ...string) []string {
	out := make([]string, 0, len(args)+1)
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		split := false
		for _, l := range letters {
			if len(a) > 2 && strings.HasPrefix(a, "-"+l) && a[2] != '=' {
				out = append(out, "-"+l, a[2:])
				split = true
				break
			}
		}
		if !split {
			out = append(out, a)
		}
	}
	return out
}

// buildImage runs a build into a temporary file next to out and renames
// it into place only when the build succeeded.
func buildImage(ctx context.Context, src, out string, opts build.Options, topts build.TarOptions, stdin io.Reader) (*build.Result, error) {
	if opts.BlobDir != "" {
		if err := os.MkdirAll(opts.BlobDir, 0o755); err != nil {
			return nil, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return nil, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	b, err := build.New(tmp, opts)
	if err != nil {
		return nil, err
	}
	defer b.Abort()
	if err := addSource(ctx, b, src, topts, stdin); err != nil {
		return nil, err
	}
	res, err := b.Finish(ctx)
	if err != nil {
		return nil, err
	}
	if err := tmp.Truncate(res.ImageSize); err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return nil, err
	}
	tmp = nil
	return res, nil
}

func addSource(ctx context.Context, b *build.Builder, src string, topts build.TarOptions, stdin io.Reader) error {
	if src == "-" {
		return b.AddTar(ctx, stdin, topts)
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return b.AddDir(ctx, src)
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := b.AddTar(ctx, f, topts); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	return nil
}

func printBuildSummary(w io.Writer, out string, r *build.Result) {
	fmt.Fprintf(w, "image      %s (%s)\n", out, humanBytes(r.ImageSize))
	fmt.Fprintf(w, "entries    %d inodes: %d files, %d dirs, %d symlinks, %d other\n", r.Inodes, r.Files, r.Dirs, r.Symlinks, r.Others)
	fmt.Fprintf(w, "file data  %s", humanBytes(r.DataBytes))
	if r.HoleBytes > 0 {
		fmt.Fprintf(w, " (%s of it holes)", humanBytes(r.HoleBytes))
	}
	fmt.Fprintln(w)
	for _, b := range r.Blobs {
		fmt.Fprintf(w, "blob       sha256:%s (%s)\n", b.Digest, humanBytes(b.Size))
	}
	if len(r.Blobs) > 0 {
		fmt.Fprintf(w, "chunks     %d referenced, %d stored, dedupe saved %s\n", r.Chunks, r.UniqueChunk, humanBytes(r.DedupeSaved))
	}
	if r.CompressedFiles > 0 {
		fmt.Fprintf(w, "compressed %d files (%d with an inline tail), extent dedupe saved %s\n", r.CompressedFiles, r.InlineTails, humanBytes(r.ExtentDedupeSaved))
	}
	fmt.Fprintf(w, "uuid       %s\nbuild time %s\n", formatUUID(r.UUID), r.BuildTime.Format(time.RFC3339Nano))
}

func printBuildJSON(w io.Writer, out string, r *build.Result) error {
	type blobJSON struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
	}
	v := struct {
		Image       string     `json:"image"`
		ImageSize   int64      `json:"image_size"`
		Inodes      int        `json:"inodes"`
		Files       int        `json:"files"`
		Dirs        int        `json:"dirs"`
		Symlinks    int        `json:"symlinks"`
		Others      int        `json:"others"`
		DataBytes   int64      `json:"data_bytes"`
		HoleBytes   int64      `json:"hole_bytes"`
		Blobs       []blobJSON `json:"blobs"`
		Chunks      int        `json:"chunks"`
		Unique      int        `json:"unique_chunks"`
		DedupeSaved int64      `json:"dedupe_saved_bytes"`
		Compressed  int        `json:"compressed_files"`
		InlineTails int        `json:"inline_tails"`
		ExtDedupe   int64      `json:"extent_dedupe_saved_bytes"`
		UUID        string     `json:"uuid"`
		BuildTime   time.Time  `json:"build_time"`
	}{out, r.ImageSize, r.Inodes, r.Files, r.Dirs, r.Symlinks, r.Others, r.DataBytes, r.HoleBytes, []blobJSON{},
		r.Chunks, r.UniqueChunk, r.DedupeSaved, r.CompressedFiles, r.InlineTails, r.ExtentDedupeSaved, formatUUID(r.UUID), r.BuildTime}
	for _, b := range r.Blobs {
		v.Blobs = append(v.Blobs, blobJSON{"sha256:" + b.Digest, b.Size})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseSize parses "1048576", "64K", "1M", "1G" (binary units).
func parseSize(s string) (int64, error) {
	n, err := units.ParseBytes(s)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n, nil
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return time.Time{}, fmt.Errorf("negative time %d", n)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither unix seconds nor RFC 3339", s)
	}
	return t, nil
}

func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		return u, fmt.Errorf("bad UUID %q", s)
	}
	copy(u[:], b)
	return u, nil
}

func formatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// newProgressPrinter redraws one status line at most ten times a second.
func newProgressPrinter(w io.Writer) func(build.Progress) {
	var last time.Time
	return func(p build.Progress) {
		now := time.Now()
		if now.Sub(last) < 100*time.Millisecond {
			return
		}
		last = now
		path := p.Path
		if len(path) > 50 {
			path = "…" + path[len(path)-49:]
		}
		fmt.Fprintf(w, "\r\033[K%d entries, %s  %s", p.Entries, humanBytes(p.Bytes), path)
	}
}
