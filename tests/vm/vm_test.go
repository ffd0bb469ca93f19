package vm_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/tests/vm"
)

// TestCachefilesOndemand proves the test bed with the real protocol: the
// guest's probe serves an EROFS image (mkfs.erofs, passed as /dev/vdb)
// through /dev/cachefiles to an fscache-mode mount, and a file read from
// that mount must hash like the host's original.
func TestCachefilesOndemand(t *testing.T) {
	kernel := vm.Require(t)
	require.Host(t, require.Tool("mkfs.erofs", "erofs-utils"))
	mkfs, _ := exec.LookPath("mkfs.erofs")

	src := t.TempDir()
	random := make([]byte, 1<<20+12345) // not a whole number of blocks
	rand.Read(random)
	files := map[string][]byte{
		"hello.txt":       []byte("hello from the host\n"),
		"data/random.bin": random,
		"data/empty":      nil,
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(t.TempDir(), "probe.erofs")
	if out, err := exec.Command(mkfs, "-T0", img, src).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	probe, err := vm.BuildStatic(t, "github.com/erofsd/erofsd/tests/vm/internal/cachefilesprobe")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx, vm.Config{
		Kernel: kernel,
		Files:  []vm.File{{Host: probe, Guest: "/bin/cachefilesprobe"}},
		Disks:  []string{img},
		Script: "cachefilesprobe -image /dev/vdb -read data/random.bin\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("guest script exited with %d:\n%s", res.ExitCode, res.Console)
	}
	want := fmt.Sprintf("sha256 %x data/random.bin\n", sha256.Sum256(random))
	if !strings.Contains(res.Output, want) {
		t.Fatalf("guest output lacks %q:\n%s", want, res.Output)
	}
	var opens, reads, closes, written int
	for _, line := range strings.Split(res.Output, "\n") {
		if _, err := fmt.Sscanf(line, "requests open=%d read=%d close=%d bytes=%d", &opens, &reads, &closes, &written); err == nil {
			break
		}
	}
	if opens != 1 || reads == 0 || closes != 1 || written < len(random) {
		t.Errorf("requests served: open=%d read=%d close=%d bytes=%d; want one OPEN and CLOSE, READs of at least %d bytes",
			opens, reads, closes, written, len(random))
	}
	t.Logf("guest run %v: open=%d read=%d close=%d bytes=%d", res.Duration.Round(time.Millisecond), opens, reads, closes, written)
}

// TestScriptStatus checks how a script runs: files land at their guest
// paths, /cache is the ext4 disk, sh -e stops at the first failing command
// and its status comes back.
func TestScriptStatus(t *testing.T) {
	kernel := vm.Require(t)
	payload := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(payload, []byte("payload-ok\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := vm.Run(ctx, vm.Config{
		Kernel: kernel,
		Files:  []vm.File{{Host: payload, Guest: "/data/sub/payload"}},
		Script: `
test "$(cat /data/sub/payload)" = payload-ok
test "$(stat -c %a /data/sub/payload)" = 640
grep -q '^/dev/vda /cache ext4 ' /proc/mounts
test -c /dev/cachefiles
echo guest-ok
(exit 3)
echo not-reached
`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || !strings.Contains(res.Output, "guest-ok\n") || strings.Contains(res.Output, "not-reached") {
		t.Fatalf("exit status %d, output:\n%s\nconsole:\n%s", res.ExitCode, res.Output, res.Console)
	}
	t.Logf("guest run %v", res.Duration.Round(time.Millisecond))
}
