package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/erofsd/erofsd/internal/units"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
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
