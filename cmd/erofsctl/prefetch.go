package main

import (
	"fmt"
	"os"
	"strings"
)

// maxPrefetchList bounds a prefetch list file: the request carrying it
// must stay under the control API's 1 MiB body limit.
const maxPrefetchList = 900 << 10

// readPrefetchList reads paths in an image, one a line; blank lines and
// lines starting with # are skipped. An empty name gives no list.
func readPrefetchList(name string) ([]string, error) {
	if name == "" {
		return nil, nil
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("prefetch list: %w", err)
	}
	if len(data) > maxPrefetchList {
		return nil, fmt.Errorf("prefetch list %s: %d bytes, at most %d", name, len(data), maxPrefetchList)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}
