package cachefiles

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/erofsd/erofsd/internal/counters"
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

var _ ondemand.Frontend = (*Server)(nil)

// Name is "cachefiles".
func (s *Server) Name() string { return "cachefiles" }

// Mount mounts im in fscache mode: the kernel asks for the image and its
// blobs through /dev/cachefiles. The blobs' cache objects are named by
// device= options after their digest and chunk table
// (ondemand.BlobInfo.Name), not by the bare device tags: an image that
// claims another image's blob digest with other chunks gets objects of
// its own. On kernels that read sparse holes wrongly in fscache mode
// (before 6.2), an image with a hole before data is refused; on kernels
// that cannot read compressed inodes in fscache mode (before 6.9), an
// image with any is refused, saying so, rather than mounted to fail
// lookups with EOPNOTSUPP.
func (s *Server) Mount(ctx context.Context, im *ondemand.Image, target string) (ondemand.Mounted, error) {
	if s.holeBug || s.noZip {
		rep, err := im.FscacheLinux61(ctx)
		if err != nil {
			return nil, err
		}
		if s.holeBug && rep.HoleFiles > 0 || s.noZip && rep.CompressedInodes > 0 {
			return nil, fmt.Errorf("%w: image %s cannot be served in fscache mode by this kernel (%s): %s",
				ondemand.ErrBadImage, im.Spec.FSID, s.kernel, strings.Join(rep.Problems, "; "))
		}
	}
	// A bootstrap object left in the cache under this fsid by an image
	// of the same name but other content would be read by the kernel
	// without asking erofsd.
	if err := s.ForgetStale(im.VolumeKey(), im.Spec.FSID, im.Spec.Bootstrap); err != nil {
		return nil, fmt.Errorf("cached bootstrap of fsid %s: %w", im.Spec.FSID, err)
	}
	spec := kmount.Spec{FSID: im.Spec.FSID, DomainID: im.Spec.DomainID, Attrs: unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID}
	for _, b := range im.Blobs {
		spec.Devices = append(spec.Devices, b.Name)
	}
	if err := kmount.Mount(spec, target); err != nil {
		return nil, fmt.Errorf("%w%s", err, mountHint(err))
	}
	return ondemand.MountedFunc(func() {}), nil
}

// Adopt takes over an fscache mount of im: the kernel opens its objects
// again when it next reads them, so nothing is held for it.
func (s *Server) Adopt(ctx context.Context, im *ondemand.Image, target string) (ondemand.Mounted, error) {
	return ondemand.MountedFunc(func() {}), nil
}

// mountHint explains the usual mount failures of fscache mode.
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

// KeepCache culls the cache to its limits until ctx ends (see
// RunCuller), logging refused writes and what each pass culled.
func (s *Server) KeepCache(ctx context.Context) {
	var refused int64
	s.RunCuller(ctx, func(r CullResult, err error) {
		if err != nil {
			s.log.WithError(err).Warn("culling the cachefiles cache")
		}
		if n := s.Stats.NoSpace.Load(); n > refused {
			s.log.WithFields(logrus.Fields{"refused": n - refused, "free_bytes": r.Usage.FS.Free, "busy": r.Busy}).
				Warn("cachefiles cache full: writes refused since the last check (their reads failed with EIO)")
			refused = n
		}
		if r.Culled > 0 || r.Graveyard > 0 {
			s.log.WithFields(logrus.Fields{"culled": r.Culled, "bytes": r.Bytes, "busy": r.Busy, "graveyard": r.Graveyard,
				"free_bytes": r.Usage.FS.Free}).Info("cachefiles cache culled")
		}
	})
}

// Stop, for good, fails the READs being filled at once (EIO): nobody
// would answer them. On a handover they are left to finish or, left
// unanswered, re-delivered to the next daemon after "restore".
func (s *Server) Stop(forGood bool) error {
	if forGood {
		s.abortFill()
	}
	return nil
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
	const fe = "cachefiles"
	opens, openErrs := st.Opens.Load(), st.OpenErrors.Load()
	reads, readErrs := st.Reads.Load(), st.ReadErrors.Load()
	e.Add(ondemand.KernelRequests, opens-openErrs, fe, "open", "ok")
	e.Add(ondemand.KernelRequests, openErrs, fe, "open", "error")
	e.Add(ondemand.KernelRequests, reads-readErrs, fe, "read", "ok")
	e.Add(ondemand.KernelRequests, readErrs, fe, "read", "error")
	e.Add(ondemand.KernelRequests, st.Closes.Load(), fe, "close", "ok")
	e.Add(ondemand.KernelRequests, st.Malformed.Load(), fe, "malformed", "error")
	e.Add(ondemand.CacheWritten, st.ReadBytes.Load(), fe)
	e.Add(ondemand.RequestsInFlight, st.InFlight.Load(), fe)
	e.Add(ondemand.OpenObjects, st.OpenObjects.Load(), fe)
	e.Add(ondemand.Readaheads, st.Readaheads.Load(), fe)
	e.Add(ondemand.HandlerPanics, st.Panicked.Load(), fe)
	e.Add(ondemand.TimedOut, st.TimedOut.Load(), fe)
	e.Add(ondemand.CacheEvicted, st.Culled.Load(), fe)
	e.Add(ondemand.CacheEvictedBytes, st.CulledBytes.Load(), fe)
	e.Add(ondemand.CacheNoSpace, st.NoSpace.Load(), fe)
	e.Add(ondemand.CacheGraveyard, st.GraveyardRemoved.Load())
	if u, ok := s.CacheUsage(); ok {
		e.Add(ondemand.CacheFSSize, u.FS.Size, fe)
		e.Add(ondemand.CacheFSUsed, u.FS.Used, fe)
		e.Add(ondemand.CacheFSFree, u.FS.Free, fe)
		e.Add(ondemand.CacheUsed, u.ObjectBytes, fe)
		e.Add(ondemand.CacheObjects, int64(u.Objects), fe)
	}
}
