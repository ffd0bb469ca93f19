package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/erofsd/erofsd/ondemand"
)

// prefetchWhole fills a fresh cache file of the image's blob by a whole
// prefetch (unlimited rate, no reader competing) and returns its MiB/s,
// the seconds until the complete file was unmarked in the background
// after it, and then the cold read's MiB/s through the
// unmarked file.
func prefetchWhole(reg *ondemand.Registry, im *ondemand.Image, img, cacheFile, mnt string) (prefetch, checked, read float64, err error) {
	srv, w, obj, stop, err := serveBlob(reg, im, cacheFile)
	if err != nil {
		return 0, 0, 0, err
	}
	defer stop()
	obj.Attach(w.Target())
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer pcancel()
	start := time.Now()
	res, err := reg.Prefetch(pctx, im, ondemand.PrefetchOptions{Whole: true})
	if err != nil {
		return 0, 0, 0, err
	}
	done := time.Now()
	prefetch = float64(res.Done) / (1 << 20) / done.Sub(start).Seconds()
	if !w.Complete() {
		return 0, 0, 0, fmt.Errorf("%s not complete after the prefetch", cacheFile)
	}
	for srv.Stats.VerifiedBytes.Load()+srv.Stats.ProvenBytes.Load()+srv.Stats.NotBlob.Load() == 0 {
		if time.Since(done) > time.Minute {
			return 0, 0, 0, fmt.Errorf("%s: not unmarked a minute after the prefetch", cacheFile)
		}
		time.Sleep(time.Millisecond)
	}
	checked = time.Since(done).Seconds()
	read, _, _, err = coldRead(img, cacheFile, mnt)
	return prefetch, checked, read, err
}

func printPrefetch(reg *ondemand.Registry, im *ondemand.Image, img, work string) error {
	pf, checked, rd, err := prefetchWhole(reg, im, img, filepath.Join(work, "cache", "blob-prefetch"), filepath.Join(work, "mnt-prefetch"))
	if err != nil {
		return err
	}
	fmt.Printf("  whole prefetch, no reader, unlimited    %8.1f MiB/s fetched and verified (then made durable and unmarked in the background in %.2f s)\n", pf, checked)
	fmt.Printf("  cold read after the prefetch            %8.1f MiB/s\n", rd)
	return nil
}
