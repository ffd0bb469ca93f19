package tests

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/tests/vm"
)

// guestBinaries builds erofsd, erofsctl and guesttool, static, for the
// guest's /bin.
func guestBinaries(t *testing.T) []vm.File {
	t.Helper()
	var files []vm.File
	for _, pkg := range []string{"cmd/erofsd", "cmd/erofsctl", "tests/vm/internal/guesttool"} {
		bin, err := vm.BuildStatic(t, "github.com/erofsd/erofsd/"+pkg)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, vm.File{Host: bin, Guest: "/bin/" + filepath.Base(pkg)})
	}
	return files
}

// guestResults reads what a guest script's check and value helpers
// printed: "PASS name" lines and "VALUE name number" lines.
func guestResults(out string) (passed map[string]bool, values map[string]int) {
	passed, values = map[string]bool{}, map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "PASS":
			passed[f[1]] = true
		case len(f) == 3 && f[0] == "VALUE":
			values[f[1]], _ = strconv.Atoi(f[2])
		}
	}
	return passed, values
}
