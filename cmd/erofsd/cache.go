package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/erofsd/erofsd/internal/units"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/sirupsen/logrus"
)

// cacheFlags are the cache space settings.
type cacheFlags struct {
	lim      cachefiles.Limits
	interval time.Duration
	fanLimit units.Bytes
}

func addCacheFlags(fs *flag.FlagSet) *cacheFlags {
	c := &cacheFlags{lim: cachefiles.DefaultLimits, interval: 30 * time.Second}
	for _, f := range []struct {
		name string
		v    *int
		help string
	}{
		{"cachefiles-brun", &c.lim.BRun, "cachefiles: culling stops when this `percent` of the cache filesystem's blocks is free"},
		{"cachefiles-bcull", &c.lim.BCull, "cachefiles: culling starts below this `percent` of free blocks"},
		{"cachefiles-bstop", &c.lim.BStop, "cachefiles: below this `percent` of free blocks the cache stops growing (reads of data not cached fail with EIO)"},
		{"cachefiles-frun", &c.lim.FRun, "cachefiles: as brun, for free files (inodes)"},
		{"cachefiles-fcull", &c.lim.FCull, "cachefiles: as bcull, for free files (inodes)"},
		{"cachefiles-fstop", &c.lim.FStop, "cachefiles: as bstop, for free files (inodes)"},
	} {
		fs.IntVar(f.v, f.name, *f.v, f.help)
	}
	fs.DurationVar(&c.interval, "cache-check-interval", c.interval, "how often the cache's space is checked, culled (cachefiles) and evicted (fanotify)")
	fs.Var(&c.fanLimit, "fanotify-cache-limit", "fanotify: cap on the cache files' `size` (bytes, or with K, M, G, T); files of blobs no mount uses are evicted to stay under it, and reads that would pass it fail with EIO (0: no cap)")
	return c
}

func (c *cacheFlags) validate() error {
	if err := c.lim.Validate(); err != nil {
		return fmt.Errorf("cachefiles_brun, _bcull, _bstop, _frun, _fcull, _fstop (flags --cachefiles-brun ...): %w", err)
	}
	if c.interval < time.Second {
		return fmt.Errorf("cache_check_interval (--cache-check-interval) %v: want at least 1s", c.interval)
	}
	return nil
}

// maintainCache keeps the caches within their limits until ctx ends,
// logging what each pass did when it did something.
func (d *daemon) maintainCache(ctx context.Context, interval time.Duration) {
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
func (d *daemon) cacheCounters(c map[string]int64) {
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
