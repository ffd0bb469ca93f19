package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/sirupsen/logrus"
)

// savedState is what a restarted daemon needs to carry on: the images it
// served and the mounts it made. It lives in <state-dir>/state.json.
type savedState struct {
	Images []savedImage `json:"images"`
	Mounts []savedMount `json:"mounts"`
}

type savedMount struct {
	control.Mount
	// Prefetch is the mount's background prefetch, resumed after a
	// restart (chunks already in the cache are skipped).
	Prefetch *savedPrefetch `json:"prefetch,omitempty"`
}

type savedPrefetch struct {
	Whole bool     `json:"whole,omitempty"`
	Files []string `json:"files,omitempty"`
}

type savedImage struct {
	control.RegisterRequest
	ByMount bool   `json:"by_mount"`
	Source  string `json:"source,omitempty"` // oci:// images: the manifest the bootstrap came from
}

func (d *Daemon) statePath() string { return filepath.Join(d.cfg.StateDir, "state.json") }

// saveState writes the state atomically; failures are logged, since the
// daemon can serve without it (only a restart would lose track).
func (d *Daemon) saveState() {
	d.mu.Lock()
	if d.restoring {
		// Half restored: saving now would drop the mounts not adopted
		// yet, and the next restart would lose them.
		d.mu.Unlock()
		return
	}
	st := savedState{Images: []savedImage{}, Mounts: []savedMount{}}
	for _, im := range d.reg.Images() {
		m := d.meta[metaKey(im.Spec.FSID, im.Spec.DomainID)]
		si := savedImage{RegisterRequest: control.RegisterRequest{FSID: im.Spec.FSID, DomainID: im.Spec.DomainID, Bootstrap: im.Spec.Bootstrap}}
		if m != nil {
			si.BlobDir, si.ByMount, si.Insecure, si.Source = m.blobDir, m.byMount, m.insecure, m.source
		}
		st.Images = append(st.Images, si)
	}
	for _, m := range d.mounts {
		st.Mounts = append(st.Mounts, savedMount{Mount: m.Mount, Prefetch: m.prefetch})
	}
	d.mu.Unlock()
	data, _ := json.MarshalIndent(st, "", "  ")
	if err := os.MkdirAll(d.cfg.StateDir, 0o700); err != nil {
		d.log.WithError(err).Warn("saving state")
		return
	}
	tmp := d.statePath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		d.log.WithError(err).Warn("saving state")
		return
	}
	if err := os.Rename(tmp, d.statePath()); err != nil {
		d.log.WithError(err).Warn("saving state")
	}
}

// restoreState re-registers the images and re-adopts the mounts of the
// daemon that ran before this one (a restart under a supervisor).
func (d *Daemon) restoreState(ctx context.Context) error {
	data, err := os.ReadFile(d.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
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
	for _, im := range st.Images {
		// Registered by its local bootstrap: a registry image needs no
		// registry to come back, only to fetch data.
		if _, err := d.register(ctx, im.RegisterRequest, im.ByMount); err != nil {
			d.log.WithError(err).WithField("fsid", im.FSID).Error("cannot re-register image after restart")
			continue
		}
		if im.Source != "" {
			d.mu.Lock()
			if m := d.meta[metaKey(im.FSID, im.DomainID)]; m != nil {
				m.source = im.Source
			}
			d.mu.Unlock()
		}
	}
	for _, sm := range st.Mounts {
		m := sm.Mount
		rec := &mountRec{Mount: m, prefetch: sm.Prefetch}
		if m.Frontend == "fanotify" {
			if d.fan == nil {
				d.log.WithField("mountpoint", m.Mountpoint).Error("fanotify mount left behind but no fanotify group")
				continue
			}
			if err := d.watchBlobs(rec); err != nil {
				d.log.WithError(err).WithField("mountpoint", m.Mountpoint).Error("cannot watch the blobs of a mount after restart")
				continue
			}
		}
		d.mu.Lock()
		d.mounts[m.Mountpoint] = rec
		d.mu.Unlock()
		d.log.WithFields(logrus.Fields{"mountpoint": m.Mountpoint, "fsid": m.FSID, "frontend": m.Frontend}).Info("mount adopted")
		if sm.Prefetch != nil {
			d.pf.resume(m.Mountpoint, m.FSID, m.DomainID, sm.Prefetch.Whole, sm.Prefetch.Files)
		}
	}
	return nil
}
