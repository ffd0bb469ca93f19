// Package testimage builds EROFS images for tests with erofs/build, so
// that tests across packages share one way of doing it.
package testimage

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
)

// Write builds an image at out with opts, adding content with add (for
// example AddDir or AddLayer calls), and returns the build result; the
// file is truncated to the image size.
func Write(t testing.TB, out string, opts build.Options, add func(context.Context, *build.Builder) error) *build.Result {
	t.Helper()
	if opts.BlobDir != "" {
		if err := os.MkdirAll(opts.BlobDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := build.New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	ctx := context.Background()
	if err := add(ctx, b); err != nil {
		t.Fatalf("building %s: %v", out, err)
	}
	res, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(res.ImageSize); err != nil {
		t.Fatal(err)
	}
	return res
}

// Build builds src, a directory or a tar file (plain, gzip or zstd), into
// a new image in a temporary directory with opts (set BlobDir for blob
// mode), and returns the image path, the paths of its blobs in device
// order, and the build result.
func Build(t testing.TB, src string, opts build.Options) (image string, blobs []string, res *build.Result) {
	t.Helper()
	image = filepath.Join(t.TempDir(), "image.erofs")
	res = Write(t, image, opts, func(ctx context.Context, b *build.Builder) error {
		if st, err := os.Stat(src); err == nil && st.IsDir() {
			return b.AddDir(ctx, src)
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		return b.AddTar(ctx, f, build.TarOptions{})
	})
	for _, bl := range res.Blobs {
		blobs = append(blobs, filepath.Join(opts.BlobDir, bl.Digest))
	}
	return image, blobs, res
}
