package tests

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// runGuest boots cfg under a time limit and returns what the guest
// printed; the test fails if the guest does not run or, with mustSucceed,
// if its script exits non-zero.
func runGuest(t *testing.T, cfg vm.Config, limit time.Duration, mustSucceed bool) *vm.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	res, err := vm.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ran %s", res.Duration.Round(time.Millisecond))
	if mustSucceed && res.ExitCode != 0 {
		t.Fatalf("guest script failed (%d):\n%s", res.ExitCode, res.Output)
	}
	return res
}

// guestPrelude defines the shell helpers every guest script uses, after
// it has started erofsd on /tmp/erofsd.sock: ctl (erofsctl), counter KEY
// (a status counter by its key, as counters.Value.Key spells it), the
// counter sums reads/opens/closes of the cachefiles front end, check NAME
// CMD... (prints PASS or FAIL NAME), value NAME N and refmount NAME (loop
// mounts /data/ref-NAME.erofs on /ref/NAME).
const guestPrelude = `
for i in $(seq 100); do [ -S /tmp/erofsd.sock ] && break; sleep 0.1; done
ctl() { erofsctl --socket /tmp/erofsd.sock "$@"; }
counter() { v=$(ctl status --json | grep -F "\"$1\":" | sed -n 's/.*: \([0-9]*\).*/\1/p'); echo "${v:-0}"; }
requests() { echo $(( $(counter "kernel_requests_total{frontend=cachefiles,type=$1,result=ok}") + $(counter "kernel_requests_total{frontend=cachefiles,type=$1,result=error}") )); }
check() { name=$1; shift; if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi; }
value() { echo "VALUE $1 $2"; }
refmount() { mkdir -p /ref/$1; mount -t erofs -o ro,loop /data/ref-$1.erofs /ref/$1; }
`
