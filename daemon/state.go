package daemon

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/internal/state"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/sirupsen/logrus"
)

// savedPrefetch is a mount's background prefetch, resumed after a restart.
type savedPrefetch = state.Prefetch

func (d *Daemon) statePath() string { return filepath.Join(d.cfg.StateDir, "state.json") }

// saveState writes what a restarted daemon needs to carry on: the images
// registered and the mounts made (state.Save: atomic, the previous good
// copy kept). Failures are logged: the daemon serves without it, only a
// restart would lose track.
func (d *Daemon) saveState() {
	d.stateMu.Lock() // writes in the order their snapshots were taken
	defer d.stateMu.Unlock()
	d.mu.Lock()
	if d.restoring {
		// Half restored: saving now would drop the mounts not adopted
		// yet, and the next restart would lose them.
		d.mu.Unlock()
		return
	}
	f := &state.File{Images: []state.Image{}, Mounts: []state.Mount{}}
	for _, m := range d.mounts {
		if m.mounted == nil {
			continue // still being mounted
		}
		f.Mounts = append(f.Mounts, state.Mount{Mountpoint: m.Mountpoint, FSID: m.FSID, DomainID: m.DomainID, Frontend: m.Frontend, Prefetch: m.prefetch,
			Owner: m.Owner, Image: m.Image})
	}
	d.mu.Unlock()
	for _, im := range d.reg.Images() {
		m := metaOf(im)
		f.Images = append(f.Images, state.Image{FSID: im.Spec.FSID, DomainID: im.Spec.DomainID, Bootstrap: im.Spec.Bootstrap,
			BlobDir: m.blobDir, Insecure: m.insecure, PlainHTTP: m.plainHTTP, ByMount: m.byMount, Source: m.source})
	}
	if err := state.Save(d.statePath(), f); err != nil {
		d.log.WithError(err).Warn("saving state")
	}
}

// restoreState re-registers the images and re-adopts the mounts of the
// daemon that ran before this one (a restart under a supervisor). Entries
// that do not parse are skipped, each logged; a mount is adopted only if
// its mountpoint holds the erofs mount the entry describes (a stale or
// tampered entry must not make a later umount unmount something else).
func (d *Daemon) restoreState(ctx context.Context) error {
	f, problems, err := state.Load(d.statePath())
	for _, p := range problems {
		d.log.WithError(p).Warn("state file")
	}
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.restoring = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.restoring = false
		d.mu.Unlock()
		d.saveState()
	}()
	for _, si := range f.Images {
		// Registered by its local bootstrap: a registry image needs no
		// registry to come back, only to fetch data.
		req := control.RegisterRequest{FSID: si.FSID, DomainID: si.DomainID, Bootstrap: si.Bootstrap, BlobDir: si.BlobDir,
			Insecure: si.Insecure, PlainHTTP: si.PlainHTTP}
		im, err := d.register(ctx, req, si.ByMount)
		if err != nil {
			d.log.WithError(err).WithField("fsid", si.FSID).Error("cannot re-register image after restart")
			continue
		}
		metaOf(im).source = si.Source
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return fmt.Errorf("adopting mounts: %w", err)
	}
	for _, sm := range f.Mounts {
		log := d.log.WithFields(logrus.Fields{"mountpoint": sm.Mountpoint, "fsid": sm.FSID, "frontend": sm.Frontend})
		if err := d.adopt(ctx, sm, mounts); err != nil {
			log.WithError(err).Error("mount not adopted after restart")
			continue
		}
		log.Info("mount adopted")
		if sm.Prefetch != nil {
			d.pf.resume(sm.Mountpoint, sm.FSID, sm.DomainID, *sm.Prefetch)
		} else {
			d.pf.run(sm.Mountpoint, sm.FSID, sm.DomainID, ondemand.PrefetchOptions{}) // opens the stores ahead
		}
	}
	// An image registered by a mount that is gone (a reboot, a stale
	// entry) would stay registered for good: it goes with its mount.
	for _, im := range d.reg.Images() {
		if metaOf(im).byMount && !d.hasMount(im.Spec.FSID, im.Spec.DomainID) {
			if err := d.Unregister(ctx, im.Spec.FSID, im.Spec.DomainID); err != nil {
				d.log.WithError(err).WithField("fsid", im.Spec.FSID).Warn("image of a mount gone stays registered")
			}
		}
	}
	return nil
}

// hasMount reports whether a mount of the image is tracked.
func (d *Daemon) hasMount(fsid, domain string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.mounts {
		if m.FSID == fsid && m.DomainID == domain {
			return true
		}
	}
	return false
}

// adopt takes back one mount of the state file after checking that its
// mountpoint holds it.
func (d *Daemon) adopt(ctx context.Context, sm state.Mount, mounts []mountinfo.Entry) error {
	im, ok := d.reg.Lookup(sm.FSID, sm.DomainID)
	if !ok {
		return fmt.Errorf("image %q is not registered", sm.FSID)
	}
	fe, err := d.frontend(sm.Frontend)
	if err != nil {
		return err
	}
	e, ok := mountinfo.Top(mounts, sm.Mountpoint)
	if !ok {
		return fmt.Errorf("%s is not mounted any more", sm.Mountpoint)
	}
	want := mountinfo.Erofs{FSID: sm.FSID, DomainID: sm.DomainID}
	if sm.Frontend == "fanotify" {
		want = mountinfo.Erofs{Source: im.Spec.Bootstrap}
	}
	if err := mountinfo.CheckErofs(e, want); err != nil {
		return err
	}
	d.mu.Lock()
	if _, busy := d.mounts[sm.Mountpoint]; busy {
		d.mu.Unlock()
		return fmt.Errorf("%s is listed twice", sm.Mountpoint)
	}
	rec := &mountRec{Mount: control.Mount{Mountpoint: sm.Mountpoint, FSID: sm.FSID, DomainID: sm.DomainID, Frontend: fe.Name(),
		Owner: sm.Owner, Image: sm.Image}, prefetch: sm.Prefetch}
	d.mounts[sm.Mountpoint] = rec
	d.mu.Unlock()
	mounted, err := fe.Adopt(ctx, im, sm.Mountpoint)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		delete(d.mounts, sm.Mountpoint)
		return err
	}
	rec.mounted = mounted
	return nil
}
