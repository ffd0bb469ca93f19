package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/counters"
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/oci"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

var _ control.Backend = (*Daemon)(nil)

// mountRec is a mount made by the daemon and what it holds.
type mountRec struct {
	control.Mount
	mounted  ondemand.Mounted // what the front end holds for it; nil while mounting
	prefetch *savedPrefetch   // the background prefetch asked for, if any
	sysfs    string           // the filesystem's /sys/fs directory: it exists while the filesystem does
}

// imageMeta is the daemon's record of a registered image
// (ondemand.ImageSpec.Meta).
type imageMeta struct {
	byMount   bool   // registered implicitly by a mount: unregistered by its unmount
	blobDir   string // as requested (empty: the daemon's default)
	insecure  bool
	plainHTTP bool
	source    string // oci:// images: the manifest, by digest
}

func metaOf(im *ondemand.Image) *imageMeta {
	if m, ok := im.Spec.Meta.(*imageMeta); ok {
		return m
	}
	return &imageMeta{}
}

// mapErr turns serving-core errors into API errors.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ondemand.ErrExists):
		return fmt.Errorf("%w: %v", control.ErrExists, err)
	case errors.Is(err, ondemand.ErrNotFound):
		return fmt.Errorf("%w: %v", control.ErrNotFound, err)
	case errors.Is(err, ondemand.ErrImageInUse):
		return fmt.Errorf("%w: %v", control.ErrInUse, err)
	case errors.Is(err, ondemand.ErrBadName), errors.Is(err, ondemand.ErrBadImage):
		return fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	}
	return err
}

// store opens the blob store named by spec (a directory, an http(s)://
// URL or an oci:// repository), or the daemon's default one.
func (d *Daemon) store(spec string, insecure bool) (blobstore.Store, error) {
	if spec == "" {
		spec = d.cfg.BlobDir
	}
	if spec == "" {
		return nil, nil
	}
	// One store per repository: images of one registry share its
	// connections, credentials (tokens) and concurrency limit. Opening
	// one does no I/O (credentials are looked up on first use).
	key := fmt.Sprintf("%s\x00%v", spec, insecure)
	d.storesMu.Lock()
	defer d.storesMu.Unlock()
	if s, ok := d.stores[key]; ok {
		return s, nil
	}
	opts := blobstore.StoreOptions{HTTPOptions: d.httpOpts, MirrorsByHost: d.cfg.RegistryMirrors, Stats: d.backends}
	opts.Insecure = insecure
	if repo, ok := ociRepository(spec); ok && d.creds != nil {
		// Pull secrets kubelet sent for this repository first.
		opts.OCI.Keychain = authn.NewMultiKeychain(d.creds.For(repo), authn.DefaultKeychain)
	}
	s, err := blobstore.Open(spec, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	}
	if d.stores == nil {
		d.stores = map[string]blobstore.Store{}
	}
	d.stores[key] = s
	return s, nil
}

// resolveTransport is the transport of manifest requests, one per TLS
// setting: a transport per request would leave an idle connection
// behind each.
func (d *Daemon) resolveTransport(insecure bool) (http.RoundTripper, error) {
	d.storesMu.Lock()
	defer d.storesMu.Unlock()
	if tr, ok := d.resolvers[insecure]; ok {
		return tr, nil
	}
	tr, err := blobstore.NewTransport(d.httpOpts.CAFile, insecure)
	if err != nil {
		return nil, err
	}
	d.resolvers[insecure] = tr
	return tr, nil
}

// ociRepository returns the HOST/REPO of an oci:// (or oci+http://)
// store spec.
func ociRepository(spec string) (string, bool) {
	for _, scheme := range []string{"oci://", "oci+http://"} {
		if repo, ok := strings.CutPrefix(spec, scheme); ok {
			return repo, true
		}
	}
	return "", false
}

// keychain is the credentials of manifest requests: pull secrets
// kubelet sent through the CRI proxy, then the docker config.
func (d *Daemon) keychain() authn.Keychain {
	if d.creds == nil {
		return authn.DefaultKeychain
	}
	return authn.NewMultiKeychain(d.creds, authn.DefaultKeychain)
}

// Register registers an image for serving.
func (d *Daemon) Register(ctx context.Context, req control.RegisterRequest) (*control.Image, error) {
	im, err := d.register(ctx, req, false)
	if err != nil {
		return nil, err
	}
	out := d.describe(im)
	return &out, nil
}

// register resolves, fetches and registers an image. No daemon-wide
// lock is held across its I/O: a slow registry or store delays only the
// images it serves. A fetched bootstrap is locked by its path from the
// fetch to the registration, so that an unregister of another image of
// the same bootstrap cannot remove it in between.
func (d *Daemon) register(ctx context.Context, req control.RegisterRequest, byMount bool) (*ondemand.Image, error) {
	meta := &imageMeta{byMount: byMount, blobDir: req.BlobDir, insecure: req.Insecure, plainHTTP: req.PlainHTTP}
	var fetch func() (string, error) // fetches the bootstrap, under its lock
	var store blobstore.Store
	var manifestBlobs []blobstore.Digest // oci://: what the manifest lists
	switch {
	case strings.HasPrefix(req.Bootstrap, oci.RegistryScheme):
		res, err := d.resolveOCI(ctx, &req)
		if err != nil {
			return nil, err
		}
		meta.blobDir, meta.source, manifestBlobs = req.BlobDir, res.source, res.blobs
		if store, err = d.store(req.BlobDir, req.Insecure); err != nil {
			return nil, err
		}
		fetch = func() (string, error) {
			path, err := ondemand.FetchBootstrap(ctx, store, res.digest, d.bootstrapDir())
			if err != nil {
				return "", fmt.Errorf("bootstrap of %s: %w", req.Bootstrap, err)
			}
			return path, nil
		}
		req.Bootstrap = filepath.Join(d.bootstrapDir(), res.digest.Hex())
	case strings.HasPrefix(req.Bootstrap, "sha256:"):
		// The image itself is a blob of the store: fetch and verify it.
		digest, err := blobstore.ParseDigest(req.Bootstrap)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
		}
		if store, err = d.store(req.BlobDir, req.Insecure); err != nil {
			return nil, err
		}
		fetch = func() (string, error) {
			path, err := ondemand.FetchBootstrap(ctx, store, digest, d.bootstrapDir())
			if errors.Is(err, blobstore.ErrNotFound) {
				return "", fmt.Errorf("%w: %v", control.ErrNotFound, err)
			}
			return path, err
		}
		req.Bootstrap = filepath.Join(d.bootstrapDir(), digest.Hex())
	default:
		if !filepath.IsAbs(req.Bootstrap) {
			return nil, fmt.Errorf("%w: bootstrap %q must be an absolute path, sha256:DIGEST or oci://", control.ErrBadRequest, req.Bootstrap)
		}
		var err error
		if store, err = d.store(req.BlobDir, req.Insecure); err != nil {
			return nil, err
		}
	}
	unlock := d.bootLocks.Lock(req.Bootstrap)
	defer unlock()
	if fetch != nil {
		if _, err := fetch(); err != nil {
			return nil, err
		}
	}
	im, err := d.reg.Register(ondemand.ImageSpec{FSID: req.FSID, DomainID: req.DomainID, Bootstrap: req.Bootstrap, Store: store, Meta: meta})
	if err == nil && manifestBlobs != nil {
		// The bootstrap (verified by its digest) names its blobs; a
		// manifest listing others is wrong or forged.
		if err = sameBlobs(im, manifestBlobs); err != nil {
			d.reg.Unregister(req.FSID, req.DomainID)
			err = fmt.Errorf("%w: %s: %v", control.ErrBadRequest, meta.source, err)
		}
	}
	if err != nil {
		if fetch != nil {
			d.dropBootstrap(req.Bootstrap) // fetched for nothing
		}
		return nil, mapErr(err)
	}
	d.saveState()
	d.log.WithFields(logrus.Fields{"fsid": req.FSID, "domain": req.DomainID, "bootstrap": req.Bootstrap, "blobs": len(im.Blobs)}).Info("image registered")
	return im, nil
}

// sameBlobs checks that an image's device table names the blobs a
// manifest lists, in order.
func sameBlobs(im *ondemand.Image, manifest []blobstore.Digest) error {
	if len(im.Blobs) != len(manifest) {
		return fmt.Errorf("the manifest lists %d blobs, the bootstrap names %d", len(manifest), len(im.Blobs))
	}
	for i, b := range im.Blobs {
		if b.Digest != manifest[i] {
			return fmt.Errorf("blob %d: the manifest lists %s, the bootstrap names %s", i, manifest[i], b.Digest)
		}
	}
	return nil
}

func (d *Daemon) bootstrapDir() string { return filepath.Join(d.cfg.StateDir, "bootstraps") }

// ociResolved is an erofsd image found in a registry.
type ociResolved struct {
	digest  blobstore.Digest   // of its bootstrap
	blobs   []blobstore.Digest // the manifest's blobs, in device order
	source  string             // REPO@MANIFEST-DIGEST
	blobDir string             // the repository as blob store
}

// resolveOCI finds the erofsd image req.Bootstrap names in its registry
// and points req at the repository as blob store. It returns the
// bootstrap's digest and the manifest resolved, by digest, so that a
// restart serves the same image even if the tag moved.
func (d *Daemon) resolveOCI(ctx context.Context, req *control.RegisterRequest) (*ociResolved, error) {
	// A manifest named by digest never changes: resolved once (the
	// snapshotter checks an image's manifest, then mounts it).
	var key string
	if strings.Contains(req.Bootstrap, "@sha256:") && req.Platform == "" {
		key = fmt.Sprintf("%s\x00%v\x00%v", req.Bootstrap, req.PlainHTTP, req.Insecure)
		d.storesMu.Lock()
		res, ok := d.resolved[key]
		d.storesMu.Unlock()
		if ok {
			req.BlobDir = res.blobDir
			return res, nil
		}
	}
	res, err := d.resolveRemote(ctx, req)
	if err == nil && key != "" {
		d.storesMu.Lock()
		if len(d.resolved) >= maxResolved {
			clear(d.resolved)
		}
		d.resolved[key] = res
		d.storesMu.Unlock()
	}
	return res, err
}

// maxResolved bounds the manifests kept resolved by digest.
const maxResolved = 256

// resolveRemote is resolveOCI's request to the registry.
func (d *Daemon) resolveRemote(ctx context.Context, req *control.RegisterRequest) (*ociResolved, error) {
	var platform *v1.Platform
	if req.Platform != "" {
		p, err := v1.ParsePlatform(req.Platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("%w: platform %q: want os/arch[/variant]", control.ErrBadRequest, req.Platform)
		}
		platform = p
	}
	tr, err := d.resolveTransport(req.Insecure)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	}
	ro := oci.RemoteOptions{PlainHTTP: req.PlainHTTP, Insecure: req.Insecure, CAFile: d.httpOpts.CAFile, Transport: tr, Keychain: d.keychain()}
	res, err := oci.Resolve(ctx, req.Bootstrap, platform, ro)
	if err != nil {
		var terr *transport.Error
		switch {
		case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
			return nil, fmt.Errorf("%w: %v", control.ErrNotFound, err)
		case errors.Is(err, oci.ErrNotErofsd), errors.Is(err, oci.ErrNoPlatform), errors.Is(err, oci.ErrPlainHTTP):
			return nil, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
		}
		return nil, fmt.Errorf("resolving %s: %w", req.Bootstrap, err)
	}
	scheme := "oci://"
	if req.PlainHTTP {
		scheme = "oci+http://"
	}
	req.BlobDir = scheme + res.Repository.Name()
	digest, err := blobstore.ParseDigest(res.Manifest.Bootstrap.Digest.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	}
	if res.Manifest.Bootstrap.Size > ondemand.MaxBootstrapSize {
		return nil, fmt.Errorf("%w: bootstrap of %d bytes", control.ErrBadRequest, res.Manifest.Bootstrap.Size)
	}
	source := res.Repository.Name() + "@" + res.Digest.String()
	out := &ociResolved{digest: digest, source: source, blobs: []blobstore.Digest{}, blobDir: req.BlobDir}
	for _, b := range res.Manifest.Blobs {
		bd, err := blobstore.ParseDigest(b.Digest.String())
		if err != nil {
			return nil, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
		}
		out.blobs = append(out.blobs, bd)
	}
	d.log.WithFields(logrus.Fields{"image": source, "blobs": len(out.blobs), "format": res.Manifest.Format}).Info("registry image resolved")
	return out, nil
}

// Unregister removes an image; it fails while the image is mounted.
func (d *Daemon) Unregister(ctx context.Context, fsid, domain string) error {
	im, ok := d.reg.Lookup(fsid, domain)
	if !ok {
		return fmt.Errorf("%w: fsid %q", control.ErrNotFound, fsid)
	}
	unlock := d.bootLocks.Lock(im.Spec.Bootstrap)
	defer unlock()
	if err := d.reg.Unregister(fsid, domain); err != nil {
		return mapErr(err)
	}
	d.saveState()
	d.dropBootstrap(im.Spec.Bootstrap)
	d.log.WithFields(logrus.Fields{"fsid": fsid, "domain": domain}).Info("image unregistered")
	return nil
}

// dropBootstrap removes a bootstrap the daemon fetched (by digest or from
// a registry) once no registered image uses it, so that tags moving on
// do not fill the state dir; it is fetched again if needed. Call it with
// the bootstrap's lock held.
func (d *Daemon) dropBootstrap(path string) {
	if path == "" || filepath.Dir(path) != d.bootstrapDir() || d.reg.UsesBootstrap(path) {
		return // the user's own image file, or still in use
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.WithError(err).WithField("bootstrap", path).Warn("removing a fetched bootstrap")
	}
}

func (d *Daemon) describe(im *ondemand.Image) control.Image {
	out := control.Image{
		FSID: im.Spec.FSID, DomainID: im.Spec.DomainID, Bootstrap: im.Spec.Bootstrap, Size: im.Size,
		OpenObjects: im.OpenObjects(), Blobs: []control.Blob{}, Mounts: []string{},
		Registered: im.Registered, Source: metaOf(im).source,
	}
	for _, b := range im.Blobs {
		out.Blobs = append(out.Blobs, control.Blob{Digest: b.Digest.String(), Size: b.Size, Chunks: b.Chunks})
	}
	d.mu.Lock()
	for mp, m := range d.mounts {
		if m.FSID == im.Spec.FSID && m.DomainID == im.Spec.DomainID && m.mounted != nil {
			out.Mounts = append(out.Mounts, mp)
		}
	}
	d.mu.Unlock()
	slices.Sort(out.Mounts)
	return out
}

// Images lists the registered images.
func (d *Daemon) Images(ctx context.Context) ([]control.Image, error) {
	out := []control.Image{}
	for _, im := range d.reg.Images() {
		desc := d.describe(im)
		if d.sn != nil {
			for _, mp := range desc.Mounts {
				// Best effort: a listing does not fail for it.
				users, _ := d.sn.Users(ctx, mp)
				desc.Containers = append(desc.Containers, users...)
			}
		}
		out = append(out, desc)
	}
	return out, nil
}

// frontend picks the front end for a mount: "auto" prefers cachefiles
// (the kernel caches the data itself) and falls back to fanotify.
func (d *Daemon) frontend(want string) (ondemand.Frontend, error) {
	switch want {
	case "", "auto":
		for _, fe := range d.frontends {
			return fe, nil
		}
		return nil, fmt.Errorf("%w: no front end works on this kernel: %s", control.ErrUnavailable, d.whyOff())
	case "cachefiles", "fanotify":
		for _, fe := range d.frontends {
			if fe.Name() == want {
				return fe, nil
			}
		}
		return nil, fmt.Errorf("%w: %s: %v", control.ErrUnavailable, want, d.off[want])
	}
	return nil, fmt.Errorf("%w: front end %q: want auto, cachefiles or fanotify", control.ErrBadRequest, want)
}

// whyOff says why each front end is off.
func (d *Daemon) whyOff() string {
	var parts []string
	for _, name := range []string{"cachefiles", "fanotify"} {
		if err := d.off[name]; err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", name, err))
		}
	}
	return strings.Join(parts, "; ")
}

// Mount registers (if asked) and mounts an image. The mountpoint is
// reserved first: of concurrent mounts on one mountpoint exactly one
// goes on, the others fail at once with ErrExists.
func (d *Daemon) Mount(ctx context.Context, req control.MountRequest) (*control.Mount, error) {
	return d.mount(ctx, req, "", "")
}

// mount mounts for the API or, with owner set, for a component of the
// daemon (the snapshotter), whose mounts the API does not unmount.
func (d *Daemon) mount(ctx context.Context, req control.MountRequest, owner, image string) (*control.Mount, error) {
	fe, err := d.frontend(req.Frontend)
	if err != nil {
		return nil, err
	}
	popts, prefetch, err := d.pf.options(req)
	if err != nil {
		return nil, err
	}
	mp := filepath.Clean(req.Mountpoint)
	if !filepath.IsAbs(mp) {
		return nil, fmt.Errorf("%w: mountpoint %q must be an absolute path", control.ErrBadRequest, req.Mountpoint)
	}
	if st, err := os.Stat(mp); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: mountpoint %s is not a directory", control.ErrBadRequest, mp)
	}
	m := &mountRec{Mount: control.Mount{Mountpoint: mp, FSID: req.FSID, DomainID: req.DomainID, Frontend: fe.Name(), Owner: owner, Image: image}}
	if prefetch {
		m.prefetch = &savedPrefetch{Start: popts.Start, Whole: popts.Whole, Files: popts.Files}
	}
	d.mu.Lock()
	if other, busy := d.mounts[mp]; busy {
		d.mu.Unlock()
		if other.mounted == nil {
			return nil, fmt.Errorf("%w: %s is busy: another mount on it is under way", control.ErrExists, mp)
		}
		return nil, fmt.Errorf("%w: %s is already mounted by erofsd", control.ErrExists, mp)
	}
	d.mounts[mp] = m // reserved: Mounts and state skip it until mounted
	d.mu.Unlock()
	release := func() {
		d.mu.Lock()
		if d.mounts[mp] == m {
			delete(d.mounts, mp)
		}
		d.mu.Unlock()
	}

	registered := false
	var im *ondemand.Image
	if req.Bootstrap != "" {
		im, err = d.register(ctx, req.RegisterRequest, true)
		switch {
		case err == nil:
			registered = true
		case errors.Is(err, control.ErrExists):
			// Mounting an image registered before.
		default:
			release()
			return nil, err
		}
	}
	if im == nil {
		var ok bool
		if im, ok = d.reg.Lookup(req.FSID, req.DomainID); !ok {
			release()
			return nil, fmt.Errorf("%w: image %q is not registered", control.ErrNotFound, req.FSID)
		}
	}
	mounted, err := fe.Mount(ctx, im, mp)
	if err != nil {
		release()
		if registered {
			d.Unregister(context.WithoutCancel(ctx), req.FSID, req.DomainID)
		}
		return nil, mapErr(err)
	}
	sysfs := superblockDir(mp, im)
	d.mu.Lock()
	m.mounted, m.sysfs = mounted, sysfs
	d.mu.Unlock()
	d.saveState()
	d.log.WithFields(logrus.Fields{"fsid": req.FSID, "domain": req.DomainID, "mountpoint": mp, "frontend": fe.Name()}).Info("mounted")
	d.pf.run(mp, req.FSID, req.DomainID, popts) // opens the blob stores, prefetches if asked
	d.lat.sync()
	out := m.Mount
	return &out, nil
}

// mountNames returns the daemon's mounts: mountpoint → fsid.
func (d *Daemon) mountNames() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]string, len(d.mounts))
	for mp, m := range d.mounts {
		if m.mounted != nil {
			out[mp] = m.FSID
		}
	}
	return out
}

// Unmount unmounts a mount erofsd made and, if the mount registered its
// image, unregisters it once the kernel has let go of it.
func (d *Daemon) Unmount(ctx context.Context, mountpoint string) error {
	return d.unmount(ctx, mountpoint, "")
}

// unmount unmounts a mount of owner ("" for the API's).
func (d *Daemon) unmount(ctx context.Context, mountpoint, owner string) error {
	mp := filepath.Clean(mountpoint)
	d.mu.Lock()
	m, ok := d.mounts[mp]
	if ok && m.mounted == nil {
		d.mu.Unlock()
		return fmt.Errorf("%w: %s is being mounted", control.ErrInUse, mp)
	}
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s was not mounted by erofsd", control.ErrNotFound, mp)
	}
	if m.Owner != owner {
		return fmt.Errorf("%w: %s is containerd's (image %s): remove the image or its containers in containerd", control.ErrInUse, mp, m.Image)
	}
	resume := d.pf.stop(mp)
	if err := unix.Unmount(mp, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		resume()
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: %s is busy", control.ErrInUse, mp)
		}
		return fmt.Errorf("umount %s: %w", mp, err)
	}
	d.mu.Lock()
	if d.mounts[mp] != m {
		d.mu.Unlock()
		return nil // a concurrent unmount won
	}
	delete(d.mounts, mp)
	d.mu.Unlock()
	d.saveState()
	d.lat.sync()
	log := d.log.WithFields(logrus.Fields{"fsid": m.FSID, "mountpoint": mp})
	if lingers(m.sysfs) {
		// The filesystem lives on without its mount point: a bind mount
		// or an overlay (a container's rootfs) still uses it. Its blobs
		// stay served until it is gone: released now, its cache files'
		// missing blocks would read as zeros.
		log.WithField("sysfs", m.sysfs).Info("unmounted; the filesystem is still in use elsewhere and stays served until it is released")
		d.lingerWG.Add(1)
		go func() {
			defer d.lingerWG.Done()
			if d.waitGone(m.sysfs) {
				d.released(context.Background(), m)
			}
		}()
		return nil
	}
	log.Info("unmounted")
	d.released(ctx, m)
	return nil
}

// released lets go of what a mount held once its filesystem is gone, and
// unregisters the image if the mount registered it.
func (d *Daemon) released(ctx context.Context, m *mountRec) {
	m.mounted.Release()
	im, ok := d.reg.Lookup(m.FSID, m.DomainID)
	if !ok || !metaOf(im).byMount || d.hasMount(m.FSID, m.DomainID) {
		return
	}
	// The kernel sends CLOSE for the image's objects shortly after the
	// filesystem goes; unregister once they are released.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := d.Unregister(ctx, m.FSID, m.DomainID)
		if err == nil || !errors.Is(err, control.ErrInUse) || time.Now().After(deadline) {
			if err != nil {
				d.log.WithError(err).WithField("fsid", m.FSID).Warn("image stays registered after unmount")
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// superblockDir names the /sys/fs directory of the EROFS filesystem
// mounted at mp: from the kernel (6.8+), else after the fsid (fscache
// mode names it "[domain,]fsid"); "" if unknown.
func superblockDir(mp string, im *ondemand.Image) string {
	if dir, err := kmount.SysfsDir(mp); err == nil {
		return dir
	}
	name := im.Spec.FSID
	if im.Spec.DomainID != "" {
		name = im.Spec.DomainID + "," + im.Spec.FSID
	}
	dir := filepath.Join("/sys/fs/erofs", name)
	if _, err := os.Stat(dir); err != nil {
		return ""
	}
	return dir
}

// lingers reports whether a filesystem's sysfs directory still exists.
func lingers(sysfs string) bool {
	if sysfs == "" {
		return false
	}
	_, err := os.Stat(sysfs)
	return err == nil
}

// waitGone waits until a filesystem's sysfs directory is gone; false if
// the daemon stops first (its front ends keep serving until then).
func (d *Daemon) waitGone(sysfs string) bool {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for lingers(sysfs) {
		select {
		case <-t.C:
		case <-d.stopping:
			return false
		}
	}
	return true
}

// Mounts lists the mounts erofsd made.
func (d *Daemon) Mounts(ctx context.Context) ([]control.Mount, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []control.Mount{}
	for _, m := range d.mounts {
		if m.mounted != nil {
			out = append(out, m.Mount)
		}
	}
	slices.SortFunc(out, func(a, b control.Mount) int { return strings.Compare(a.Mountpoint, b.Mountpoint) })
	return out, nil
}

// mountCount counts the mounts made.
func (d *Daemon) mountCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.mounts {
		if m.mounted != nil {
			n++
		}
	}
	return n
}

// counterSources are every component that reports counters.
func (d *Daemon) counterSources() []counters.Source {
	out := []counters.Source{d.reg, d.backends, counters.Func{Descs: []*counters.Desc{ondemand.Mounts}, Emit: func(emit func(counters.Value)) {
		counters.Emitter(emit).Add(ondemand.Mounts, int64(d.mountCount()))
	}}}
	for _, fe := range d.frontends {
		out = append(out, fe)
	}
	if d.snap != nil {
		out = append(out, d.snap)
	}
	return out
}

// Status reports the daemon's state and every counter.
func (d *Daemon) Status(ctx context.Context) (*control.Status, error) {
	var fes []string
	for _, fe := range d.frontends {
		fes = append(fes, fe.Name())
	}
	st := &control.Status{
		Version: d.cfg.Version, PID: os.Getpid(), Started: d.started, Frontend: strings.Join(fes, ", "), CacheDir: d.cfg.CacheDir,
		Images: len(d.reg.Images()), Mounts: d.mountCount(), Counters: counters.Map(d.counterSources()...),
	}
	if len(fes) == 0 {
		st.Frontend = "none: " + d.whyOff()
	}
	return st, nil
}
