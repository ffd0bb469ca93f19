package fanotify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/erofsd/erofsd/internal/counters"
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

var _ ondemand.Frontend = (*Server)(nil)

// Name is "fanotify".
func (s *Server) Name() string { return "fanotify" }

// Mount mounts im file-backed with a sparse cache file per blob, each
// watched for pre-content events, and sets the mount's readahead.
func (s *Server) Mount(ctx context.Context, im *ondemand.Image, target string) (ondemand.Mounted, error) {
	m, err := s.watchBlobs(im)
	if err != nil {
		return nil, err
	}
	spec := kmount.Spec{Source: im.Spec.Bootstrap, Devices: m.paths, Attrs: unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID}
	if err := kmount.Mount(spec, target); err != nil {
		m.Release()
		hint := ""
		if errors.Is(err, unix.ENOTBLK) || errors.Is(err, unix.EINVAL) {
			hint = " (file-backed EROFS mounts need CONFIG_EROFS_FS_BACKED_BY_FILE, Linux 6.12+)"
		}
		return nil, fmt.Errorf("%w%s", err, hint)
	}
	s.tuneReadahead(target)
	return m, nil
}

// Adopt watches the blob cache files of a mount an earlier daemon made.
func (s *Server) Adopt(ctx context.Context, im *ondemand.Image, target string) (ondemand.Mounted, error) {
	return s.watchBlobs(im)
}

// mounted is what a mount holds: its blobs' watches and sources.
type mounted struct {
	watches []*Watch
	objects []*ondemand.Object
	paths   []string // the cache files, in device order
}

// Release closes the watches and releases the objects.
func (m *mounted) Release() {
	for _, w := range m.watches {
		w.Close()
	}
	for _, o := range m.objects {
		o.Release()
	}
	m.watches, m.objects = nil, nil
}

// watchBlobs resolves im's blobs and watches their cache files, named
// after each blob's digest and chunk table (a safe file name: hex and a
// dot), and attaches them as prefetch targets.
func (s *Server) watchBlobs(im *ondemand.Image) (*mounted, error) {
	if s.res == nil || s.cacheDir == "" {
		return nil, errors.New("fanotify: mounting needs Config.Resolver and Config.CacheDir")
	}
	if err := os.MkdirAll(s.cacheDir, 0o700); err != nil {
		return nil, err
	}
	m := &mounted{}
	for _, b := range im.Blobs {
		obj, err := s.res.Resolve(im.VolumeKey(), b.Name)
		if err != nil {
			m.Release()
			return nil, err
		}
		m.objects = append(m.objects, obj)
		path := filepath.Join(s.cacheDir, b.Name)
		w, err := s.Watch(path, b.Size, b.Digest.Sum(), obj)
		if err != nil {
			m.Release()
			return nil, err
		}
		obj.Attach(w.Target()) // for prefetch; released with obj
		m.watches = append(m.watches, w)
		m.paths = append(m.paths, path)
	}
	return m, nil
}

// tuneReadahead sets a mount's readahead. Kernels without the ioctl to
// find the mount's settings (before 6.8) keep their default, said in
// the log.
func (s *Server) tuneReadahead(target string) {
	if s.mountRA <= 0 {
		return
	}
	if err := kmount.SetReadahead(target, int(s.mountRA>>10)); err != nil {
		s.log.WithError(err).WithField("mountpoint", target).Info("mount readahead left at the kernel's default")
	}
}

// KeepCache evicts files of blobs no mount uses to keep the cache under
// its limit until ctx ends (see RunEvictor), logging refused writes and
// evictions.
func (s *Server) KeepCache(ctx context.Context) {
	var refused int64
	s.RunEvictor(ctx, s.checkEvery, func(r EvictResult, err error) {
		if err != nil {
			s.log.WithError(err).Warn("evicting from the fanotify cache")
		}
		if n := s.Stats.NoSpace.Load(); n > refused {
			s.log.WithFields(logrus.Fields{"refused": n - refused, "used_bytes": r.Usage.Bytes, "limit": r.Usage.Limit, "free_bytes": r.Usage.FS.Free}).
				Warn("fanotify cache full: writes refused since the last check (their reads failed with EIO)")
			refused = n
		}
		if r.Evicted > 0 {
			s.log.WithFields(logrus.Fields{"evicted": r.Evicted, "bytes": r.Bytes, "used_bytes": r.Usage.Bytes}).Info("fanotify cache files evicted")
		}
	})
}

// Stop, for good, denies the events being filled at once (EIO) and makes
// incomplete cache files unreadable (see PoisonIncomplete): once the
// group is gone the kernel would read their holes as zeros. Serve must
// still run (truncating raises an event, answered from its loop).
func (s *Server) Stop(forGood bool) error {
	if !forGood {
		return nil
	}
	s.abortFill()
	n, err := s.PoisonIncomplete()
	if n > 0 || err != nil {
		s.log.WithError(err).WithField("files", n).Warn("incomplete fanotify cache files truncated: their mounts now fail reads with EIO")
	}
	return err
}

// Describe names the front ends' families.
func (s *Server) Describe(describe func(*counters.Desc)) {
	for _, d := range ondemand.FrontendCounters {
		describe(d)
	}
}

// Counters reports the front end's counters.
func (s *Server) Counters(emit func(counters.Value)) {
	e := counters.Emitter(emit)
	st := &s.Stats
	const fe = "fanotify"
	e.Add(ondemand.KernelRequests, st.Allowed.Load(), fe, "read", "ok")
	e.Add(ondemand.KernelRequests, st.Denied.Load(), fe, "read", "error")
	e.Add(ondemand.KernelRequests, st.Malformed.Load(), fe, "malformed", "error")
	e.Add(ondemand.CacheWritten, st.WrittenBytes.Load(), fe)
	e.Add(ondemand.RequestsInFlight, st.InFlight.Load(), fe)
	e.Add(ondemand.OpenObjects, st.Watches.Load(), fe)
	e.Add(ondemand.Readaheads, st.Readaheads.Load(), fe)
	e.Add(ondemand.HandlerPanics, st.Panicked.Load(), fe)
	e.Add(ondemand.TimedOut, st.TimedOut.Load(), fe)
	e.Add(ondemand.CacheEvicted, st.Evicted.Load(), fe)
	e.Add(ondemand.CacheEvictedBytes, st.EvictedBytes.Load(), fe)
	e.Add(ondemand.CacheNoSpace, st.NoSpace.Load(), fe)
	e.Add(ondemand.CacheVerified, st.VerifiedBytes.Load(), fe)
	e.Add(ondemand.CacheProven, st.ProvenBytes.Load(), fe)
	e.Add(ondemand.CacheNotBlob, st.NotBlob.Load(), fe)
	if u, ok := s.CacheUsage(); ok {
		e.Add(ondemand.CacheFSSize, u.FS.Size, fe)
		e.Add(ondemand.CacheFSUsed, u.FS.Used, fe)
		e.Add(ondemand.CacheFSFree, u.FS.Free, fe)
		e.Add(ondemand.CacheUsed, u.Bytes, fe)
		e.Add(ondemand.CacheObjects, int64(u.Files), fe)
		if u.Limit > 0 {
			e.Add(ondemand.CacheLimit, u.Limit, fe)
		}
	}
}
