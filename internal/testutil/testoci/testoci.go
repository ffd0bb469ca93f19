// Package testoci builds OCI container images for tests (layers written
// with go-containerregistry) and unpacks their flattened root filesystem,
// the reference a converted image is compared with.
package testoci

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// Entry is one tar entry of a layer. Body is a file's content; for a
// symlink it is the target, for a hardlink the path linked to.
type Entry struct {
	Name string
	Type byte // tar.TypeReg (default), TypeDir, TypeSymlink, TypeLink
	Body []byte
	Mode int64
	UID  int
}

var mtime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Layer returns a gzip-compressed layer of the entries, in order.
func Layer(t testing.TB, entries []Entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.UID, ModTime: mtime, Format: tar.FormatPAX}
		switch e.Type {
		case 0, tar.TypeReg:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.Body))
		case tar.TypeSymlink, tar.TypeLink:
			h.Linkname = string(e.Body)
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if e.Type == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Random returns n bytes of seeded random data.
func Random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Layers returns the layers of the standard test image: overwrites,
// deletions (whiteouts), an opaque directory, hardlinks within and across
// layers, symlinks, ownership, and files of several chunks, some shared
// between layers. bigSize sets the size of the largest file.
func Layers(t testing.TB, bigSize int) []v1.Layer {
	big := Random(1, bigSize)
	return []v1.Layer{
		Layer(t, []Entry{
			{Name: "etc/", Type: tar.TypeDir},
			{Name: "etc/passwd", Body: []byte("root:x:0:0\n")},
			{Name: "etc/gone", Body: []byte("deleted in layer 2")},
			{Name: "opt/", Type: tar.TypeDir},
			{Name: "opt/old/", Type: tar.TypeDir},
			{Name: "opt/old/a", Body: []byte("hidden by an opaque dir")},
			{Name: "usr/", Type: tar.TypeDir},
			{Name: "usr/bin/", Type: tar.TypeDir},
			{Name: "usr/bin/tool", Body: Random(2, 300<<10), Mode: 0o755},
			{Name: "usr/bin/tool-link", Type: tar.TypeLink, Body: []byte("usr/bin/tool")},
			{Name: "data/", Type: tar.TypeDir, Mode: 0o700, UID: 1000},
			{Name: "data/big", Body: big, UID: 1000},
			{Name: "lib/", Type: tar.TypeDir},
			{Name: "lib/libc.so", Body: []byte("libc")},
		}),
		Layer(t, []Entry{
			{Name: "etc/passwd", Body: []byte("root:x:0:0\nuser:x:1000:1000\n")},
			{Name: "etc/.wh.gone"},
			{Name: "opt/.wh..wh..opq"},
			{Name: "opt/new", Body: []byte("new")},
			{Name: "data/big-copy", Body: big},
			{Name: "lib/libc.so.6", Type: tar.TypeSymlink, Body: []byte("libc.so")},
			{Name: "bin/", Type: tar.TypeDir},
			{Name: "bin/sh", Type: tar.TypeSymlink, Body: []byte("busybox")},
			{Name: "usr/bin/tool2", Type: tar.TypeLink, Body: []byte("usr/bin/tool")},
		}),
		Layer(t, []Entry{
			{Name: "opt/new", Body: []byte("newer")},
			{Name: "lib/.wh.libc.so"},
			{Name: "bin/busybox", Body: Random(3, 64<<10), Mode: 0o755},
			{Name: "empty", Body: nil},
		}),
	}
}

// Image returns an image of the layers for platform os/arch.
func Image(t testing.TB, layers []v1.Layer, osName, arch string) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = osName, arch
	cf.Created = v1.Time{Time: mtime}
	cf.Config.Entrypoint = []string{"/bin/sh"}
	cf.Config.Env = []string{"PATH=/usr/bin:/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// Index returns a multi-platform index of the images, keyed os/arch.
func Index(t testing.TB, images map[string]v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for p, img := range images {
		osName, arch, _ := strings.Cut(p, "/")
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

// Flatten unpacks the image's flattened root filesystem (layers applied,
// whiteouts removed: go-containerregistry's mutate.Extract) into dir,
// with ownership, modes, mtimes and hardlinks. Run as root for ownership.
func Flatten(t testing.TB, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	type dirTime struct {
		path string
		t    time.Time
	}
	var dirs []dirTime
	var links [][2]string // extract writes upper layers first: link targets may come later
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, dirTime{p, h.ModTime})
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeLink:
			links = append(links, [2]string{filepath.Join(dir, filepath.Clean("/"+h.Linkname)), p})
			continue // the link shares the target's attributes
		default:
			t.Fatalf("flatten: unexpected entry type %q for %s", h.Typeflag, h.Name)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				t.Fatal(err)
			}
		}
		if h.Typeflag != tar.TypeSymlink {
			if err := os.Chmod(p, os.FileMode(h.Mode&0o777)|modeBits(h.Mode)); err != nil {
				t.Fatal(err)
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(h.ModTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range links {
		if err := os.Link(l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	// Directory mtimes last: creating entries inside changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		ts := []unix.Timespec{unix.NsecToTimespec(dirs[i].t.UnixNano()), unix.NsecToTimespec(dirs[i].t.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i].path, ts, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func modeBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// ManyFiles returns a layer's entries for n small files of seeded random
// sizes (up to maxSize bytes) spread over n/50+1 directories under root:
// a tree where metadata is much of what a walk touches.
func ManyFiles(root string, n, maxSize int, seed uint64) []Entry {
	r := rand.New(rand.NewPCG(seed, seed))
	entries := []Entry{{Name: root + "/", Type: tar.TypeDir}}
	for d := 0; d <= n/50; d++ {
		entries = append(entries, Entry{Name: fmt.Sprintf("%s/d%03d/", root, d), Type: tar.TypeDir})
	}
	for i := 0; i < n; i++ {
		entries = append(entries, Entry{Name: fmt.Sprintf("%s/d%03d/f%05d", root, i/50, i), Body: Random(seed+uint64(i)+1, r.IntN(maxSize+1))})
	}
	return entries
}
