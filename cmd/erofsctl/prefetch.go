package main

import (
	"fmt"
	"os"

	"github.com/erofsd/erofsd/prefetchlist"
)

// maxPrefetchList bounds a prefetch list file: the request carrying it
// must stay under the control API's 1 MiB body limit.
const maxPrefetchList = 900 << 10

// readPrefetchList reads a prefetch list (prefetchlist's format: paths in
// the image, one a line, optionally with byte ranges). An empty name gives
// no list.
func readPrefetchList(name string) ([]prefetchlist.Entry, error) {
	if name == "" {
		return nil, nil
	}
	st, err := os.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("prefetch list: %w", err)
	}
	if st.Size() > maxPrefetchList {
		return nil, fmt.Errorf("prefetch list %s: %d bytes, at most %d", name, st.Size(), maxPrefetchList)
	}
	l, err := prefetchlist.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return l.Entries, nil
}
