package oci

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func h(c byte) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)} }

// validManifest is a format 2 manifest: blobs, then the bootstrap.
func validManifest() v1.Manifest {
	return v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: 10, Digest: h('c')},
		Layers: []v1.Descriptor{
			{MediaType: BlobMediaType, Size: 1 << 20, Digest: h('1')},
			{MediaType: BlobMediaType, Size: 1 << 20, Digest: h('2')},
			{MediaType: BootstrapMediaType, Size: 4096, Digest: h('b')},
		},
	}
}

// v1Manifest is a format 1 manifest: the bootstrap, then blobs.
func v1Manifest() v1.Manifest {
	return v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: V1ConfigMediaType, Size: 10, Digest: h('c')},
		Layers: []v1.Descriptor{
			{MediaType: V1BootstrapMediaType, Size: 4096, Digest: h('b')},
			{MediaType: V1BlobMediaType, Size: 1 << 20, Digest: h('1')},
			{MediaType: V1BlobMediaType, Size: 1 << 20, Digest: h('2')},
		},
	}
}

func TestParseManifest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		base    func() v1.Manifest
		edit    func(*v1.Manifest)
		wantErr error // nil: any error; ok: none
		ok      bool
	}{
		{name: "valid", edit: func(*v1.Manifest) {}, ok: true},
		{name: "no blobs", edit: func(m *v1.Manifest) { m.Layers = m.Layers[2:] }, ok: true},
		{name: "format 1", base: v1Manifest, edit: func(*v1.Manifest) {}, ok: true},
		{name: "format 1 no blobs", base: v1Manifest, edit: func(m *v1.Manifest) { m.Layers = m.Layers[:1] }, ok: true},
		{name: "format 1 types in a format 2 layout", edit: func(m *v1.Manifest) { m.Layers[0].MediaType = V1BlobMediaType }},
		{name: "image config of another kind", edit: func(m *v1.Manifest) { m.Config.MediaType = "application/vnd.example+json" }, wantErr: ErrNotErofsd},
		{name: "a container image", edit: func(m *v1.Manifest) {
			for i := range m.Layers {
				m.Layers[i].MediaType = types.OCILayer
			}
		}, wantErr: ErrNotErofsd},
		{name: "no layers", edit: func(m *v1.Manifest) { m.Layers = nil }, wantErr: ErrNotErofsd},
		{name: "bootstrap first", edit: func(m *v1.Manifest) { m.Layers[0], m.Layers[2] = m.Layers[2], m.Layers[0] }, wantErr: ErrNotErofsd},
		{name: "format 1 blob first", base: v1Manifest, edit: func(m *v1.Manifest) { m.Layers[0], m.Layers[1] = m.Layers[1], m.Layers[0] }, wantErr: ErrNotErofsd},
		{name: "two bootstraps", edit: func(m *v1.Manifest) { m.Layers[0].MediaType = BootstrapMediaType }},
		{name: "foreign layer", edit: func(m *v1.Manifest) { m.Layers[1].MediaType = types.OCILayer }},
		{name: "duplicate blob", edit: func(m *v1.Manifest) { m.Layers[1].Digest = m.Layers[0].Digest }},
		{name: "blob named as the bootstrap", edit: func(m *v1.Manifest) { m.Layers[1].Digest = m.Layers[2].Digest }},
		{name: "negative size", edit: func(m *v1.Manifest) { m.Layers[1].Size = -1 }},
		{name: "sha512", edit: func(m *v1.Manifest) { m.Layers[1].Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)} }},
		{name: "schema 1", edit: func(m *v1.Manifest) { m.SchemaVersion = 1 }},
		{name: "docker media type", edit: func(m *v1.Manifest) { m.MediaType = types.DockerManifestSchema2 }, wantErr: ErrNotErofsd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := validManifest
			if tc.base != nil {
				base = tc.base
			}
			m := base()
			tc.edit(&m)
			raw, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseManifest(raw)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if got.Bootstrap.Digest != h('b') || len(got.Blobs) != len(m.Layers)-1 {
					t.Errorf("parsed %+v", got)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
	if _, err := ParseManifest([]byte("{")); err == nil {
		t.Error("accepted truncated JSON")
	}
}

func FuzzParseManifest(f *testing.F) {
	raw, _ := json.Marshal(validManifest())
	f.Add(raw)
	raw, _ = json.Marshal(v1Manifest())
	f.Add(raw)
	f.Add([]byte(`{"schemaVersion":2,"layers":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		boot, blob := BootstrapMediaType, BlobMediaType
		if m.Format == 1 {
			boot, blob = V1BootstrapMediaType, V1BlobMediaType
		}
		if m.Bootstrap.MediaType != boot || m.Bootstrap.Size < 0 {
			t.Fatalf("accepted a bad bootstrap: %+v", m.Bootstrap)
		}
		for _, b := range m.Blobs {
			if b.MediaType != blob || b.Size < 0 || len(b.Digest.Hex) != 64 {
				t.Fatalf("accepted a bad blob: %+v", b)
			}
		}
	})
}

// TestCheckConfig: a format 2 config must name each layer by its digest,
// in order; format 1 images have no config a runtime can read.
func TestCheckConfig(t *testing.T) {
	raw, _ := json.Marshal(validManifest())
	m, err := ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	good := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{h('1'), h('2'), h('b')}}}
	for _, tc := range []struct {
		name string
		edit func(*v1.ConfigFile)
		ok   bool
	}{
		{"good", func(*v1.ConfigFile) {}, true},
		{"too few diff IDs", func(c *v1.ConfigFile) { c.RootFS.DiffIDs = c.RootFS.DiffIDs[1:] }, false},
		{"out of order", func(c *v1.ConfigFile) {
			c.RootFS.DiffIDs[0], c.RootFS.DiffIDs[1] = c.RootFS.DiffIDs[1], c.RootFS.DiffIDs[0]
		}, false},
		{"not layers", func(c *v1.ConfigFile) { c.RootFS.Type = "other" }, false},
	} {
		cfg := good
		cfg.RootFS.DiffIDs = append([]v1.Hash(nil), good.RootFS.DiffIDs...)
		tc.edit(&cfg)
		b, _ := json.Marshal(cfg)
		if _, err := m.CheckConfig(b); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := m.CheckConfig([]byte("{")); err == nil {
		t.Error("truncated config accepted")
	}
	raw, _ = json.Marshal(v1Manifest())
	old, err := ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.CheckConfig(nil); !errors.Is(err, ErrOldFormat) {
		t.Errorf("format 1: %v", err)
	}
}
