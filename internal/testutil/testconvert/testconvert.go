// Package testconvert converts test images into erofsd images in a test
// registry, as erofs-image convert does.
package testconvert

import (
	"context"
	"testing"

	"github.com/erofsd/erofsd/oci"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// InRegistry converts the linux/amd64 image at from (an
// oci:// reference on a plain HTTP registry) into an erofsd image with
// chunkSize and pushes it to to, as erofs-image convert --plain-http
// --platform linux/amd64 does.
func InRegistry(t testing.TB, from, to string, chunkSize int64) {
	t.Helper()
	InRegistryWith(t, from, to, oci.ConvertOptions{ChunkSize: chunkSize})
}

// InRegistryWith is InRegistry with more of the conversion's options
// (ChunkSize, PrefetchList); the work dir, platform and source name are
// set as InRegistry sets them.
func InRegistryWith(t testing.TB, from, to string, opts oci.ConvertOptions) {
	t.Helper()
	ctx := context.Background()
	ro := oci.RemoteOptions{PlainHTTP: true}
	src, err := oci.ParseLocation(from, ro)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := oci.ParseLocation(to, ro)
	if err != nil {
		t.Fatal(err)
	}
	source, err := oci.OpenSource(ctx, src, ro)
	if err != nil {
		t.Fatal(err)
	}
	opts.WorkDir, opts.Platform = t.TempDir(), &v1.Platform{OS: "linux", Architecture: "amd64"}
	if src.Ref != nil {
		opts.SourceRef = src.Ref.Name()
	}
	c, err := oci.Convert(ctx, source, opts)
	if err != nil {
		t.Fatalf("convert %s: %v", from, err)
	}
	defer c.Close()
	if _, err := oci.Write(ctx, dst, c, ro); err != nil {
		t.Fatalf("pushing %s: %v", to, err)
	}
}
