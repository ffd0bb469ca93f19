package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestConvertCommand(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	src := testoci.Image(t, testoci.Layers(t, 256<<10), "linux", "amd64")
	ref, err := name.ParseReference(reg.Host + "/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, src); err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(t.TempDir(), "layout")

	// Registry to layout, then layout to registry: the digests agree.
	out, err := runCmd(t, "convert", "--plain-http", "--platform", "linux/amd64", "--json", "--work-dir", t.TempDir(),
		"oci://"+reg.Host+"/app:v1", layoutDir+":erofs")
	if err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	var res convertedJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("convert --json: %v\n%s", err, out)
	}
	if res.MediaType != "manifest" || len(res.Images) != 1 || len(res.Images[0].Blobs) != 3 || !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("convert summary: %s", out)
	}
	out, err = runCmd(t, "convert", "--plain-http", "--platform", "linux/amd64", reg.Host+"/app:v1", reg.Host+"/app:erofs")
	if err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	if !strings.Contains(out, res.Digest) {
		t.Errorf("registry conversion does not give the layout's digest %s:\n%s", res.Digest, out)
	}

	for _, tc := range []struct {
		args  []string
		usage bool
	}{
		{[]string{"convert", "--plain-http", reg.Host + "/app:v1"}, true},
		{[]string{"convert", "--platform", "linux", reg.Host + "/app:v1", layoutDir}, true},
		{[]string{"convert", "--chunk-size", "3K", reg.Host + "/app:v1", layoutDir}, true},
		// Plain HTTP is never the default, not even on loopback.
		{[]string{"convert", "--platform", "linux/amd64", reg.Host + "/app:v1", layoutDir}, false},
		{[]string{"convert", "--plain-http", "--platform", "linux/amd64", reg.Host + "/missing:v1", layoutDir}, false},
	} {
		out, err := runCmd(t, tc.args...)
		if err == nil {
			t.Errorf("%q: no error\n%s", tc.args, out)
		} else if errors.Is(err, errUsage) != tc.usage {
			t.Errorf("%q: %v (usage error: %v, want %v)", tc.args, err, errors.Is(err, errUsage), tc.usage)
		}
	}
}
