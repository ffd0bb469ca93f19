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
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/errdefs"
)

// Labels the snapshotter reads and writes.
const (
	// LabelRole is the erofsd image layer's role ("blob", "bootstrap"),
	// from the layer's annotation (oci.AnnotationRole).
	LabelRole = "containerd.io/snapshot/erofsd.role"
	// LabelRemote marks a committed snapshot made for an erofsd layer.
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

// Image is an erofsd image of a registry to mount on a snapshot's
// directory.
type Image struct {
	Ref       string // HOST/REPO@MANIFEST-DIGEST
	Bootstrap string // the bootstrap layer's digest, as the manifest lists it
	Dir       string // where to mount it
	FSID      string
}

// Images is what the snapshotter needs of erofsd.
type Images interface {
	// MountImage mounts img on img.Dir; it is done if it is there already.
	MountImage(ctx context.Context, img Image) error
	// UnmountImage unmounts dir and releases its image.
	UnmountImage(ctx context.Context, dir string) error
	// Mounted reports whether dir holds the erofs mount of fsid.
	Mounted(dir, fsid string) bool
}

// Snapshotter is the containerd snapshotter (snapshots.Snapshotter and
// snapshots.Cleaner).
type Snapshotter struct {
	inner  snapshots.Snapshotter
	images Images

	mu    sync.Mutex
	locks map[string]*sync.Mutex // by bootstrap snapshot name: mounting, checking, removing
}

var (
	_ snapshots.Snapshotter = (*Snapshotter)(nil)
	_ snapshots.Cleaner     = (*Snapshotter)(nil)
)

// New opens the snapshotter's state under root (its own directory, on a
// filesystem with d_type).
func New(root string, images Images) (*Snapshotter, error) {
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("snapshotter metadata: %w", err)
	}
	inner, err := overlay.NewSnapshotter(root, overlay.WithMetaStore(ms), overlay.WithUpperdirLabel, overlay.AsynchronousRemove)
	if err != nil {
		ms.Close()
		return nil, fmt.Errorf("overlay snapshotter in %s: %w", root, err)
	}
	return &Snapshotter{inner: inner, images: images, locks: map[string]*sync.Mutex{}}, nil
}

// Close closes the snapshotter's state.
func (s *Snapshotter) Close() error { return s.inner.Close() }

// lock serializes the work on one bootstrap snapshot.
func (s *Snapshotter) lock(name string) func() {
	s.mu.Lock()
	l, ok := s.locks[name]
	if !ok {
		l = &sync.Mutex{}
		s.locks[name] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Stat returns a snapshot's info.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return s.inner.Stat(ctx, key)
}

// Update updates a snapshot's labels.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	return s.inner.Update(ctx, info, fieldpaths...)
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
	if err := s.ensureMounted(ctx, info.Parent); err != nil {
		return nil, err
	}
	return s.inner.Mounts(ctx, key)
}

// View makes a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	if err := s.ensureMounted(ctx, parent); err != nil {
		return nil, err
	}
	return s.inner.View(ctx, key, parent, opts...)
}

// Commit commits an active snapshot.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.inner.Commit(ctx, name, key, opts...)
}

// Walk walks the snapshots.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.inner.Walk(ctx, fn, filters...)
}

// Cleanup removes what removed snapshots left on disk.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	if c, ok := s.inner.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
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
		if err := s.ensureMounted(ctx, parent); err != nil {
			return nil, err
		}
		return s.inner.Prepare(ctx, key, parent, opts...)
	}
	target := info.Labels[snapshots.LabelSnapshotRef]
	if target == "" {
		// Never ErrAlreadyExists here: containerd 1.6 retries such a
		// Prepare with new keys for ever.
		return nil, fmt.Errorf("%w: %s %s", errdefs.ErrFailedPrecondition, role, ErrNoRemoteLabels)
	}
	switch role {
	case "blob", "bootstrap":
	default:
		return nil, fmt.Errorf("%w: erofsd layer role %q", errdefs.ErrInvalidArgument, role)
	}
	var img Image
	if role == "bootstrap" {
		ref, manifest, layer := info.Labels[snapshotters.TargetRefLabel], info.Labels[snapshotters.TargetManifestDigestLabel], info.Labels[snapshotters.TargetLayerDigestLabel]
		if ref == "" || manifest == "" || layer == "" {
			return nil, fmt.Errorf("%w: the bootstrap layer's labels lack the image reference, manifest or layer digest: %s", errdefs.ErrFailedPrecondition, ErrNoRemoteLabels)
		}
		repo, err := repository(ref)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
		}
		img = Image{Ref: repo + "@" + manifest, Bootstrap: layer}
	}

	unlock := s.lock(target)
	defer unlock()
	if _, err := s.inner.Prepare(ctx, key, parent, opts...); err != nil {
		return nil, err
	}
	labels := map[string]string{LabelRemote: role}
	if role == "bootstrap" {
		labels[LabelImage] = img.Ref
	}
	if err := s.inner.Commit(ctx, target, key, append(opts, snapshots.WithLabels(labels))...); err != nil {
		s.inner.Remove(ctx, key)
		if errdefs.IsAlreadyExists(err) {
			// Committed by another pull (another namespace, the same
			// base layers): present all the same.
			return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
		return nil, err
	}
	if role == "bootstrap" {
		if err := s.mountCommitted(ctx, target, img); err != nil {
			s.inner.Remove(ctx, target)
			return nil, err
		}
	}
	return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
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
// an empty root filesystem.
func (s *Snapshotter) ensureMounted(ctx context.Context, parent string) error {
	for name := parent; name != ""; {
		_, info, err := s.getInfo(ctx, name)
		if err != nil {
			return err
		}
		if info.Labels[LabelRemote] == "bootstrap" {
			return s.remount(ctx, name, info)
		}
		name = info.Parent
	}
	return nil
}

func (s *Snapshotter) remount(ctx context.Context, name string, info snapshots.Info) error {
	unlock := s.lock(name)
	defer unlock()
	dir, fsid := info.Labels[labelUpperdir], info.Labels[LabelFSID]
	if dir != "" && fsid != "" && s.images.Mounted(dir, fsid) {
		return nil
	}
	img := Image{Ref: info.Labels[LabelImage], Bootstrap: info.Labels[snapshotters.TargetLayerDigestLabel]}
	if img.Ref == "" {
		return fmt.Errorf("%w: snapshot %s: the erofsd image is not recorded", errdefs.ErrFailedPrecondition, name)
	}
	return s.mountCommitted(ctx, name, img)
}

// Remove removes a snapshot; an erofsd bootstrap's image is unmounted and
// released first (a snapshot with children is refused before that).
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	_, info, err := s.getInfo(ctx, key)
	if err != nil {
		return err
	}
	if info.Labels[LabelRemote] != "bootstrap" {
		return s.inner.Remove(ctx, key)
	}
	unlock := s.lock(key)
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

// Users returns, for the bootstrap snapshot whose image is mounted on
// dir, the keys of the active and view snapshots above it: the root
// filesystems of containers of the image.
func (s *Snapshotter) Users(ctx context.Context, dir string) ([]string, error) {
	parents := map[string]string{}
	var bootstrap string
	var leaves []string
	err := s.inner.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		parents[info.Name] = info.Parent
		if info.Labels[LabelRemote] == "bootstrap" && filepath.Clean(info.Labels[labelUpperdir]) == filepath.Clean(dir) {
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
		// Chains are short (an image's layers); the bound guards
		// against a loop in damaged metadata.
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
