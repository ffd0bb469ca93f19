// Command demo is the README's demo: it builds an EROFS image of a tree
// with its file data in content-addressed blobs, has erofsd serve it
// lazily to the kernel through the cachefiles on-demand protocol, shows
// that mounting and listing fetch almost nothing, then reads every file
// back and checks it against the source.
//
// The host kernel usually lacks cachefiles on-demand mode, so the serving
// part runs in a VM with a kernel built from Debian's linux-source-6.1
// (built once, about 4 minutes on 2 cores, then cached).
//
//	go run ./tests/demo [-src DIR] [-bin DIR]
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/erofsd/erofsd/tests/vm"
)

func main() {
	src := flag.String("src", "/usr/share/doc", "tree to serve (default: /usr/share/doc)")
	bin := flag.String("bin", "bin", "directory with static erofs-image, erofsd and erofsctl (make build)")
	flag.Parse()
	if err := run(*src, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func run(src, bin string) error {
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		return fmt.Errorf("source %s is not a directory", src)
	}
	work, err := os.MkdirTemp("", "erofsd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	data := filepath.Join(work, "data")
	os.MkdirAll(filepath.Join(data, "bin"), 0o755)

	step("build: %s -> image.erofs (metadata) + blobs/ (file data, by sha256)", src)
	cmd := exec.Command(filepath.Join(bin, "erofs-image"), "build", "--blob-dir", filepath.Join(data, "blobs"), "-o", filepath.Join(data, "image.erofs"), src)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("erofs-image build: %w", err)
	}
	if err := writeSums(src, filepath.Join(data, "SHA256SUMS")); err != nil {
		return err
	}
	for _, b := range []string{"erofsd", "erofsctl"} {
		if err := copyFile(filepath.Join(bin, b), filepath.Join(data, "bin", b)); err != nil {
			return fmt.Errorf("%w (run make build first)", err)
		}
	}

	step("kernel with cachefiles on-demand mode (the host's has none)")
	kernel, err := vm.Kernel()
	if err != nil {
		fmt.Println("no test kernel cached yet: building it from linux-source-6.1 (once, about 4 minutes)")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		if kernel, err = vm.BuildKernel(ctx, os.Stderr); err != nil {
			return err
		}
	}
	fmt.Println(kernel)

	disk := filepath.Join(work, "data.img")
	size := dirSize(data)/(1<<20)*5/4 + 64
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", data, disk, fmt.Sprintf("%dM", size)).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v\n%s", err, out)
	}

	step("boot a VM, start erofsd, mount the image in fscache mode and read it lazily")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	res, err := vm.Run(ctx, vm.Config{Kernel: kernel, Script: guestScript, Disks: []string{disk}, MemoryMB: 1024, CacheDiskMB: int(size)*2 + 64})
	if err != nil {
		return err
	}
	fmt.Print(res.Output)
	if res.ExitCode != 0 {
		return fmt.Errorf("the guest reported a failure (exit %d)", res.ExitCode)
	}
	fmt.Printf("\nOK: served lazily by erofsd through the kernel and read back identical (VM run %s)\n", res.Duration.Round(time.Second))
	return nil
}

const guestScript = `
mkdir -p /data /mnt/image
mount -t ext4 -o ro /dev/vdb /data
export PATH=/data/bin:$PATH
erofsd --cache-dir /cache/fscache --blob-dir /data/blobs --socket /tmp/erofsd.sock >/tmp/erofsd.log 2>&1 &
for i in $(seq 100); do [ -S /tmp/erofsd.sock ] && break; sleep 0.1; done
ctl() { erofsctl --socket /tmp/erofsd.sock "$@"; }
fetched() { ctl status --json | sed -n 's/.*"chunk_fetched_bytes": \([0-9]*\).*/\1/p'; }
total=$(cat /data/blobs/* | wc -c)

echo "$ erofsctl mount /data/image.erofs /mnt/image"
ctl mount /data/image.erofs /mnt/image
echo "$ ls /mnt/image | head"
ls /mnt/image | head -n 8
echo "$ find /mnt/image | wc -l"
find /mnt/image | wc -l
echo "blob data fetched after mount and a full listing: $(fetched) of $total bytes"
f=$(find /mnt/image -type f -name copyright | head -n 1)
echo "$ head -c 200 $f"
head -c 200 "$f"; echo
echo "blob data fetched after reading one file: $(fetched) of $total bytes"

echo "$ sha256sum -c: every file against the source's digests"
cd /mnt/image && sha256sum -c -s /data/SHA256SUMS && echo "all $(wc -l < /data/SHA256SUMS) files match the source"
cd /
echo "blob data fetched after reading everything: $(fetched) of $total bytes (chunks stored once)"
echo "$ erofsctl status"
ctl status
ctl umount /mnt/image
`

// writeSums writes a sha256sum -c file for every regular file below root.
func writeSums(root, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.ContainsAny(rel, "\n\\") {
			return nil // sha256sum -c cannot name these
		}
		h := sha256.New()
		r, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), rel)
		return nil
	})
	if err != nil {
		return err
	}
	return w.Flush()
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o755)
}

func dirSize(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size() + 4096
			}
		}
		return nil
	})
	return n
}
