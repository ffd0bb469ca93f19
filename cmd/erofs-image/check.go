package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/erofsd/erofsd/erofs"
)

func cmdCheck(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	blobDir := fs.String("blob-dir", "", "`dir` holding the image's blobs (named by digest); every chunk is verified against its sha256")
	metaOnly := fs.Bool("metadata-only", false, "check metadata only, do not read file data")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: erofs-image check [--blob-dir DIR] IMAGE\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return fmt.Errorf("%w: check needs one IMAGE", errUsage)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	opts := erofs.CheckOptions{VerifyData: !*metaOnly, Size: st.Size()}
	if *blobDir != "" {
		blobs := erofs.DirBlobs(*blobDir)
		if c, ok := blobs.(io.Closer); ok {
			defer c.Close()
		}
		opts.Blobs = blobs
	}
	rep, err := erofs.Check(ctx, f, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	fmt.Fprintf(stdout, "%s: clean: %d inodes (%d files, %d dirs, %d symlinks, %d devices, %d other), %d xattrs, %s of file data\n",
		pos[0], rep.Inodes, rep.Files, rep.Dirs, rep.Symlinks, rep.Devices, rep.Others, rep.Xattrs, humanBytes(rep.DataBytes))
	if rep.Extents > 0 {
		fmt.Fprintf(stdout, "compressed: %d files, %d extents from %s of pclusters, %d distinct extents decoded\n",
			rep.CompressedFiles, rep.Extents, humanBytes(rep.EncodedBytes), rep.ExtentsDecoded)
	}
	if rep.Chunks > 0 {
		fmt.Fprintf(stdout, "chunks: %d (%d holes), %d blob chunks verified against their sha256\n", rep.Chunks, rep.HoleChunks, rep.ChunksVerified)
	} else if rep.ChunksVerified > 0 {
		fmt.Fprintf(stdout, "%d blob chunks (of pclusters) verified against their sha256\n", rep.ChunksVerified)
	}
	if *blobDir == "" {
		if img, err := erofs.Open(f, erofs.WithSize(st.Size())); err == nil {
			if n := len(img.Devices()); n > 0 {
				fmt.Fprintf(stdout, "note: the image's data lives in %d blob(s), not checked: pass --blob-dir\n", n)
			}
			img.Close()
		}
	}
	return nil
}
