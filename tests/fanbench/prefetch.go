package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/erofsd/erofsd/ondemand"
)

// prefetchWhole fills a fresh cache file of the image's blob by a whole
// prefetch (unlimited rate, no reader competing) and returns its MiB/s
// and then the cold read's through the now complete, unmarked file.
func prefetchWhole(reg *ondemand.Registry, im *ondemand.Image, img, cacheFile, mnt string) (prefetch, read float64, err error) {
	_, w, obj, stop, err := serveBlob(reg, im, cacheFile)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	obj.Attach(w.Target())
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer pcancel()
	start := time.Now()
	res, err := reg.Prefetch(pctx, im, ondemand.PrefetchOptions{Whole: true})
	if err != nil {
		return 0, 0, err
	}
	prefetch = float64(res.Done) / (1 << 20) / time.Since(start).Seconds()
	if !w.Complete() {
		return 0, 0, fmt.Errorf("%s not complete after the prefetch", cacheFile)
	}
	read, _, _, err = coldRead(img, cacheFile, mnt)
	return prefetch, read, err
}

func printPrefetch(reg *ondemand.Registry, im *ondemand.Image, img, work string) error {
	pf, rd, err := prefetchWhole(reg, im, img, filepath.Join(work, "cache", "blob-prefetch"), filepath.Join(work, "mnt-prefetch"))
	if err != nil {
		return err
	}
	fmt.Printf("  whole prefetch, no reader, unlimited    %8.1f MiB/s fetched and verified\n", pf)
	fmt.Printf("  cold read after the prefetch            %8.1f MiB/s\n", rd)
	return nil
}
