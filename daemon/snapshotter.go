package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/snapshotter"
)

// ownerSnapshotter owns the mounts made for containerd.
const ownerSnapshotter = "snapshotter"

// snapshotterImages is the daemon as the snapshotter sees it.
type snapshotterImages struct{ d *Daemon }

var _ snapshotter.Images = snapshotterImages{}

// MountImage mounts an erofsd image of a registry for containerd, as
// erofsctl mount oci://REF would, checking that the manifest's bootstrap
// is the layer containerd was given.
func (s snapshotterImages) MountImage(ctx context.Context, img snapshotter.Image) error {
	d := s.d
	dir := filepath.Clean(img.Dir)
	d.mu.Lock()
	m, ok := d.mounts[dir]
	d.mu.Unlock()
	if ok && m.mounted != nil && m.FSID == img.FSID && s.Mounted(dir, img.FSID) {
		return nil
	}
	if ok && m.mounted != nil {
		// A record whose mount is gone: let it go, then mount again.
		if err := d.unmount(ctx, dir, ownerSnapshotter); err != nil {
			return err
		}
	}
	host, _, _ := strings.Cut(img.Ref, "/")
	req := control.MountRequest{Mountpoint: dir, RegisterRequest: control.RegisterRequest{
		FSID: img.FSID, Bootstrap: "oci://" + img.Ref, PlainHTTP: slices.Contains(d.cfg.Snapshotter.PlainHTTPHosts, host)}}
	if _, err := d.mount(ctx, req, ownerSnapshotter, img.Ref); err != nil {
		return err
	}
	im, ok := d.reg.Lookup(img.FSID, "")
	if !ok || img.Bootstrap != "sha256:"+filepath.Base(im.Spec.Bootstrap) {
		d.unmount(context.WithoutCancel(ctx), dir, ownerSnapshotter)
		return fmt.Errorf("%w: %s: the manifest's bootstrap is not the layer %s containerd pulled", control.ErrBadRequest, img.Ref, img.Bootstrap)
	}
	return nil
}

// UnmountImage unmounts a mount made for containerd and releases its
// image.
func (s snapshotterImages) UnmountImage(ctx context.Context, dir string) error {
	err := s.d.unmount(ctx, dir, ownerSnapshotter)
	if errors.Is(err, control.ErrNotFound) {
		return nil // gone already (never mounted here, or a reboot)
	}
	return err
}

// Mounted reports whether dir holds the erofs mount made for fsid.
func (s snapshotterImages) Mounted(dir, fsid string) bool {
	d := s.d
	dir = filepath.Clean(dir)
	d.mu.Lock()
	m, ok := d.mounts[dir]
	d.mu.Unlock()
	if !ok || m.mounted == nil || m.FSID != fsid {
		return false
	}
	ents, err := mountinfo.Read()
	if err != nil {
		return false
	}
	e, ok := mountinfo.Top(ents, dir)
	return ok && e.FSType == "erofs"
}

// startSnapshotter opens the snapshotter and serves it on its socket, if
// configured; the function it returns stops it (it is safe twice).
func (d *Daemon) startSnapshotter() (stop func(), err error) {
	cfg := d.cfg.Snapshotter
	if cfg.Socket == "" {
		return func() {}, nil
	}
	sn, err := snapshotter.New(cfg.Root, snapshotterImages{d})
	if err != nil {
		return nil, err
	}
	l, err := d.listen(cfg.Socket)
	if err != nil {
		sn.Close()
		return nil, fmt.Errorf("snapshotter socket: %w", err)
	}
	d.sn, d.snap = sn, snapshotter.NewServer(sn)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := d.snap.Serve(l); err != nil {
			d.log.WithError(err).Error("snapshotter server")
		}
	}()
	d.log.WithFields(logrus.Fields{"socket": cfg.Socket, "root": cfg.Root}).Info("containerd snapshotter ready")
	var once sync.Once
	return func() {
		once.Do(func() {
			d.snap.Stop()
			<-served
			sn.Close()
			d.unlinkForGood(cfg.Socket)
		})
	}, nil
}
