package oci

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func writeLayout(t *testing.T, dir string, src any, tag string) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	opt := layout.WithAnnotations(map[string]string{refNameAnnotation: tag})
	switch s := src.(type) {
	case v1.Image:
		err = p.AppendImage(s, opt)
	case v1.ImageIndex:
		err = p.AppendIndex(s, opt)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// summary describes a tree as path -> type, permissions, owner and
// content digest or link target, for comparing a flattened rootfs with
// an image read through our reader.
func summaryDir(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var extra string
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			extra = fmt.Sprintf("%x", sha256.Sum256(data))
		case fi.Mode()&fs.ModeSymlink != 0:
			extra, _ = os.Readlink(p)
		}
		out[rel] = describe(fi, extra)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func summaryImage(t *testing.T, img *erofs.Image) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		fi, err := img.Lstat(p)
		if err != nil {
			return err
		}
		var extra string
		switch {
		case fi.Mode().IsRegular():
			data, err := fs.ReadFile(img, p)
			if err != nil {
				return err
			}
			extra = fmt.Sprintf("%x", sha256.Sum256(data))
		case fi.Mode()&fs.ModeSymlink != 0:
			extra, _ = img.ReadLink(p)
		}
		out[p] = describe(fi, extra)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func describe(fi fs.FileInfo, extra string) string {
	s := fmt.Sprintf("%s %s", fi.Mode().Type(), fi.Mode().Perm())
	if fi.Mode().IsRegular() {
		s += fmt.Sprintf(" %d", fi.Size())
	}
	return s + " " + extra
}

func compareSummaries(t *testing.T, want, got map[string]string) {
	t.Helper()
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	}) {
		if got[k] != want[k] {
			t.Errorf("%s: got %q, want %q", k, got[k], want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: in the image, not in the flattened rootfs", k)
		}
	}
}

// openConverted reads the converted image at a layout dir through our
// reader: the layout's blobs/sha256 dir holds blobs named by hex digest.
func openConverted(t *testing.T, dir string, m *Manifest) *erofs.Image {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	f, err := os.Open(filepath.Join(blobs, m.Bootstrap.Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	img, err := erofs.Open(f, erofs.WithBlobs(erofs.DirBlobs(blobs)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

func readManifest(t *testing.T, dir string, d v1.Hash) (*Manifest, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Hex))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m, raw
}

func convertTo(t *testing.T, src, dst string, opts ConvertOptions, ro RemoteOptions) v1.Hash {
	t.Helper()
	ctx := context.Background()
	srcLoc, err := ParseLocation(src, ro)
	if err != nil {
		t.Fatal(err)
	}
	dstLoc, err := ParseLocation(dst, ro)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenSource(ctx, srcLoc, ro)
	if err != nil {
		t.Fatal(err)
	}
	opts.SourceRef = src
	c, err := Convert(ctx, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := Write(ctx, dstLoc, c, ro)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConvertLayout(t *testing.T) {
	layers := testoci.Layers(t, 3<<20+12345)
	src := testoci.Image(t, layers, "linux", "amd64")
	srcDir := filepath.Join(t.TempDir(), "src")
	writeLayout(t, srcDir, src, "v1")
	rootfs := t.TempDir()
	testoci.Flatten(t, src, rootfs)

	dst := filepath.Join(t.TempDir(), "dst")
	var progress []LayerProgress
	opts := ConvertOptions{ChunkSize: 64 << 10, WorkDir: t.TempDir(), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"},
		Progress: func(p LayerProgress) { progress = append(progress, p) }}
	d1 := convertTo(t, srcDir+":v1", dst+":erofs", opts, RemoteOptions{})
	// The same conversion again gives the same digest: reproducible.
	opts.Progress = nil
	d2 := convertTo(t, srcDir+":v1", dst+":erofs-again", opts, RemoteOptions{})
	if d1 != d2 {
		t.Fatalf("converting twice gave %s and %s", d1, d2)
	}
	if entries, _ := os.ReadDir(opts.WorkDir); len(entries) != 0 {
		t.Errorf("work dir not cleaned: %d entries", len(entries))
	}
	done := 0
	for _, p := range progress {
		if p.Done {
			done++
			if p.Read != p.Size || p.Layers != 3 {
				t.Errorf("progress %+v", p)
			}
		}
	}
	if done != 3 {
		t.Errorf("%d layers reported done, want 3", done)
	}

	m, _ := readManifest(t, dst, d1)
	if len(m.Blobs) != 3 {
		t.Fatalf("%d blobs, want one per layer", len(m.Blobs))
	}
	srcDigest, _ := src.Digest()
	if m.Annotations[AnnotationSourceManifest] != srcDigest.String() || m.Annotations[AnnotationSourceRef] != srcDir+":v1" {
		t.Errorf("annotations %v", m.Annotations)
	}
	for i, b := range m.Blobs {
		ld, _ := layers[i].Digest()
		if b.Annotations[AnnotationSourceLayer] != ld.String() {
			t.Errorf("blob %d: source layer %q, want %s", i, b.Annotations[AnnotationSourceLayer], ld)
		}
	}
	// data/big-copy (layer 2) repeats data/big (layer 1): its chunks are
	// not stored again, so layer 2's blob is small.
	if m.Blobs[1].Size > 64<<10 {
		t.Errorf("layer 2 blob is %d bytes: chunks of layer 1 stored again", m.Blobs[1].Size)
	}
	raw, err := os.ReadFile(filepath.Join(dst, "blobs", "sha256", m.Config.Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	// A standard image config a runtime can read: the source's platform
	// and run configuration, one diff ID per layer (its digest).
	cfg, err := m.CheckConfig(raw)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, raw)
	}
	if m.Format != 2 || m.Config.MediaType != types.OCIConfigJSON || cfg.OS != "linux" || cfg.Architecture != "amd64" ||
		len(cfg.Config.Entrypoint) == 0 || cfg.Config.Entrypoint[0] != "/bin/sh" || len(cfg.OSFeatures) != 0 || len(cfg.History) != 4 {
		t.Errorf("config %s", raw)
	}
	if m.Annotations[AnnotationFormat] != "2" || m.Bootstrap.Annotations[AnnotationChunkSize] != "65536" ||
		m.Bootstrap.Annotations[AnnotationRole] != "bootstrap" {
		t.Errorf("annotations: manifest %v, bootstrap %v", m.Annotations, m.Bootstrap.Annotations)
	}
	for i, b := range m.Blobs {
		if b.Annotations[AnnotationRole] != "blob" || b.Annotations[AnnotationErofsRole] != "device" || !strings.HasPrefix(string(b.MediaType), "application/vnd.oci.image.layer.") {
			t.Errorf("blob %d: %+v", i, b)
		}
	}
	img := openConverted(t, dst, m)
	want := summaryDir(t, rootfs)
	if len(want) < 15 || !strings.HasPrefix(want["usr/bin/tool2"], "---------- -rwxr-xr-x 307200 ") || want["etc/gone"] != "" || want["opt/old"] != "" {
		t.Fatalf("flattened rootfs is not the expected one: %v", want)
	}
	compareSummaries(t, want, summaryImage(t, img))
	rep, err := erofs.Check(context.Background(), mustOpen(t, filepath.Join(dst, "blobs", "sha256", m.Bootstrap.Digest.Hex)),
		erofs.CheckOptions{Blobs: erofs.DirBlobs(filepath.Join(dst, "blobs", "sha256")), VerifyData: true})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if rep.ChunksVerified == 0 {
		t.Error("no chunk verified")
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestConvertIndexPlatforms(t *testing.T) {
	layers := testoci.Layers(t, 100<<10)
	idx := testoci.Index(t, map[string]v1.Image{
		"linux/amd64": testoci.Image(t, layers, "linux", "amd64"),
		"linux/arm64": testoci.Image(t, layers[:2], "linux", "arm64"),
	})
	srcDir := filepath.Join(t.TempDir(), "src")
	writeLayout(t, srcDir, idx, "multi")
	work := t.TempDir()

	dst := filepath.Join(t.TempDir(), "dst")
	arm := convertTo(t, srcDir, dst+":arm", ConvertOptions{WorkDir: work, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}, RemoteOptions{})
	m, _ := readManifest(t, dst, arm)
	if len(m.Blobs) != 2 || m.Annotations[AnnotationSourceIndex] == "" {
		t.Errorf("arm64 image: %d blobs, annotations %v", len(m.Blobs), m.Annotations)
	}

	all := convertTo(t, srcDir, dst+":all", ConvertOptions{WorkDir: work, AllPlatforms: true}, RemoteOptions{})
	raw, err := os.ReadFile(filepath.Join(dst, "blobs", "sha256", all.Hex))
	if err != nil {
		t.Fatal(err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(raw, &im); err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index of %d manifests, want 2", len(im.Manifests))
	}
	for _, d := range im.Manifests {
		readManifest(t, dst, d.Digest) // each is an erofsd image
		if d.Platform == nil {
			t.Fatalf("manifest %s without platform", d.Digest)
		}
		if d.Platform.Architecture == "arm64" && d.Digest != arm {
			t.Errorf("arm64 in the index is %s, alone %s: not reproducible", d.Digest, arm)
		}
	}

	ctx := context.Background()
	s, err := OpenSource(ctx, Location{LayoutDir: srcDir}, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Convert(ctx, s, ConvertOptions{WorkDir: work, Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}); !errors.Is(err, ErrNoPlatform) {
		t.Errorf("missing platform: %v, want ErrNoPlatform", err)
	}
}

func TestParseLocation(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		in        string
		ref       string
		dir, tag  string
		wantError bool
	}{
		{in: "oci://127.0.0.1:5000/app:v1", ref: "127.0.0.1:5000/app:v1"},
		{in: "registry.example/ns/app@sha256:" + strings.Repeat("a", 64), ref: "registry.example/ns/app@sha256:" + strings.Repeat("a", 64)},
		{in: "example.com/app", ref: "example.com/app:latest"},
		{in: "localhost/app:v1", ref: "localhost/app:v1"},
		{in: "oci://app:v1", wantError: true},      // no registry: never Docker Hub by default
		{in: "myregistry/app:v1", wantError: true}, // "myregistry" is a Docker Hub namespace, not a host
		{in: "alpine:3", wantError: true},
		{in: dir, dir: dir},
		{in: dir + ":v2", dir: dir, tag: "v2"},
		{in: "./new-layout", dir: "./new-layout"},
		{in: "/nonexistent/layout:tag", dir: "/nonexistent/layout", tag: "tag"},
		{in: "oci://Bad Ref", wantError: true},
		{in: dir + ":", wantError: true},
	} {
		loc, err := ParseLocation(tc.in, RemoteOptions{})
		if tc.wantError {
			if err == nil {
				t.Errorf("%q: no error", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if tc.ref != "" && (loc.Ref == nil || loc.Ref.Name() != tc.ref) {
			t.Errorf("%q: ref %v, want %s", tc.in, loc.Ref, tc.ref)
		}
		if tc.dir != "" && (loc.LayoutDir != tc.dir || loc.LayoutTag != tc.tag) {
			t.Errorf("%q: layout %q tag %q, want %q %q", tc.in, loc.LayoutDir, loc.LayoutTag, tc.dir, tc.tag)
		}
	}
}

// TestConvertRegistry converts from one repository of the real registry
// into another, then resolves the result as the daemon does.
func TestConvertRegistry(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	layers := testoci.Layers(t, 1<<20)
	src := testoci.Image(t, layers, "linux", "amd64")
	plain := RemoteOptions{PlainHTTP: true}
	srcRef := "oci://" + reg.Host + "/app:v1"
	ref, _ := ParseReference(srcRef, plain)
	if err := remote.Write(ref, src); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	work := t.TempDir()

	// Without --plain-http nothing talks HTTP, loopback or not.
	loc, err := ParseLocation(srcRef, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSource(ctx, loc, RemoteOptions{}); err == nil {
		t.Fatal("opened a plain-HTTP registry without PlainHTTP")
	}

	dstRef := "oci://" + reg.Host + "/app:v1-erofs"
	platform := &v1.Platform{OS: "linux", Architecture: "amd64"}
	d := convertTo(t, srcRef, dstRef, ConvertOptions{WorkDir: work, Platform: platform}, plain)
	if again := convertTo(t, srcRef, dstRef, ConvertOptions{WorkDir: work, Platform: platform}, plain); again != d {
		t.Errorf("second conversion %s, first %s", again, d)
	}

	res, err := Resolve(ctx, dstRef, platform, plain)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != d || len(res.Manifest.Blobs) != 3 || res.Repository.RepositoryStr() != "app" {
		t.Errorf("resolved %s with %d blobs in %s", res.Digest, len(res.Manifest.Blobs), res.Repository)
	}
	// The unconverted image is refused with a clear error.
	if _, err := Resolve(ctx, srcRef, platform, plain); !errors.Is(err, ErrNotErofsd) {
		t.Errorf("resolving the source image: %v, want ErrNotErofsd", err)
	}
	if _, err := Resolve(ctx, "oci://"+reg.Host+"/app:missing", platform, plain); err == nil {
		t.Error("resolved a missing tag")
	}
}

// TestConvertRegistryAuth converts into a registry with basic auth, with
// credentials from a docker config file as users keep them.
func TestConvertRegistryAuth(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{User: "alice", Password: "s3cret"})
	src := testoci.Image(t, testoci.Layers(t, 64<<10), "linux", "amd64")
	srcDir := filepath.Join(t.TempDir(), "src")
	writeLayout(t, srcDir, src, "v1")
	dst := "oci://" + reg.Host + "/secure/app:erofs"
	ctx := context.Background()

	s, err := OpenSource(ctx, Location{LayoutDir: srcDir}, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Convert(ctx, s, ConvertOptions{WorkDir: t.TempDir(), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	loc, _ := ParseLocation(dst, RemoteOptions{PlainHTTP: true})

	// No credentials: refused.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if _, err := Write(ctx, loc, c, RemoteOptions{PlainHTTP: true}); err == nil {
		t.Fatal("pushed without credentials")
	}
	// Credentials in $DOCKER_CONFIG/config.json.
	cfgDir := t.TempDir()
	auth := `{"auths":{"` + reg.Host + `":{"auth":"` + b64("alice:s3cret") + `"}}}`
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfgDir)
	d, err := Write(ctx, loc, c, RemoteOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Resolve(ctx, dst, nil, RemoteOptions{PlainHTTP: true, Keychain: authn.NewMultiKeychain(authn.DefaultKeychain)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != d {
		t.Errorf("resolved %s, pushed %s", res.Digest, d)
	}
	// A wrong password is refused.
	bad := staticKeychain{reg.Host, &authn.Basic{Username: "alice", Password: "wrong"}}
	if _, err := Resolve(ctx, dst, nil, RemoteOptions{PlainHTTP: true, Keychain: bad}); err == nil {
		t.Error("resolved with a wrong password")
	}
}

type staticKeychain struct {
	host string
	auth authn.Authenticator
}

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		return k.auth, nil
	}
	return authn.Anonymous, nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
