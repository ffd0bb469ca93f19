package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSizeVsMkfs compares compressed image sizes and build times with
// mkfs.erofs on the tree named by $EROFS_SIZE_TREE (for example
// /usr/local/go/src); it is a measurement, not a check, and skips
// without the variable. Times are wall clock and CPU (user+system): on a
// shared machine only the latter is steady.
//
//	EROFS_SIZE_TREE=/usr/local/go/src go test ./erofs/build -run SizeVsMkfs -v
func TestSizeVsMkfs(t *testing.T) {
	tree := os.Getenv("EROFS_SIZE_TREE")
	if tree == "" {
		t.Skip("set EROFS_SIZE_TREE to a directory to compare with mkfs.erofs")
	}
	mkfs, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		t.Skip("mkfs.erofs not installed")
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		spec     string
		pcluster int
	}{{"lz4", 0}, {"lz4hc", 0}, {"lz4hc", 64 << 10}} {
		ours := filepath.Join(dir, "ours.img")
		start, cpu := time.Now(), cpuTime()
		f, err := os.Create(ours)
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(f, Options{Compression: tc.spec, PclusterSize: tc.pcluster})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddDir(context.Background(), tree); err != nil {
			t.Fatal(err)
		}
		res, err := b.Finish(context.Background())
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		oursWall, oursCPU := time.Since(start), cpuTime()-cpu
		args := []string{"-z" + tc.spec}
		if tc.pcluster != 0 {
			args = append(args, fmt.Sprintf("-C%d", tc.pcluster))
		}
		for _, extra := range [][]string{nil, {"-Eztailpacking"}} {
			img := filepath.Join(dir, "mkfs.img")
			cmd := exec.Command(mkfs, append(append(append([]string(nil), args...), extra...), img, tree)...)
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mkfs.erofs: %v\n%s", err, out)
			}
			wall := time.Since(start)
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			st, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-6s C%-7d ours %11d B (%6.2f%%) %6.2fs wall %6.2fs cpu | mkfs.erofs %v %11d B %6.2fs wall %6.2fs cpu",
				tc.spec, max(tc.pcluster, blockSize), res.ImageSize, 100*(float64(res.ImageSize)/float64(st.Size())-1),
				oursWall.Seconds(), oursCPU.Seconds(), extra, st.Size(), wall.Seconds(),
				(time.Duration(ru.Utime.Nano()) + time.Duration(ru.Stime.Nano())).Seconds())
		}
	}
}

// cpuTime is the process's user plus system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()) + time.Duration(ru.Stime.Nano())
}
