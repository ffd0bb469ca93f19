package oci

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func validManifest() v1.Manifest {
	h := func(c byte) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)} }
	return v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Size: 10, Digest: h('c')},
		Layers: []v1.Descriptor{
			{MediaType: BootstrapMediaType, Size: 4096, Digest: h('b')},
			{MediaType: BlobMediaType, Size: 1 << 20, Digest: h('1')},
			{MediaType: BlobMediaType, Size: 1 << 20, Digest: h('2')},
		},
	}
}

func TestParseManifest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*v1.Manifest)
		wantErr error // nil: any error; ok: none
		ok      bool
	}{
		{name: "valid", edit: func(*v1.Manifest) {}, ok: true},
		{name: "no blobs", edit: func(m *v1.Manifest) { m.Layers = m.Layers[:1] }, ok: true},
		{name: "container image config", edit: func(m *v1.Manifest) { m.Config.MediaType = types.OCIConfigJSON }, wantErr: ErrNotErofsd},
		{name: "no layers", edit: func(m *v1.Manifest) { m.Layers = nil }, wantErr: ErrNotErofsd},
		{name: "blob first", edit: func(m *v1.Manifest) { m.Layers[0], m.Layers[1] = m.Layers[1], m.Layers[0] }, wantErr: ErrNotErofsd},
		{name: "foreign layer", edit: func(m *v1.Manifest) { m.Layers[2].MediaType = types.OCILayer }},
		{name: "duplicate blob", edit: func(m *v1.Manifest) { m.Layers[2].Digest = m.Layers[1].Digest }},
		{name: "negative size", edit: func(m *v1.Manifest) { m.Layers[1].Size = -1 }},
		{name: "sha512", edit: func(m *v1.Manifest) { m.Layers[1].Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)} }},
		{name: "schema 1", edit: func(m *v1.Manifest) { m.SchemaVersion = 1 }},
		{name: "docker media type", edit: func(m *v1.Manifest) { m.MediaType = types.DockerManifestSchema2 }, wantErr: ErrNotErofsd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := validManifest()
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
				if got.Bootstrap.Digest != m.Layers[0].Digest || len(got.Blobs) != len(m.Layers)-1 {
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
	f.Add([]byte(`{"schemaVersion":2,"layers":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if m.Bootstrap.MediaType != BootstrapMediaType || m.Bootstrap.Size < 0 {
			t.Fatalf("accepted a bad bootstrap: %+v", m.Bootstrap)
		}
		for _, b := range m.Blobs {
			if b.MediaType != BlobMediaType || b.Size < 0 || len(b.Digest.Hex) != 64 {
				t.Fatalf("accepted a bad blob: %+v", b)
			}
		}
	})
}
