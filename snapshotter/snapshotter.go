// Package snapshotter is erofsd's containerd remote snapshotter: served
// on containerd's snapshots gRPC API (a proxy_plugins entry), it lets
// containerd run erofsd images lazily. It wraps containerd's own overlay
// snapshotter (its metadata store, directory layout and overlay mounts)
// and changes what erofsd images need:
//
//   - Each layer of an erofsd image (format 2: blobs, then the bootstrap;
//     containerd passes the containerd.io/snapshot/erofsd.role annotation
//     as a label) becomes a committed, empty snapshot reported to
//     containerd as present, so nothing of it is downloaded.
//   - The bootstrap layer's snapshot directory gets erofsd's lazy mount of
//     the image, fetched from the image's repository; every container of
//     the image then has it as the lower directory of its overlay.
//   - Before a snapshot above an erofsd image is handed out, its mount is
//     checked and made again if it is gone: an empty lower directory would
//     start a container on an empty root filesystem.
//   - Removing the bootstrap's snapshot unmounts and releases the image.
//
// Plain OCI layers go through the overlay snapshotter unchanged, so one
// snapshotter serves every image of a node.
//
// Snapshot names are what containerd shares between images: it skips
// pulling a layer whose chain ID (from the image config's diff IDs)
// names a snapshot already there. So a remote snapshot is made only under
// the chain ID of its own layers' digests (format 2's diff IDs), and the
// mounted image's manifest must give that same chain; erofsd's labels
// cannot be set or changed by clients; and a snapshot handed out must
// have every erofsd blob under it covered by its image's bootstrap. An
// image cannot put its content under another image's name.
package snapshotter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/errdefs"
	"github.com/erofsd/erofsd/internal/keylock"
	bolt "go.etcd.io/bbolt"
)

// Labels the snapshotter reads and writes.
const (
	// LabelRole is the erofsd image layer's role ("blob", "bootstrap"),
	// from the layer's annotation (oci.AnnotationRole).
	LabelRole = "containerd.io/snapshot/erofsd.role"
	// LabelRemote marks a committed snapshot made for an erofsd layer
	// with its role.
	LabelRemote = "containerd.io/snapshot/erofsd.remote"
	// LabelImage is, on a bootstrap's snapshot, the image mounted:
	// REPO@MANIFEST-DIGEST.
	LabelImage = "containerd.io/snapshot/erofsd.image"
	// LabelFSID is, on a bootstrap's snapshot, the fsid of its mount.
	LabelFSID = "containerd.io/snapshot/erofsd.fsid"
	// labelUpperdir is where the overlay snapshotter says a snapshot's
	// directory is (overlay.WithUpperdirLabel).
	labelUpperdir = "containerd.io/snapshot/overlay.upperdir"
)

// ownLabels are written by the snapshotter only: a client's Prepare,
// View or Commit loses them and its Update cannot change them.
var ownLabels = []string{LabelRemote, LabelImage, LabelFSID}

// Roles of erofsd layers.
const (
	roleBlob      = "blob"
	roleBootstrap = "bootstrap"
)

// Image is an erofsd image of a registry to mount on a snapshot's
// directory.
type Image struct {
	Ref   string // HOST/REPO@MANIFEST-DIGEST
	Chain string // the chain ID of its layers (ChainID), its snapshot's name
	Dir   string // where to mount it
	FSID  string
}

// Images is what the snapshotter needs of erofsd.
type Images interface {
	// MountImage mounts img on img.Dir, after checking that the
	// manifest's layers give img.Chain; it is done if it is there
	// already.
	MountImage(ctx context.Context, img Image) error
	// UnmountImage unmounts dir and releases its image.
	UnmountImage(ctx context.Context, dir string) error
	// Mounted reports whether dir holds the erofs mount of fsid.
	Mounted(dir, fsid string) bool
	// Dirs lists the directories of the mounts made for the
	// snapshotter.
	Dirs() []string
}

// Snapshotter is the containerd snapshotter (snapshots.Snapshotter and
// snapshots.Cleaner).
type Snapshotter struct {
	inner  snapshots.Snapshotter
	images Images
	locks  keylock.Map // by bootstrap snapshot name: mounting, checking, removing
}

var (
	_ snapshots.Snapshotter = (*Snapshotter)(nil)
	_ snapshots.Cleaner     = (*Snapshotter)(nil)
)

// metadataTimeout bounds the wait for the metadata file's lock: another
// process holding it must not hang every containerd call.
const metadataTimeout = 10 * time.Second

// New opens the snapshotter's state under root (its own directory, on a
// filesystem with d_type that overlayfs takes as upper directory).
func New(ctx context.Context, root string, images Images) (*Snapshotter, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("snapshotter root: %w", err)
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"), func(o *bolt.Options) error {
		o.Timeout = metadataTimeout
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshotter metadata: %w", err)
	}
	// The store opens on first use: open it now, so that a file locked
	// by another process fails here.
	if err := ms.WithTransaction(ctx, false, func(context.Context) error { return nil }); err != nil {
		ms.Close()
		return nil, fmt.Errorf("snapshotter metadata in %s: %w", root, err)
	}
	inner, err := overlay.NewSnapshotter(root, overlay.WithMetaStore(ms), overlay.WithUpperdirLabel, overlay.AsynchronousRemove)
	if err != nil {
		ms.Close()
		return nil, fmt.Errorf("overlay snapshotter in %s: %w", root, err)
	}
	return &Snapshotter{inner: inner, images: images}, nil
}

// Close closes the snapshotter's state.
func (s *Snapshotter) Close() error { return s.inner.Close() }

// ChainID is the chain ID of layers with these diff IDs, bottom first
// (the OCI image spec's definition): for an erofsd image of format 2,
// the layers' digests.
func ChainID(diffIDs ...string) string {
	var chain string
	for i, d := range diffIDs {
		if i == 0 {
			chain = d
			continue
		}
		sum := sha256.Sum256([]byte(chain + " " + d))
		chain = "sha256:" + hex.EncodeToString(sum[:])
	}
	return chain
}

// validDigest reports whether d is sha256:<64 hex>.
func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

// Stat returns a snapshot's info.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return s.inner.Stat(ctx, key)
}

// Update updates a snapshot's labels, except erofsd's own: naming one
// is an error, and a whole-label update keeps them as they are.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	whole := len(fieldpaths) == 0
	for _, f := range fieldpaths {
		if k, ok := strings.CutPrefix(f, "labels."); ok && slices.Contains(ownLabels, k) {
			return snapshots.Info{}, fmt.Errorf("%w: label %s is erofsd's own", errdefs.ErrInvalidArgument, k)
		}
		whole = whole || f == "labels"
	}
	if whole {
		cur, err := s.inner.Stat(ctx, info.Name)
		if err != nil {
			return snapshots.Info{}, err
		}
		labels := map[string]string{}
		for k, v := range info.Labels {
			if !slices.Contains(ownLabels, k) {
				labels[k] = v
			}
		}
		for _, k := range ownLabels {
			if v, ok := cur.Labels[k]; ok {
				labels[k] = v
			}
		}
		info.Labels = labels
	}
	return s.inner.Update(ctx, info, fieldpaths...)
}

// withoutOwnLabels drops erofsd's labels from a client's options.
func withoutOwnLabels(opts []snapshots.Opt) []snapshots.Opt {
	return append(slices.Clone(opts), func(info *snapshots.Info) error {
		for _, k := range ownLabels {
			delete(info.Labels, k)
		}
		return nil
	})
}

// Usage reports a snapshot's disk usage; an erofsd layer's is nothing
// (its data is in erofsd's cache, not in the snapshot).
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	info, err := s.inner.Stat(ctx, key)
	if err != nil {
		return snapshots.Usage{}, err
	}
	if info.Labels[LabelRemote] != "" {
		return snapshots.Usage{}, nil
	}
	return s.inner.Usage(ctx, key)
}

// Mounts returns the mounts of an active or view snapshot, after making
// sure the erofsd image under it is mounted.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	info, err := s.inner.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	unlock, err := s.ensureMounted(ctx, info.Parent)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.inner.Mounts(ctx, key)
}

// View makes a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	unlock, err := s.ensureMounted(ctx, parent)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.inner.View(ctx, key, parent, withoutOwnLabels(opts)...)
}

// Commit commits an active snapshot.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.inner.Commit(ctx, name, key, withoutOwnLabels(opts)...)
}

// Walk walks the snapshots.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.inner.Walk(ctx, fn, filters...)
}

// Cleanup releases the images of bootstrap snapshots removed without
// being unmounted, then removes what removed snapshots left on disk.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	if err := s.ReleaseOrphans(ctx); err != nil {
		return err
	}
	if c, ok := s.inner.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}

// ReleaseOrphans unmounts the images mounted for the snapshotter whose
// bootstrap snapshot is gone (removed while its unmount failed, or lost
// with a metadata file).
func (s *Snapshotter) ReleaseOrphans(ctx context.Context) error {
	// The mounts first: one made after this list is of a snapshot that
	// the walk below sees.
	dirs := s.images.Dirs()
	live := map[string]bool{}
	err := s.inner.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		if info.Labels[LabelRemote] == roleBootstrap {
			live[filepath.Clean(info.Labels[labelUpperdir])] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range dirs {
		if !live[filepath.Clean(dir)] {
			errs = append(errs, s.images.UnmountImage(ctx, dir))
		}
	}
	return errors.Join(errs...)
}

// ErrNoRemoteLabels is the error of a Prepare of an erofsd layer without
// the labels that say which image it belongs to: containerd unpacked it
// without remote-snapshot labels.
var ErrNoRemoteLabels = errors.New("an erofsd image layer prepared without remote-snapshot labels: pull it with erofsctl image pull, or through CRI with disable_snapshot_annotations = false")

// Prepare makes an active snapshot. For a layer of an erofsd image it
// commits the layer's snapshot at once (mounting the image at the
// bootstrap's) and answers that it exists, so containerd downloads
// nothing of it.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	role := info.Labels[LabelRole]
	if role == "" {
		unlock, err := s.ensureMounted(ctx, parent)
		if err != nil {
			return nil, err
		}
		defer unlock()
		return s.inner.Prepare(ctx, key, parent, withoutOwnLabels(opts)...)
	}
	if role != roleBlob && role != roleBootstrap {
		return nil, fmt.Errorf("%w: erofsd layer role %q", errdefs.ErrInvalidArgument, role)
	}
	target, layer := info.Labels[snapshots.LabelSnapshotRef], info.Labels[snapshotters.TargetLayerDigestLabel]
	if target == "" || layer == "" {
		// Never ErrAlreadyExists here: containerd 1.6 retries such a
		// Prepare with new keys for ever.
		return nil, fmt.Errorf("%w: %s %s", errdefs.ErrFailedPrecondition, role, ErrNoRemoteLabels)
	}
	if err := s.checkChain(ctx, target, parent, layer); err != nil {
		return nil, err
	}
	var img Image
	if role == roleBootstrap {
		ref, manifest := info.Labels[snapshotters.TargetRefLabel], info.Labels[snapshotters.TargetManifestDigestLabel]
		if ref == "" || !validDigest(manifest) {
			return nil, fmt.Errorf("%w: the bootstrap layer's labels lack the image reference or manifest digest: %s", errdefs.ErrFailedPrecondition, ErrNoRemoteLabels)
		}
		repo, err := repository(ref)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
		}
		img = Image{Ref: repo + "@" + manifest, Chain: target}
	}

	unlock := s.locks.Lock(target)
	defer unlock()
	exists := fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
	if cur, err := s.inner.Stat(ctx, target); err == nil {
		if cur.Labels[LabelRemote] != role {
			return nil, fmt.Errorf("%w: snapshot %s exists and is not an erofsd %s", errdefs.ErrFailedPrecondition, target, role)
		}
		return nil, exists // pulled before (another namespace, the same base)
	}
	if _, err := s.inner.Prepare(ctx, key, parent, withoutOwnLabels(opts)...); err != nil {
		return nil, err
	}
	labels := map[string]string{LabelRemote: role}
	if role == roleBootstrap {
		labels[LabelImage] = img.Ref
	}
	if err := s.inner.Commit(ctx, target, key, append(withoutOwnLabels(opts), snapshots.WithLabels(labels))...); err != nil {
		s.inner.Remove(ctx, key)
		if errdefs.IsAlreadyExists(err) {
			return nil, exists
		}
		return nil, err
	}
	if role == roleBootstrap {
		if err := s.mountCommitted(ctx, target, img); err != nil {
			s.inner.Remove(ctx, target)
			return nil, err
		}
	}
	return nil, exists
}

// checkChain checks that an erofsd layer's snapshot is to be named by
// the chain ID of its own digest: the image config's diff IDs must be the
// layers' digests, as format 2 writes them. Otherwise an image could
// name its layers after another image's, and containerd would give the
// other image this one's content. Every layer under it must be an erofsd
// blob.
func (s *Snapshotter) checkChain(ctx context.Context, target, parent, layer string) error {
	if !validDigest(layer) {
		return fmt.Errorf("%w: layer digest %q", errdefs.ErrInvalidArgument, layer)
	}
	want := layer
	if parent != "" {
		p, err := s.inner.Stat(ctx, parent)
		if err != nil {
			return err
		}
		if p.Labels[LabelRemote] != roleBlob {
			return fmt.Errorf("%w: an erofsd layer above a layer that is not an erofsd blob: the image is not one erofs-image convert makes", errdefs.ErrInvalidArgument)
		}
		want = ChainID(parent, layer)
	}
	if target != want {
		return fmt.Errorf("%w: layer %s is to be snapshot %s, but its chain of layer digests is %s: the image config's diff IDs are not its layers' digests", errdefs.ErrInvalidArgument, layer, target, want)
	}
	return nil
}

// mountCommitted mounts the image of a committed bootstrap snapshot on
// its directory, naming the mount after the snapshot's id.
func (s *Snapshotter) mountCommitted(ctx context.Context, name string, img Image) error {
	id, info, err := s.getInfo(ctx, name)
	if err != nil {
		return err
	}
	img.Dir = info.Labels[labelUpperdir]
	if img.Dir == "" {
		return fmt.Errorf("snapshot %s: no directory label", name)
	}
	img.FSID = "ctrd-" + id
	if info.Labels[LabelFSID] != img.FSID {
		info.Labels[LabelFSID] = img.FSID
		if _, err := s.inner.Update(ctx, info, "labels."+LabelFSID); err != nil {
			return err
		}
	}
	if err := s.images.MountImage(ctx, img); err != nil {
		return fmt.Errorf("mounting erofsd image %s for snapshot %s: %w", img.Ref, name, err)
	}
	return nil
}

// getInfo returns a snapshot's id and info, with its directory label.
func (s *Snapshotter) getInfo(ctx context.Context, key string) (string, snapshots.Info, error) {
	info, err := s.inner.Stat(ctx, key)
	if err != nil {
		return "", info, err
	}
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	// The overlay snapshotter's directory is ROOT/snapshots/ID/fs.
	return filepath.Base(filepath.Dir(info.Labels[labelUpperdir])), info, nil
}

// ensureMounted makes sure that the erofsd images in the chain from
// parent down are mounted where their snapshots are, mounting them again
// if not (after a reboot, or if someone unmounted them): containerd would
// otherwise get an empty lower directory, and a container would start on
// an empty root filesystem. Every erofsd blob in the chain must be under
// a bootstrap. The images stay locked against removal until unlock.
func (s *Snapshotter) ensureMounted(ctx context.Context, parent string) (unlock func(), err error) {
	var unlocks []func()
	unlockAll := func() {
		for _, u := range slices.Backward(unlocks) {
			u()
		}
	}
	defer func() {
		if err != nil {
			unlockAll()
		}
	}()
	underBootstrap := false
	// A chain is an image's layers; the bound guards against a loop in
	// damaged metadata.
	for name, n := parent, 0; name != ""; n++ {
		if n > 1000 {
			return nil, fmt.Errorf("snapshot %s: a chain of more than 1000 parents", parent)
		}
		info, err := s.inner.Stat(ctx, name)
		if err != nil {
			return nil, err
		}
		switch info.Labels[LabelRemote] {
		case roleBootstrap:
			unlocks = append(unlocks, s.locks.Lock(name))
			if err := s.remount(ctx, name); err != nil {
				return nil, err
			}
			underBootstrap = true
		case roleBlob:
			if !underBootstrap {
				return nil, fmt.Errorf("%w: snapshot %s is an erofsd blob layer that no bootstrap above it covers: an image names a blob of another as its own layer", errdefs.ErrFailedPrecondition, name)
			}
		default:
			if underBootstrap {
				return nil, fmt.Errorf("%w: snapshot %s is under an erofsd bootstrap but is not an erofsd blob", errdefs.ErrFailedPrecondition, name)
			}
		}
		name = info.Parent
	}
	return unlockAll, nil
}

// remount mounts a bootstrap snapshot's image again if its mount is
// gone; call it with the snapshot locked.
func (s *Snapshotter) remount(ctx context.Context, name string) error {
	_, info, err := s.getInfo(ctx, name)
	if err != nil {
		return err
	}
	dir, fsid := info.Labels[labelUpperdir], info.Labels[LabelFSID]
	if dir != "" && fsid != "" && s.images.Mounted(dir, fsid) {
		return nil
	}
	img := Image{Ref: info.Labels[LabelImage], Chain: name}
	if img.Ref == "" {
		return fmt.Errorf("%w: snapshot %s: the erofsd image is not recorded", errdefs.ErrFailedPrecondition, name)
	}
	return s.mountCommitted(ctx, name, img)
}

// Remove removes a snapshot; an erofsd bootstrap's image is unmounted and
// released first (a snapshot with children is refused before that).
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	info, err := s.inner.Stat(ctx, key)
	if err != nil {
		return err
	}
	if info.Labels[LabelRemote] != roleBootstrap {
		return s.inner.Remove(ctx, key)
	}
	unlock := s.locks.Lock(key)
	defer unlock()
	children := 0
	if err := s.inner.Walk(ctx, func(ctx context.Context, i snapshots.Info) error {
		if i.Parent == key {
			children++
		}
		return nil
	}); err != nil {
		return err
	}
	if children > 0 {
		return fmt.Errorf("%w: snapshot %s has %d children", errdefs.ErrFailedPrecondition, key, children)
	}
	if dir := info.Labels[labelUpperdir]; dir != "" {
		if err := s.images.UnmountImage(ctx, dir); err != nil {
			return fmt.Errorf("unmounting the erofsd image of snapshot %s: %w", key, err)
		}
	}
	return s.inner.Remove(ctx, key)
}

// Users returns, for the bootstrap snapshot whose image is mounted on
// dir, the keys of the active and view snapshots above it: the root
// filesystems of containers of the image.
func (s *Snapshotter) Users(ctx context.Context, dir string) ([]string, error) {
	parents := map[string]string{}
	var bootstrap string
	var leaves []string
	err := s.inner.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		parents[info.Name] = info.Parent
		if info.Labels[LabelRemote] == roleBootstrap && filepath.Clean(info.Labels[labelUpperdir]) == filepath.Clean(dir) {
			bootstrap = info.Name
		}
		if info.Kind != snapshots.KindCommitted {
			leaves = append(leaves, info.Name)
		}
		return nil
	})
	if err != nil || bootstrap == "" {
		return nil, err
	}
	var users []string
	for _, leaf := range leaves {
		for name, n := parents[leaf], 0; name != "" && n < 1000; name, n = parents[name], n+1 {
			if name == bootstrap {
				users = append(users, leaf)
				break
			}
		}
	}
	slices.Sort(users)
	return users, nil
}

// repository turns an image reference (HOST/REPO:TAG, HOST/REPO@DIGEST,
// or both) into HOST/REPO.
func repository(ref string) (string, error) {
	repo, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	if !strings.Contains(repo, "/") || strings.ContainsAny(repo, " \t\n") {
		return "", fmt.Errorf("image reference %q: want HOST/REPO[:TAG][@DIGEST]", ref)
	}
	return repo, nil
}
