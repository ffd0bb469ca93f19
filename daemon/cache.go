package daemon

import (
	"context"
	"time"

	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/sirupsen/logrus"
)

// maintainCache keeps the caches within their limits until ctx ends,
// logging what each pass did when it did something.
func (d *Daemon) maintainCache(ctx context.Context, interval time.Duration) {
	if d.srv != nil {
		var refused int64
		go d.srv.RunCuller(ctx, func(r cachefiles.CullResult, err error) {
			if err != nil {
				d.log.WithError(err).Warn("culling the cachefiles cache")
			}
			if n := d.srv.Stats.NoSpace.Load(); n > refused {
				d.log.WithFields(logrus.Fields{"refused": n - refused, "free_bytes": r.Usage.FS.Free, "busy": r.Busy}).
					Warn("cachefiles cache full: writes refused since the last check (their reads failed with EIO)")
				refused = n
			}
			if r.Culled > 0 || r.Graveyard > 0 {
				d.log.WithFields(logrus.Fields{"culled": r.Culled, "bytes": r.Bytes, "busy": r.Busy, "graveyard": r.Graveyard,
					"free_bytes": r.Usage.FS.Free}).Info("cachefiles cache culled")
			}
		})
	}
	if d.fan != nil {
		var refused int64
		go d.fan.RunEvictor(ctx, interval, func(r fanotify.EvictResult, err error) {
			if err != nil {
				d.log.WithError(err).Warn("evicting from the fanotify cache")
			}
			if n := d.fan.Stats.NoSpace.Load(); n > refused {
				d.log.WithFields(logrus.Fields{"refused": n - refused, "used_bytes": r.Usage.Bytes, "limit": r.Usage.Limit, "free_bytes": r.Usage.FS.Free}).
					Warn("fanotify cache full: writes refused since the last check (their reads failed with EIO)")
				refused = n
			}
			if r.Evicted > 0 {
				d.log.WithFields(logrus.Fields{"evicted": r.Evicted, "bytes": r.Bytes, "used_bytes": r.Usage.Bytes}).Info("fanotify cache files evicted")
			}
		})
	}
}

// cacheCounters adds the cache space counters to a status.
func (d *Daemon) cacheCounters(c map[string]int64) {
	if d.srv != nil {
		s := &d.srv.Stats
		c["cache_no_space"] = s.NoSpace.Load()
		c["cache_culled"] = s.Culled.Load()
		c["cache_culled_bytes"] = s.CulledBytes.Load()
		c["cache_graveyard_removed"] = s.GraveyardRemoved.Load()
		if u, ok := d.srv.CacheUsage(); ok {
			c["cache_fs_free_bytes"] = u.FS.Free
			c["cache_fs_used_bytes"] = u.FS.Used
			c["cache_objects_bytes"] = u.ObjectBytes
		}
	}
	if d.fan != nil {
		s := &d.fan.Stats
		c["fanotify_cache_no_space"] = s.NoSpace.Load()
		c["fanotify_cache_evicted"] = s.Evicted.Load()
		c["fanotify_cache_evicted_bytes"] = s.EvictedBytes.Load()
		if u, ok := d.fan.CacheUsage(); ok {
			c["fanotify_cache_bytes"] = u.Bytes
			c["fanotify_cache_fs_free_bytes"] = u.FS.Free
		}
	}
}
