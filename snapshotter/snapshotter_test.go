package snapshotter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/erofsd/erofsd/internal/testutil/require"
)

// fakeImages records what the snapshotter asks of erofsd; a mount is a
// directory in a map, not a kernel mount.
type fakeImages struct {
	mu       sync.Mutex
	mounted  map[string]Image // by dir
	mounts   int
	failNext error
}

func (f *fakeImages) MountImage(ctx context.Context, img Image) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	f.mounted[filepath.Clean(img.Dir)] = img
	f.mounts++
	return nil
}

func (f *fakeImages) UnmountImage(ctx context.Context, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounted, filepath.Clean(dir))
	return nil
}

func (f *fakeImages) Mounted(dir, fsid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.mounted[filepath.Clean(dir)]
	return ok && img.FSID == fsid
}

func (f *fakeImages) Dirs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for d := range f.mounted {
		out = append(out, d)
	}
	return out
}

func newTestSnapshotter(t *testing.T) (*Snapshotter, *fakeImages) {
	t.Helper()
	require.Host(t, require.Root) // the overlay snapshotter checks its root as root does
	f := &fakeImages{mounted: map[string]Image{}}
	s, err := New(context.Background(), t.TempDir(), f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, f
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// image is an erofsd image's layer digests: blobs, then the bootstrap.
type image struct {
	blobs     []string
	bootstrap string
}

func newImage(name string, blobs int) image {
	im := image{bootstrap: digestOf(name + "/bootstrap")}
	for i := range blobs {
		im.blobs = append(im.blobs, digestOf(fmt.Sprintf("%s/blob%d", name, i)))
	}
	return im
}

func (im image) layers() []string { return append(slices.Clone(im.blobs), im.bootstrap) }

// layerLabels are the labels containerd's unpacker gives a layer's
// Prepare (with the CRI's or erofsctl image pull's info labels).
func layerLabels(role, target, layer string) map[string]string {
	l := map[string]string{snapshots.LabelSnapshotRef: target, snapshotters.TargetLayerDigestLabel: layer,
		snapshotters.TargetRefLabel: "registry.test/app:v1", snapshotters.TargetManifestDigestLabel: digestOf("manifest")}
	if role != "" {
		l[LabelRole] = role
	}
	return l
}

// pull prepares an image's layers as containerd does: each is reported
// as existing, under the chain ID containerd computed from diffIDs.
func pull(ctx context.Context, s *Snapshotter, im image, diffIDs []string) (string, error) {
	parent := ""
	for i, layer := range im.layers() {
		role := "blob"
		if i == len(im.blobs) {
			role = "bootstrap"
		}
		target := ChainID(diffIDs[:i+1]...)
		_, err := s.Prepare(ctx, fmt.Sprintf("extract-%d %s", i, target), parent, snapshots.WithLabels(layerLabels(role, target, layer)))
		if !errdefs.IsAlreadyExists(err) {
			return "", fmt.Errorf("layer %d: %w", i, err)
		}
		parent = target
	}
	return parent, nil
}

func TestPullMountsTheBootstrapOnly(t *testing.T) {
	s, f := newTestSnapshotter(t)
	ctx := context.Background()
	im := newImage("app", 2)
	top, err := pull(ctx, s, im, im.layers())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.mounted) != 1 {
		t.Fatalf("mounts %v, want the bootstrap's", f.mounted)
	}
	for _, img := range f.mounted {
		if img.Chain != top || img.Ref != "registry.test/app@"+digestOf("manifest") || !strings.HasPrefix(img.FSID, "ctrd-") {
			t.Errorf("mounted %+v", img)
		}
	}
	// A second pull (another namespace) finds it there.
	if _, err := pull(ctx, s, im, im.layers()); err != nil {
		t.Fatal(err)
	}
	if f.mounts != 1 {
		t.Errorf("%d mounts after two pulls", f.mounts)
	}
	// A container's snapshot: its parent's image stays mounted, and a
	// lost mount is made again before the snapshot is handed out.
	f.mounted = map[string]Image{}
	if _, err := s.Prepare(ctx, "ctr1", top); err != nil {
		t.Fatal(err)
	}
	if len(f.mounted) != 1 {
		t.Fatalf("the image was not mounted again: %v", f.mounted)
	}
	users, err := s.Users(ctx, f.Dirs()[0])
	if err != nil || !slices.Equal(users, []string{"ctr1"}) {
		t.Errorf("users %v, %v", users, err)
	}
	if err := s.Remove(ctx, top); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("removing the image under a container: %v", err)
	}
	if err := s.Remove(ctx, "ctr1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, top); err != nil || len(f.mounted) != 0 {
		t.Errorf("removing the image: %v, mounts %v", err, f.mounted)
	}
}

func TestHostilePulls(t *testing.T) {
	victim, evil := newImage("victim", 2), newImage("evil", 2)
	for _, tc := range []struct {
		name    string
		im      image
		diffIDs []string
	}{
		// An erofsd image whose config names another's layers.
		{"diff IDs of another image", evil, victim.layers()},
		// ... or a plain image's (never converted): its diff IDs are tar
		// digests, not the erofsd layers'.
		{"diff IDs of a plain image", evil, []string{digestOf("tar0"), digestOf("tar1"), digestOf("tar2")}},
		// The right chain with one layer swapped.
		{"one diff ID swapped", evil, []string{evil.blobs[0], victim.blobs[1], evil.bootstrap}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, f := newTestSnapshotter(t)
			ctx := context.Background()
			if _, err := pull(ctx, s, tc.im, tc.diffIDs); !errdefs.IsInvalidArgument(err) {
				t.Errorf("pull: %v, want invalid argument", err)
			}
			if len(f.mounted) != 0 {
				t.Errorf("mounted %v", f.mounted)
			}
			// Nothing was made under the names the forged config gave.
			for i := range tc.diffIDs {
				if _, err := s.Stat(ctx, ChainID(tc.diffIDs[:i+1]...)); err == nil && !slices.Equal(tc.diffIDs[:i+1], tc.im.layers()[:i+1]) {
					t.Errorf("snapshot %d made under a forged name", i)
				}
			}
		})
	}
}

func TestLayerStructure(t *testing.T) {
	s, _ := newTestSnapshotter(t)
	ctx := context.Background()
	// A plain layer, then an erofsd layer on it: not an image erofsd
	// makes, refused.
	plainChain := digestOf("tar0")
	if _, err := s.Prepare(ctx, "extract plain", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, plainChain, "extract plain"); err != nil {
		t.Fatal(err)
	}
	blob := digestOf("blob")
	_, err := s.Prepare(ctx, "extract blob", plainChain, snapshots.WithLabels(layerLabels("blob", ChainID(plainChain, blob), blob)))
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("an erofsd blob on a plain layer: %v", err)
	}

	// An erofsd blob alone (an image whose blob is byte for byte a tar
	// another image has as its layer: the same chain ID) must not be
	// handed out as a root filesystem or under a plain layer: its
	// directory is empty.
	if _, err := s.Prepare(ctx, "extract b", "", snapshots.WithLabels(layerLabels("blob", blob, blob))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "ctr on blob", blob); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("a container on a bare blob: %v", err)
	}
	if _, err := s.View(ctx, "view of blob", blob); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("a view of a bare blob: %v", err)
	}
	if _, err := s.Prepare(ctx, "plain on blob", blob); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("a plain layer on a bare blob: %v", err)
	}

	// Unknown roles and missing labels.
	if _, err := s.Prepare(ctx, "x", "", snapshots.WithLabels(layerLabels("kernel", blob, blob))); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown role: %v", err)
	}
	if _, err := s.Prepare(ctx, "y", "", snapshots.WithLabels(map[string]string{LabelRole: "blob"})); !errdefs.IsFailedPrecondition(err) || errdefs.IsAlreadyExists(err) {
		t.Errorf("no remote labels: %v", err)
	}
	if _, err := s.Prepare(ctx, "z", "", snapshots.WithLabels(layerLabels("blob", "sha256:../x", "sha256:../x"))); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad digest: %v", err)
	}
}

func TestOwnLabels(t *testing.T) {
	s, f := newTestSnapshotter(t)
	ctx := context.Background()
	im := newImage("app", 1)
	top, err := pull(ctx, s, im, im.layers())
	if err != nil {
		t.Fatal(err)
	}
	// No client can change erofsd's labels of a snapshot ...
	for _, k := range ownLabels {
		_, err := s.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{k: "x"}}, "labels."+k)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("update of %s: %v", k, err)
		}
	}
	info, err := s.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{"user": "label"}}, "labels")
	if err != nil || info.Labels[LabelRemote] != "bootstrap" || info.Labels[LabelImage] == "" || info.Labels["user"] != "label" {
		t.Errorf("a whole-label update: %v, %v", info.Labels, err)
	}
	if _, err := s.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{"other": "y"}}, "labels.other"); err != nil {
		t.Errorf("other labels: %v", err)
	}
	// ... nor give them to its own snapshots (an image's annotations
	// become labels of its plain layers).
	forged := map[string]string{LabelRemote: "bootstrap", LabelImage: "evil.test/x@" + digestOf("m"), LabelFSID: "x"}
	if _, err := s.Prepare(ctx, "plain", "", snapshots.WithLabels(forged)); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, digestOf("plain"), "plain", snapshots.WithLabels(forged)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, "view", digestOf("plain"), snapshots.WithLabels(forged)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{digestOf("plain"), "view"} {
		info, err := s.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ownLabels {
			if _, ok := info.Labels[k]; ok {
				t.Errorf("%s has label %s from a client", name, k)
			}
		}
	}
	if len(f.mounted) != 1 {
		t.Errorf("mounts %v", f.mounted)
	}
}

func TestMountFailureUndoesTheSnapshot(t *testing.T) {
	s, f := newTestSnapshotter(t)
	ctx := context.Background()
	im := newImage("app", 1)
	f.failNext = errors.New("registry down")
	if _, err := pull(ctx, s, im, im.layers()); err == nil || errdefs.IsAlreadyExists(err) {
		t.Fatalf("pull with a failing mount: %v", err)
	}
	if _, err := s.Stat(ctx, ChainID(im.layers()...)); !errdefs.IsNotFound(err) {
		t.Errorf("the bootstrap's snapshot stayed: %v", err)
	}
	// A later pull works.
	if _, err := pull(ctx, s, im, im.layers()); err != nil {
		t.Fatal(err)
	}
}

func TestReleaseOrphans(t *testing.T) {
	s, f := newTestSnapshotter(t)
	ctx := context.Background()
	im := newImage("app", 1)
	if _, err := pull(ctx, s, im, im.layers()); err != nil {
		t.Fatal(err)
	}
	// A mount whose snapshot is gone (lost metadata, a failed unmount).
	f.mounted["/gone/fs"] = Image{Dir: "/gone/fs", FSID: "ctrd-99"}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.mounted["/gone/fs"]; ok || len(f.mounted) != 1 {
		t.Errorf("after cleanup: %v", f.mounted)
	}
}

func TestChainIDAndRepository(t *testing.T) {
	// The OCI image spec's example.
	a, b := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	if got := ChainID(a); got != a {
		t.Errorf("ChainID of one layer: %s", got)
	}
	if got, want := ChainID(a, b), digestOf(a+" "+b); got != want {
		t.Errorf("ChainID(a, b) = %s, want %s", got, want)
	}
	for ref, want := range map[string]string{
		"127.0.0.1:5000/app:v1":         "127.0.0.1:5000/app",
		"registry.test/a/b@" + a:        "registry.test/a/b",
		"registry.test/a:v1@" + a:       "registry.test/a",
		"localhost:5000/app":            "localhost:5000/app",
		"app:v1":                        "",
		"registry.test/a b:v1":          "",
		"registry.test:5000/team/app:1": "registry.test:5000/team/app",
	} {
		got, err := repository(ref)
		if (err != nil) != (want == "") || got != want && want != "" {
			t.Errorf("repository(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
}
