// Command vmbench measures, in the test VM (a 6.1 kernel with cachefiles
// on-demand, under TCG emulation), a cold sequential read of a 256 MiB
// file through erofsd (fscache mount, chunks fetched from a local blob
// store and verified) against the same file read from the same image
// built self-contained and loop-mounted, in the same guest. It prints
// both throughputs and their ratio (target: at least 0.5).
//
//	go run ./tests/vmbench [-size MiB] [-bin DIR]
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/erofsd/erofsd/tests/vm"
)

func main() {
	sizeMiB := flag.Int("size", 256, "file size in MiB")
	bin := flag.String("bin", "bin", "directory with static erofs-image, erofsd and erofsctl (make build)")
	flag.Parse()
	if err := run(*sizeMiB, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "vmbench:", err)
		os.Exit(1)
	}
}

const script = `
mkdir -p /data /mnt/lazy /mnt/loop
mount -t ext4 -o ro /dev/vdb /data
erofsd --cache-dir /cache/fscache --blob-dir /data/blobs --socket /tmp/erofsd.sock >/tmp/erofsd.log 2>&1 &
for i in $(seq 100); do [ -S /tmp/erofsd.sock ] && break; sleep 0.1; done
erofsctl --socket /tmp/erofsd.sock mount /data/lazy.erofs /mnt/lazy >/dev/null
mount -t erofs -o ro,loop /data/self.erofs /mnt/loop
sync; echo 3 > /proc/sys/vm/drop_caches
echo "loop $(guesttool readtime /mnt/loop/big.bin)"
sync; echo 3 > /proc/sys/vm/drop_caches
echo "erofsd $(guesttool readtime /mnt/lazy/big.bin)"
erofsctl --socket /tmp/erofsd.sock status >&2
`

func run(sizeMiB int, bin string) error {
	kernel, err := vm.Kernel()
	if err != nil {
		return fmt.Errorf("%w (run scripts/build-test-kernel.sh)", err)
	}
	work, err := os.MkdirTemp("", "erofsd-vmbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	src, data := filepath.Join(work, "src"), filepath.Join(work, "data")
	for _, d := range []string{src, filepath.Join(data, "bin"), filepath.Join(data, "blobs")} {
		os.MkdirAll(d, 0o755)
	}
	buf := make([]byte, sizeMiB<<20)
	rand.Read(buf)
	if err := os.WriteFile(filepath.Join(src, "big.bin"), buf, 0o644); err != nil {
		return err
	}
	buf = nil
	for _, args := range [][]string{
		{"build", "--blob-dir", filepath.Join(data, "blobs"), "-o", filepath.Join(data, "lazy.erofs"), src},
		{"build", "-o", filepath.Join(data, "self.erofs"), src},
	} {
		if out, err := exec.Command(filepath.Join(bin, "erofs-image"), args...).CombinedOutput(); err != nil {
			return fmt.Errorf("erofs-image %v: %v\n%s", args, err, out)
		}
	}
	guesttool := filepath.Join(work, "guesttool")
	gb := exec.Command("go", "build", "-o", guesttool, "./tests/vm/internal/guesttool")
	gb.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gb.CombinedOutput(); err != nil {
		return fmt.Errorf("building guesttool: %v\n%s", err, out)
	}
	disk := filepath.Join(work, "data.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", data, disk, fmt.Sprintf("%dM", 2*sizeMiB+64)).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	files := []vm.File{{Host: guesttool, Guest: "/bin/guesttool"}, {Host: filepath.Join(bin, "erofsd"), Guest: "/bin/erofsd"}, {Host: filepath.Join(bin, "erofsctl"), Guest: "/bin/erofsctl"}}
	res, err := vm.Run(ctx, vm.Config{Kernel: kernel, Script: script, Files: files, Disks: []string{disk}, MemoryMB: 2048, CacheDiskMB: sizeMiB + 128})
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("guest failed:\n%s", res.Output)
	}
	rates := map[string]float64{}
	for _, line := range strings.Split(res.Output, "\n") {
		var name string
		var n, ns int64
		if _, err := fmt.Sscanf(line, "%s readtime %d %d", &name, &n, &ns); err == nil && ns > 0 {
			rates[name] = float64(n) / (1 << 20) / (float64(ns) / 1e9)
		}
	}
	if os.Getenv("VMBENCH_DEBUG") != "" {
		fmt.Println(res.Output)
	}
	if rates["loop"] == 0 || rates["erofsd"] == 0 {
		return fmt.Errorf("no measurements in the guest output:\n%s", res.Output)
	}
	fmt.Printf("cold sequential read of %d MiB in the VM (TCG):\n", sizeMiB)
	fmt.Printf("  loop mount, self-contained image   %8.1f MiB/s\n", rates["loop"])
	fmt.Printf("  fscache mount served by erofsd     %8.1f MiB/s\n", rates["erofsd"])
	fmt.Printf("  ratio erofsd/loop %.2f (target >= 0.5)\n", rates["erofsd"]/rates["loop"])
	return nil
}
