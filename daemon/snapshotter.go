package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/snapshotter"
	"github.com/erofsd/erofsd/snapshotter/criproxy"
)

// ownerSnapshotter owns the mounts made for containerd.
const ownerSnapshotter = "snapshotter"

// snapshotterImages is the daemon as the snapshotter sees it.
type snapshotterImages struct{ d *Daemon }

var _ snapshotter.Images = snapshotterImages{}

// MountImage mounts an erofsd image of a registry for containerd, as
// erofsctl mount oci://REF would, once the manifest is known to list the
// layers containerd pulled: their chain ID is the snapshot's name.
func (s snapshotterImages) MountImage(ctx context.Context, img snapshotter.Image) error {
	d := s.d
	// containerd's calls carry no deadline: a registry that accepts
	// and never answers must not hold the image's lock for ever.
	ctx, cancel := context.WithTimeout(ctx, 2*d.cfg.RequestTimeout)
	defer cancel()
	dir := filepath.Clean(img.Dir)
	d.mu.Lock()
	m, ok := d.mounts[dir]
	d.mu.Unlock()
	if ok && m.mounted != nil && m.FSID == img.FSID && s.Mounted(dir, img.FSID) {
		return nil
	}
	host, _, _ := strings.Cut(img.Ref, "/")
	reg := control.RegisterRequest{FSID: img.FSID, Bootstrap: "oci://" + img.Ref, PlainHTTP: slices.Contains(d.cfg.Snapshotter.PlainHTTPHosts, host)}
	probe := reg
	res, err := d.resolveOCI(ctx, &probe)
	if err != nil {
		return err
	}
	layers := make([]string, 0, len(res.blobs)+1)
	for _, b := range res.blobs {
		layers = append(layers, b.String())
	}
	if chain := snapshotter.ChainID(append(layers, res.digest.String())...); chain != img.Chain {
		return fmt.Errorf("%w: %s: its layers' chain is %s, containerd pulled %s", control.ErrBadRequest, img.Ref, chain, img.Chain)
	}
	if ok && m.mounted != nil {
		// A record whose mount is gone: let it go, then mount again.
		if err := d.unmount(ctx, dir, ownerSnapshotter); err != nil {
			return err
		}
	}
	if _, err := d.mount(ctx, control.MountRequest{Mountpoint: dir, RegisterRequest: reg}, ownerSnapshotter, img.Ref); err != nil {
		return err
	}
	// The manifest is named by digest, so the mount's is the one checked;
	// the bootstrap is verified by its digest when fetched.
	if im, ok := d.reg.Lookup(img.FSID, ""); !ok || filepath.Base(im.Spec.Bootstrap) != res.digest.Hex() {
		err := fmt.Errorf("%w: %s: the bootstrap mounted is not the manifest's", control.ErrBadRequest, img.Ref)
		if uerr := d.unmount(context.WithoutCancel(ctx), dir, ownerSnapshotter); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return err
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

// Dirs lists the mountpoints of the mounts made for the snapshotter.
func (s snapshotterImages) Dirs() []string {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	var dirs []string
	for mp, m := range s.d.mounts {
		if m.Owner == ownerSnapshotter && m.mounted != nil {
			dirs = append(dirs, mp)
		}
	}
	return dirs
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
// configured; the function it returns stops it (it is safe twice). A
// snapshotter that cannot start is logged and left off: the daemon goes
// on serving the mounts it has.
func (d *Daemon) startSnapshotter(ctx context.Context) (stop func()) {
	cfg := d.cfg.Snapshotter
	if cfg.Socket == "" {
		return func() {}
	}
	log := d.log.WithFields(logrus.Fields{"socket": cfg.Socket, "root": cfg.Root})
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	sn, err := snapshotter.New(openCtx, cfg.Root, snapshotterImages{d})
	if err != nil {
		log.WithError(err).Error("containerd snapshotter off")
		return func() {}
	}
	// Images whose snapshots went while erofsd was down.
	if err := sn.ReleaseOrphans(openCtx); err != nil {
		log.WithError(err).Warn("releasing the images of removed snapshots")
	}
	l, err := d.listen(cfg.Socket)
	if err != nil {
		sn.Close()
		log.WithError(err).Error("containerd snapshotter off: its socket")
		return func() {}
	}
	d.sn, d.snap = sn, snapshotter.NewServer(sn)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := d.snap.Serve(l); err != nil {
			log.WithError(err).Error("snapshotter server")
		}
	}()
	log.Info("containerd snapshotter ready")
	var once sync.Once
	return func() {
		once.Do(func() {
			d.snap.Stop()
			<-served
			sn.Close()
			d.unlinkForGood(cfg.Socket)
		})
	}
}

// startCRIProxy serves the CRI image service proxy, if configured; the
// function it returns stops it (it is safe twice). Like the snapshotter,
// a proxy that cannot start is logged and left off.
func (d *Daemon) startCRIProxy() (stop func()) {
	cfg := d.cfg.Snapshotter
	if cfg.CRIProxySocket == "" || d.creds == nil {
		return func() {}
	}
	log := d.log.WithFields(logrus.Fields{"socket": cfg.CRIProxySocket, "upstream": cfg.CRIUpstream})
	// Dialled lazily: containerd may start after erofsd.
	conn, err := grpc.NewClient("unix://"+cfg.CRIUpstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.WithError(err).Error("CRI image proxy off")
		return func() {}
	}
	l, err := d.listen(cfg.CRIProxySocket)
	if err != nil {
		conn.Close()
		log.WithError(err).Error("CRI image proxy off: its socket")
		return func() {}
	}
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	criproxy.New(conn, d.creds).Register(srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(l); err != nil {
			log.WithError(err).Error("CRI image proxy")
		}
	}()
	log.Info("CRI image proxy ready")
	var once sync.Once
	return func() {
		once.Do(func() {
			srv.Stop()
			<-served
			conn.Close()
			d.unlinkForGood(cfg.CRIProxySocket)
		})
	}
}

// heldCredentials names the memfd of the CRI proxy's credentials that
// the supervisor holds.
const heldCredentials = "cri-credentials"

// keepCredentials takes back the CRI proxy's credentials that the
// supervisor kept for a restarted daemon, and from then on hands it a
// copy after each change (in a memfd: never on disk). Without them, a
// restarted daemon could not read the private images its containers
// run until kubelet pulled them again.
func (d *Daemon) keepCredentials() {
	if d.creds == nil {
		return
	}
	if fd, ok := d.held.FDs[heldCredentials]; ok {
		f := os.NewFile(uintptr(fd), heldCredentials)
		data, err := io.ReadAll(io.NewSectionReader(f, 0, maxCredentials))
		f.Close()
		if err == nil {
			err = d.creds.Load(data)
		}
		if err != nil {
			d.log.WithError(err).Warn("the CRI proxy's credentials kept by the supervisor")
		}
	}
	if d.sup == nil {
		return
	}
	d.creds.OnChange = func() {
		if err := d.holdCredentials(); err != nil {
			d.log.WithError(err).Warn("the CRI proxy's credentials are not kept across a restart")
		}
	}
}

// maxCredentials bounds the saved credentials read back.
const maxCredentials = 64 << 20

func (d *Daemon) holdCredentials() error {
	// Serialized, each saving the state at its turn: the last copy held
	// is the latest.
	d.credsHold.Lock()
	defer d.credsHold.Unlock()
	data, err := d.creds.Save()
	if err != nil {
		return err
	}
	fd, err := unix.MemfdCreate(heldCredentials, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), heldCredentials)
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	// Sealed: whoever holds a copy can read it, nobody can change it.
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK); err != nil {
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var herr error
	if err := rc.Control(func(fd uintptr) { herr = d.sup.Hold(heldCredentials, int(fd)) }); err != nil {
		return err
	}
	return herr
}
