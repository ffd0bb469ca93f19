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
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/oci"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// mountRec is a mount made by the daemon and what it holds.
type mountRec struct {
	control.Mount
	watches   []*fanotify.Watch  // fanotify front end: the blob cache files
	objects   []*ondemand.Object // and the sources behind them
	release   func()             // drops watches and objects after unmount
	devices   []string           // fanotify: the blob cache files, device= values
	prefetch  *savedPrefetch     // the background prefetch asked for, if any
	bootstrap string             // fanotify: the image file
}

type imageMeta struct {
	registered time.Time
	byMount    bool   // registered implicitly by a mount: unregistered by its unmount
	blobDir    string // as requested (empty: the daemon's default)
	insecure   bool
	source     string // oci:// images: the manifest, by digest
}

func metaKey(fsid, domain string) string { return fsid + "\x00" + domain }

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
	// connections, credentials (tokens) and concurrency limit.
	key := fmt.Sprintf("%s\x00%v", spec, insecure)
	d.storesMu.Lock()
	defer d.storesMu.Unlock()
	if s, ok := d.stores[key]; ok {
		return s, nil
	}
	opts := blobstore.StoreOptions{HTTPOptions: d.httpOpts, MirrorsByHost: d.cfg.RegistryMirrors, Stats: d.backends}
	opts.Insecure = insecure
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

func (d *Daemon) Register(ctx context.Context, req control.RegisterRequest) (*control.Image, error) {
	return d.register(ctx, req, false)
}

func (d *Daemon) register(ctx context.Context, req control.RegisterRequest, byMount bool) (_ *control.Image, err error) {
	// A fetched bootstrap is shared by the images of its digest and
	// removed with the last: fetching and registering must not interleave
	// with an unregister's removal.
	d.bootMu.Lock()
	defer d.bootMu.Unlock()
	defer func() {
		if err != nil && filepath.IsAbs(req.Bootstrap) {
			d.dropBootstrap(req.Bootstrap) // fetched for nothing
		}
	}()
	var source string
	if strings.HasPrefix(req.Bootstrap, oci.RegistryScheme) {
		var err error
		if source, err = d.resolveOCI(ctx, &req); err != nil {
			return nil, err
		}
	}
	store, err := d.store(req.BlobDir, req.Insecure)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(req.Bootstrap, "sha256:") {
		// The image itself is a blob of the store: fetch and verify it.
		digest, err := blobstore.ParseDigest(req.Bootstrap)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", control.ErrBadRequest, err)
		}
		path, err := ondemand.FetchBootstrap(ctx, store, digest, filepath.Join(d.cfg.StateDir, "bootstraps"))
		if err != nil {
			if errors.Is(err, blobstore.ErrNotFound) {
				return nil, fmt.Errorf("%w: %v", control.ErrNotFound, err)
			}
			return nil, err
		}
		req.Bootstrap = path
	}
	if !filepath.IsAbs(req.Bootstrap) {
		return nil, fmt.Errorf("%w: bootstrap %q must be an absolute path or a sha256: digest", control.ErrBadRequest, req.Bootstrap)
	}
	im, err := d.reg.Register(ondemand.ImageSpec{FSID: req.FSID, DomainID: req.DomainID, Bootstrap: req.Bootstrap, Store: store})
	if err != nil {
		return nil, mapErr(err)
	}
	d.mu.Lock()
	m := &imageMeta{registered: time.Now(), byMount: byMount, blobDir: req.BlobDir, insecure: req.Insecure, source: source}
	d.meta[metaKey(req.FSID, req.DomainID)] = m
	d.mu.Unlock()
	d.saveState()
	d.log.WithFields(logrus.Fields{"fsid": req.FSID, "domain": req.DomainID, "bootstrap": req.Bootstrap, "blobs": len(im.Blobs)}).Info("image registered")
	out := d.describe(im)
	return &out, nil
}

// resolveOCI finds the erofsd image req.Bootstrap names in its registry,
// fetches and verifies its bootstrap, and points req at the local copy and
// at the repository as blob store. It returns the manifest resolved, by
// digest, so that a restart serves the same image even if the tag moved.
func (d *Daemon) resolveOCI(ctx context.Context, req *control.RegisterRequest) (string, error) {
	var platform *v1.Platform
	if req.Platform != "" {
		p, err := v1.ParsePlatform(req.Platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return "", fmt.Errorf("%w: platform %q: want os/arch[/variant]", control.ErrBadRequest, req.Platform)
		}
		platform = p
	}
	ro := oci.RemoteOptions{PlainHTTP: req.PlainHTTP, Insecure: req.Insecure, CAFile: d.httpOpts.CAFile}
	res, err := oci.Resolve(ctx, req.Bootstrap, platform, ro)
	if err != nil {
		var terr *transport.Error
		switch {
		case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
			return "", fmt.Errorf("%w: %v", control.ErrNotFound, err)
		case errors.Is(err, oci.ErrNotErofsd), errors.Is(err, oci.ErrNoPlatform), errors.Is(err, oci.ErrPlainHTTP):
			return "", fmt.Errorf("%w: %v", control.ErrBadRequest, err)
		}
		return "", fmt.Errorf("resolving %s: %w", req.Bootstrap, err)
	}
	scheme := "oci://"
	if req.PlainHTTP {
		scheme = "oci+http://"
	}
	req.BlobDir = scheme + res.Repository.Name()
	store, err := d.store(req.BlobDir, req.Insecure)
	if err != nil {
		return "", err
	}
	digest, err := blobstore.ParseDigest(res.Manifest.Bootstrap.Digest.String())
	if err != nil {
		return "", fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	}
	if res.Manifest.Bootstrap.Size > ondemand.MaxBootstrapSize {
		return "", fmt.Errorf("%w: bootstrap of %d bytes", control.ErrBadRequest, res.Manifest.Bootstrap.Size)
	}
	path, err := ondemand.FetchBootstrap(ctx, store, digest, filepath.Join(d.cfg.StateDir, "bootstraps"))
	if err != nil {
		return "", fmt.Errorf("bootstrap of %s: %w", req.Bootstrap, err)
	}
	req.Bootstrap = path
	source := res.Repository.Name() + "@" + res.Digest.String()
	d.log.WithFields(logrus.Fields{"image": source, "blobs": len(res.Manifest.Blobs)}).Info("registry image resolved")
	return source, nil
}

func (d *Daemon) Unregister(ctx context.Context, fsid, domain string) error {
	var bootstrap string
	for _, im := range d.reg.Images() {
		if im.Spec.FSID == fsid && im.Spec.DomainID == domain {
			bootstrap = im.Spec.Bootstrap
		}
	}
	d.bootMu.Lock()
	defer d.bootMu.Unlock()
	if err := d.reg.Unregister(fsid, domain); err != nil {
		return mapErr(err)
	}
	d.mu.Lock()
	delete(d.meta, metaKey(fsid, domain))
	d.mu.Unlock()
	d.saveState()
	d.dropBootstrap(bootstrap)
	d.log.WithFields(logrus.Fields{"fsid": fsid, "domain": domain}).Info("image unregistered")
	return nil
}

// dropBootstrap removes a bootstrap the daemon fetched (by digest or from
// a registry) once no registered image uses it, so that tags moving on
// do not fill the state dir; it is fetched again if needed.
func (d *Daemon) dropBootstrap(path string) {
	dir := filepath.Join(d.cfg.StateDir, "bootstraps")
	if path == "" || filepath.Dir(path) != dir {
		return // the user's own image file
	}
	for _, im := range d.reg.Images() {
		if im.Spec.Bootstrap == path {
			return
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.WithError(err).WithField("bootstrap", path).Warn("removing a fetched bootstrap")
	}
}

func (d *Daemon) describe(im *ondemand.Image) control.Image {
	out := control.Image{
		FSID: im.Spec.FSID, DomainID: im.Spec.DomainID, Bootstrap: im.Spec.Bootstrap, Size: im.Size,
		OpenObjects: im.OpenObjects(), Blobs: []control.Blob{}, Mounts: []string{},
	}
	for _, b := range im.Blobs {
		out.Blobs = append(out.Blobs, control.Blob{Digest: b.Digest.String(), Size: b.Size, Chunks: b.Chunks})
	}
	d.mu.Lock()
	if m := d.meta[metaKey(im.Spec.FSID, im.Spec.DomainID)]; m != nil {
		out.Registered, out.Source = m.registered, m.source
	}
	for mp, m := range d.mounts {
		if m.FSID == im.Spec.FSID && m.DomainID == im.Spec.DomainID {
			out.Mounts = append(out.Mounts, mp)
		}
	}
	d.mu.Unlock()
	slices.Sort(out.Mounts)
	return out
}

func (d *Daemon) Images(ctx context.Context) ([]control.Image, error) {
	out := []control.Image{}
	for _, im := range d.reg.Images() {
		out = append(out, d.describe(im))
	}
	return out, nil
}

// frontend picks the front end for a mount: "auto" prefers cachefiles
// (the kernel caches the data itself) and falls back to fanotify.
func (d *Daemon) frontend(want string) (string, error) {
	switch want {
	case "", "auto":
		if d.srv != nil {
			return "cachefiles", nil
		}
		if d.fan != nil {
			return "fanotify", nil
		}
		return "", fmt.Errorf("%w: no front end works on this kernel: cachefiles: %v; fanotify: %v", control.ErrUnavailable, d.srvErr, d.fanErr)
	case "cachefiles":
		if d.srv == nil {
			return "", fmt.Errorf("%w: %v", control.ErrUnavailable, d.srvErr)
		}
	case "fanotify":
		if d.fan == nil {
			return "", fmt.Errorf("%w: %v", control.ErrUnavailable, d.fanErr)
		}
	default:
		return "", fmt.Errorf("%w: front end %q: want auto, cachefiles or fanotify", control.ErrBadRequest, want)
	}
	return want, nil
}

func (d *Daemon) Mount(ctx context.Context, req control.MountRequest) (*control.Mount, error) {
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
	d.mu.Lock()
	_, busy := d.mounts[mp]
	d.mu.Unlock()
	if busy {
		return nil, fmt.Errorf("%w: %s is already mounted by erofsd", control.ErrExists, mp)
	}
	registered := false
	if req.Bootstrap != "" {
		_, err := d.register(ctx, req.RegisterRequest, true)
		switch {
		case err == nil:
			registered = true
		case errors.Is(err, control.ErrExists):
			// Mounting an image registered before.
		default:
			return nil, err
		}
	}
	m := &mountRec{Mount: control.Mount{Mountpoint: mp, FSID: req.FSID, DomainID: req.DomainID, Frontend: fe}}
	if prefetch {
		m.prefetch = &savedPrefetch{Whole: popts.Whole, Files: popts.Files}
	}
	if fe == "cachefiles" {
		err = d.mountCachefiles(m)
	} else {
		err = d.mountFanotify(m)
	}
	if err != nil {
		if registered {
			d.Unregister(ctx, req.FSID, req.DomainID)
		}
		return nil, err
	}
	d.mu.Lock()
	d.mounts[mp] = m
	d.mu.Unlock()
	d.saveState()
	d.log.WithFields(logrus.Fields{"fsid": req.FSID, "domain": req.DomainID, "mountpoint": mp, "frontend": fe}).Info("mounted")
	if prefetch {
		d.pf.start(mp, req.FSID, req.DomainID, popts)
	}
	out := m.Mount
	return &out, nil
}

// mountCachefiles mounts in fscache mode: the kernel asks for the image
// and its blobs through /dev/cachefiles. The blobs' cache objects are
// named by device= options after their digest and chunk table
// (BlobInfo.Name), not by the bare device tags: an image that claims
// another image's blob digest with other chunks gets objects of its own.
func (d *Daemon) mountCachefiles(m *mountRec) error {
	im := d.image(m.FSID, m.DomainID)
	if im == nil {
		return fmt.Errorf("%w: image %q is not registered", control.ErrNotFound, m.FSID)
	}
	if err := d.checkFscacheSafe(im); err != nil {
		return err
	}
	if d.srv != nil {
		// A bootstrap object left in the cache under this fsid by an
		// image of the same name but other content would be read by the
		// kernel without asking erofsd.
		if err := d.srv.ForgetStale(im.VolumeKey(), m.FSID, im.Spec.Bootstrap); err != nil {
			return fmt.Errorf("cached bootstrap of fsid %s: %w", m.FSID, err)
		}
	}
	spec := kmount.Spec{FSID: m.FSID, DomainID: m.DomainID, Attrs: unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID}
	for _, b := range im.Blobs {
		spec.Devices = append(spec.Devices, b.Name)
	}
	if err := kmount.Mount(spec, m.Mountpoint); err != nil {
		return fmt.Errorf("%w%s", err, mountHint(err))
	}
	return nil
}

// image returns the registered image of fsid and domain, or nil.
func (d *Daemon) image(fsid, domain string) *ondemand.Image {
	for _, i := range d.reg.Images() {
		if i.Spec.FSID == fsid && i.Spec.DomainID == domain {
			return i
		}
	}
	return nil
}

// checkFscacheSafe refuses, on kernels whose fscache mode reads sparse
// holes wrongly (before 6.2), an image with a hole before data.
func (d *Daemon) checkFscacheSafe(im *ondemand.Image) error {
	if !d.fscacheHoleBug {
		return nil
	}
	rep, err := im.FscacheLinux61(context.Background())
	if err != nil {
		return fmt.Errorf("%w: %v", control.ErrBadRequest, err)
	}
	if rep.HoleFiles > 0 {
		return fmt.Errorf("%w: image %s cannot be served in fscache mode by this kernel (%s): %s", control.ErrBadRequest, im.Spec.FSID, d.kernelRelease, strings.Join(rep.Problems, "; "))
	}
	return nil
}

// tuneReadahead sets a file-backed mount's readahead (--mount-readahead):
// each read the kernel makes of a blob not yet complete is a request
// erofsd answers, so larger reads mean fewer round trips for a sequential
// reader. (fscache mounts name their sysfs directory after the fsid, not
// after a bdi, so they are left alone.) Kernels without the ioctl to find
// the mount's settings (before 6.8) keep their default, said in the log.
func (d *Daemon) tuneReadahead(mp string) {
	if d.cfg.MountReadahead <= 0 {
		return
	}
	if err := kmount.SetReadahead(mp, int(d.cfg.MountReadahead>>10)); err != nil {
		d.log.WithError(err).WithField("mountpoint", mp).Info("mount readahead left at the kernel's default")
	}
}

// mountFanotify mounts the image file-backed with a sparse cache file per
// blob, each watched for pre-content events.
func (d *Daemon) mountFanotify(m *mountRec) error {
	if err := d.watchBlobs(m); err != nil {
		return err
	}
	spec := kmount.Spec{Source: m.bootstrap, Devices: m.devices, Attrs: unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID}
	if err := kmount.Mount(spec, m.Mountpoint); err != nil {
		m.release()
		hint := ""
		if errors.Is(err, unix.ENOTBLK) || errors.Is(err, unix.EINVAL) {
			hint = " (file-backed EROFS mounts need CONFIG_EROFS_FS_BACKED_BY_FILE, Linux 6.12+)"
		}
		return fmt.Errorf("%w%s", err, hint)
	}
	d.tuneReadahead(m.Mountpoint)
	return nil
}

// watchBlobs resolves a mount's blobs and watches their cache files.
func (d *Daemon) watchBlobs(m *mountRec) error {
	im := d.image(m.FSID, m.DomainID)
	if im == nil {
		return fmt.Errorf("%w: image %q is not registered", control.ErrNotFound, m.FSID)
	}
	dir := filepath.Join(d.cfg.CacheDir, "fanotify")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	release := func() {
		for _, w := range m.watches {
			w.Close()
		}
		for _, o := range m.objects {
			o.Release()
		}
		m.watches, m.objects = nil, nil
	}
	var devices []string
	for _, b := range im.Blobs {
		obj, err := d.reg.Resolve(im.VolumeKey(), b.Name)
		if err != nil {
			release()
			return err
		}
		m.objects = append(m.objects, obj)
		path := filepath.Join(dir, b.Name) // hex digest and fingerprint: a safe file name
		w, err := d.fan.Watch(path, b.Size, b.Digest.Sum(), obj)
		if err != nil {
			release()
			return err
		}
		obj.Attach(w.Target()) // for prefetch; released with obj
		m.watches = append(m.watches, w)
		devices = append(devices, path)
	}
	m.devices, m.bootstrap, m.release = devices, im.Spec.Bootstrap, release
	return nil
}

// mountHint explains the usual mount(2) failures of fscache mode.
func mountHint(err error) string {
	switch {
	case errors.Is(err, unix.EBUSY):
		return " (an image with this fsid is already mounted: pick another --fsid, or share blobs with --domain-id)"
	case errors.Is(err, unix.EEXIST):
		return " (this fsid already exists in the domain)"
	case errors.Is(err, unix.EINVAL):
		return " (the kernel's erofs may lack fscache mode: CONFIG_EROFS_FS_ONDEMAND)"
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EIO):
		return " (the daemon could not serve the image: see its log)"
	}
	return ""
}

func (d *Daemon) Unmount(ctx context.Context, mountpoint string) error {
	mp := filepath.Clean(mountpoint)
	d.mu.Lock()
	m, ok := d.mounts[mp]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s was not mounted by erofsd", control.ErrNotFound, mp)
	}
	resume := d.pf.stop(mp)
	if err := unix.Unmount(mp, 0); err != nil {
		resume()
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: %s is busy", control.ErrInUse, mp)
		}
		return fmt.Errorf("umount %s: %w", mp, err)
	}
	if m.release != nil {
		m.release()
	}
	d.mu.Lock()
	delete(d.mounts, mp)
	meta := d.meta[metaKey(m.FSID, m.DomainID)]
	d.mu.Unlock()
	d.saveState()
	d.log.WithFields(logrus.Fields{"fsid": m.FSID, "mountpoint": mp}).Info("unmounted")
	if meta != nil && meta.byMount {
		// The kernel sends CLOSE for the image's objects shortly after
		// the unmount; unregister once they are released.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := d.Unregister(ctx, m.FSID, m.DomainID)
			if err == nil || !errors.Is(err, control.ErrInUse) || time.Now().After(deadline) {
				if err != nil {
					d.log.WithError(err).WithField("fsid", m.FSID).Warn("image stays registered after unmount")
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (d *Daemon) Mounts(ctx context.Context) ([]control.Mount, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []control.Mount{}
	for _, m := range d.mounts {
		out = append(out, m.Mount)
	}
	slices.SortFunc(out, func(a, b control.Mount) int { return strings.Compare(a.Mountpoint, b.Mountpoint) })
	return out, nil
}

func (d *Daemon) Status(ctx context.Context) (*control.Status, error) {
	d.mu.Lock()
	mounts := len(d.mounts)
	d.mu.Unlock()
	st := &control.Status{
		Version: d.cfg.Version, PID: os.Getpid(), Started: d.started, Frontend: "cachefiles", CacheDir: d.cfg.CacheDir,
		Images: len(d.reg.Images()), Mounts: mounts, Counters: map[string]int64{
			"chunk_fetches":         d.reg.Stats.Fetches.Load(),
			"chunk_fetched_bytes":   d.reg.Stats.FetchedBytes.Load(),
			"chunk_digest_failures": d.reg.Stats.DigestFailures.Load(),
			"zero_chunks":           d.reg.Stats.ZeroChunks.Load(),
			"chunk_fills_coalesced": d.reg.Stats.Coalesced.Load(),
			"prefetch_bytes_done":   d.reg.Stats.PrefetchBytesDone.Load(),
			"prefetch_bytes_left":   d.reg.Stats.PrefetchBytesLeft.Load(),
		},
	}
	var fes []string
	if d.srv != nil {
		fes = append(fes, "cachefiles")
	}
	if d.fan != nil {
		fes = append(fes, "fanotify")
		f := &d.fan.Stats
		for k, v := range map[string]int64{
			"fanotify_events": f.Events.Load(), "fanotify_allowed": f.Allowed.Load(), "fanotify_denied": f.Denied.Load(),
			"fanotify_written_bytes": f.WrittenBytes.Load(), "fanotify_in_flight": f.InFlight.Load(), "fanotify_watches": f.Watches.Load(),
			"fanotify_verified_bytes": f.VerifiedBytes.Load(), "fanotify_files_not_blob": f.NotBlob.Load(),
		} {
			st.Counters[k] = v
		}
	}
	st.Frontend = strings.Join(fes, ", ")
	d.cacheCounters(st.Counters)
	if len(fes) == 0 {
		st.Frontend = fmt.Sprintf("none: cachefiles: %v; fanotify: %v", d.srvErr, d.fanErr)
	}
	if d.srv == nil {
		return st, nil
	}
	s := &d.srv.Stats
	for k, v := range map[string]int64{
		"open_requests": s.Opens.Load(), "open_errors": s.OpenErrors.Load(),
		"read_requests": s.Reads.Load(), "read_errors": s.ReadErrors.Load(),
		"close_requests": s.Closes.Load(), "cache_written_bytes": s.ReadBytes.Load(),
		"reads_in_flight": s.InFlight.Load(), "open_objects": s.OpenObjects.Load(),
		"malformed_messages": s.Malformed.Load(), "handler_panics": s.Panicked.Load(),
		"readaheads": s.Readaheads.Load(),
	} {
		st.Counters[k] = v
	}
	return st, nil
}
