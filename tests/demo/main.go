// Command demo is the README's demo: it builds an EROFS image of a tree
// with its file data in content-addressed blobs, has erofsd serve it
// lazily to the kernel, shows that mounting and listing fetch almost
// nothing, then reads every file back and checks it against the source.
//
// On this machine's own kernel erofsd picks its front end itself (auto):
// cachefiles on-demand where the kernel has it, else fanotify pre-content
// events (Linux 6.14+). Where neither works, or with -vm, the serving part
// runs in a VM whose kernel is built from Debian's linux-source-6.1 with
// cachefiles on-demand (once, about 4 minutes on 2 cores, then cached).
//
//	go run ./tests/demo [-src DIR] [-bin DIR] [-vm]
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
	"syscall"
	"time"

	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/erofsd/erofsd/tests/vm"
)

func main() {
	src := flag.String("src", "/usr/share/doc", "tree to serve (default: /usr/share/doc)")
	bin := flag.String("bin", "bin", "directory with static erofs-image, erofsd and erofsctl (make build)")
	inVM := flag.Bool("vm", false, "serve through cachefiles in a VM even if this kernel can serve")
	flag.Parse()
	if err := run(*src, *bin, *inVM); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func run(src, bin string, inVM bool) error {
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

	if !inVM && os.Geteuid() == 0 {
		if err := fanotify.Supported(work); err == nil || hasCachefiles() {
			return runOnHost(data, src, bin, work)
		}
	}
	step("kernel with cachefiles on-demand mode (this one has neither it nor fanotify pre-content events)")
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

func hasCachefiles() bool {
	_, err := os.Stat("/dev/cachefiles")
	return err == nil
}

// runOnHost serves the image with this machine's kernel.
func runOnHost(data, src, bin, work string) error {
	step("start erofsd (under erofsd supervise, which keeps its kernel fds) on this machine's kernel, front end auto")
	sock := filepath.Join(work, "erofsd.sock")
	daemon := exec.Command(filepath.Join(bin, "erofsd"), "supervise", "--socket", sock, "--cache-dir", filepath.Join(work, "cache"),
		"--state-dir", filepath.Join(work, "state"), "--blob-dir", filepath.Join(data, "blobs"), "--log-level", "warn")
	daemon.Stderr = os.Stderr
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() {
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
	}()
	ctl := func(show bool, args ...string) (string, error) {
		if show {
			fmt.Printf("$ erofsctl %s\n", strings.Join(args, " "))
		}
		out, err := exec.Command(filepath.Join(bin, "erofsctl"), append([]string{"--socket", sock}, args...)...).CombinedOutput()
		if show {
			fmt.Print(string(out))
		}
		if err != nil {
			return "", fmt.Errorf("erofsctl %v: %v\n%s", args, err, out)
		}
		return string(out), nil
	}
	for i := 0; ; i++ {
		if _, err := ctl(false, "status"); err == nil {
			break
		} else if i == 100 {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	fetched := func() string {
		out, _ := ctl(false, "status", "--json")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `"chunk_fetched_bytes"`) {
				return strings.Trim(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), ",")
			}
		}
		return "?"
	}
	total := dirSize(filepath.Join(data, "blobs"))
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	if _, err := ctl(true, "mount", filepath.Join(data, "image.erofs"), mnt); err != nil {
		return err
	}
	defer ctl(false, "umount", mnt)
	entries := 0
	filepath.WalkDir(mnt, func(string, fs.DirEntry, error) error { entries++; return nil })
	fmt.Printf("listed %d entries; blob data fetched: %s of about %d bytes\n", entries, fetched(), total)
	var one string
	filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if one == "" && err == nil && d.Name() == "copyright" {
			one = p
		}
		return nil
	})
	if one != "" {
		head, _ := os.ReadFile(one)
		fmt.Printf("$ head -c 160 %s\n%s\n", one, head[:min(160, len(head))])
		fmt.Printf("blob data fetched after reading one file: %s bytes\n", fetched())
	}
	step("read every file back and check it against the source's sha256")
	n, err := verifySums(filepath.Join(data, "SHA256SUMS"), mnt)
	if err != nil {
		return err
	}
	fmt.Printf("all %d files match the source; blob data fetched: %s bytes (each chunk once)\n", n, fetched())
	ctl(true, "status")
	fmt.Println("\nOK: served lazily by erofsd through this machine's kernel and read back identical")
	return nil
}

// verifySums checks every "digest  path" line of sums against root.
func verifySums(sums, root string) (int, error) {
	f, err := os.Open(sums)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		want, rel, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			continue
		}
		h := sha256.New()
		r, err := os.Open(filepath.Join(root, rel))
		if err != nil {
			return n, err
		}
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return n, fmt.Errorf("%s: %w", rel, err)
		}
		if hex.EncodeToString(h.Sum(nil)) != want {
			return n, fmt.Errorf("%s: content differs from the source", rel)
		}
		n++
	}
	return n, sc.Err()
}
