package testcontainerd

import (
	"archive/tar"
	"debug/elf"
	"os"
	"testing"

	"github.com/erofsd/erofsd/internal/hostcap"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// busyboxPath is Debian's static busybox (package busybox-static).
const busyboxPath = "/bin/busybox"

// staticBusybox is a need: a statically linked busybox, which runs in an
// image without a C library.
func staticBusybox() error {
	f, err := elf.Open(busyboxPath)
	if err != nil {
		return &hostcap.Missing{What: busyboxPath, Why: "not found (Debian package busybox-static)", Installable: true, Err: err}
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return &hostcap.Missing{What: busyboxPath, Why: "is dynamically linked (install busybox-static)", Installable: true}
		}
	}
	return nil
}

// BusyboxLayer is a layer with /bin/busybox and /bin/sh: enough to run
// shell commands in a container.
func BusyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	require.Host(t, staticBusybox)
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	return testoci.Layer(t, []testoci.Entry{
		{Name: "bin", Type: tar.TypeDir},
		{Name: "bin/busybox", Body: bb, Mode: 0o755},
		{Name: "bin/sh", Type: tar.TypeSymlink, Body: []byte("busybox")},
		{Name: "tmp", Type: tar.TypeDir, Mode: 0o1777},
	})
}

// Image is a linux/amd64 image of busybox and the layers, whose
// entrypoint is entrypoint.
func Image(t testing.TB, entrypoint []string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := testoci.Image(t, append([]v1.Layer{BusyboxLayer(t)}, layers...), "linux", "amd64")
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Entrypoint = entrypoint
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// PauseImage is a pod sandbox image: busybox sleeping for ever.
func PauseImage(t testing.TB) v1.Image {
	t.Helper()
	return Image(t, []string{"/bin/busybox", "sleep", "2147483647"})
}
