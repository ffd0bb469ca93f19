// Package vm runs test scripts as root in a throwaway qemu guest that boots
// a kernel built for the purpose, for tests that need kernel features the
// host lacks: above all cachefiles on-demand mode (/dev/cachefiles), which
// EROFS fscache mounts need and Debian's stock kernels do not have.
//
// The kernel is built once from Debian's linux-source-6.1 by
// scripts/build-test-kernel.sh with the options in kernel.config, and
// cached (see [Kernel]). A test asks for it with [Require], which skips
// when it cannot run, then boots a guest with [Run]:
//
//	kernel := vm.Require(t)
//	probe, err := vm.BuildStatic(t, "github.com/erofsd/erofsd/tests/vm/internal/cachefilesprobe")
//	...
//	res, err := vm.Run(ctx, vm.Config{
//		Kernel: kernel,
//		Files:  []vm.File{{Host: probe, Guest: "/bin/cachefilesprobe"}},
//		Disks:  []string{image}, // /dev/vdb in the guest
//		Script: "cachefilesprobe -image /dev/vdb -read data/random.bin",
//	})
//	// res.ExitCode is the script's status, res.Output what it printed.
//
// The guest runs under TCG (the hosts' /dev/kvm cannot run a normal guest),
// has no network device, and boots from a gzip'd initramfs holding
// busybox-static, the files of the [Config] and an /init that mounts
// /proc, /sys, /dev (devtmpfs), /tmp (tmpfs) and a fresh ext4 disk on
// /cache (/dev/vda; cachefiles needs a filesystem with user xattrs), runs
// the script with sh -e and reboots, which ends qemu (-no-reboot; there is
// no ACPI for a power-off). Booting, running a small script and
// shutting down take about 3 s.
package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config describes one guest run.
type Config struct {
	// Kernel is the bzImage to boot; empty means [Kernel]'s.
	Kernel string
	// Script is the shell script to run as root in the guest, with
	// sh -e in /, stdin from /dev/null and busybox's applets on PATH.
	// Its output is [Result.Output], its exit status [Result.ExitCode].
	Script string
	// Files are copied into the initramfs, which lives in guest memory:
	// pass large images as Disks instead.
	Files []File
	// Disks are raw images attached read-only as /dev/vdb, /dev/vdc, ...
	// in order. The guest sees their size rounded down to 512 bytes.
	Disks []string
	// MemoryMB is the guest's memory; default 1024.
	MemoryMB int
	// CacheDiskMB is the size of the empty ext4 disk mounted on /cache;
	// default 256.
	CacheDiskMB int
	// Console, if set, receives the serial console output as it comes,
	// e.g. os.Stderr when debugging a guest that hangs.
	Console io.Writer
}

// File is a host file to copy into the guest. Its permission bits are kept.
type File struct {
	Host  string // path on the host
	Guest string // absolute path in the guest; parents are created
}

// Result is what a guest run produced.
type Result struct {
	Console  string        // the whole serial console, kernel messages included ("\r" dropped)
	Output   string        // what the script printed
	ExitCode int           // the script's exit status
	Duration time.Duration // qemu's run time: boot, script and shutdown
}

// Lines /init prints around the script; Run finds the exit status with them.
const (
	markStart = "erofsd-vm: script start"
	markExit  = "erofsd-vm: script exit status "
)

// defaultTimeout bounds a run whose context has no deadline.
const defaultTimeout = 5 * time.Minute

// initScript is the guest's /init. Its output goes to the serial console.
const initScript = `#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ifconfig lo 127.0.0.1 up
rc=125
if mount -t ext4 /dev/vda /cache; then
	echo '` + markStart + `'
	cd / && sh -e /vm/script </dev/null
	rc=$?
else
	echo 'erofsd-vm: cannot mount the cache disk /dev/vda on /cache'
fi
echo "` + markExit + `$rc"
umount /cache
reboot -f
`

// Run boots a guest, runs cfg.Script in it and returns when the guest has
// powered off. It returns an error, with a partial Result when there is
// one, if the guest cannot be started, if ctx ends first (qemu is killed;
// without a deadline the run is limited to 5 minutes) or if the guest
// stops without reporting the script's exit status (a kernel panic, for
// instance). A script that fails is not an error: see [Result.ExitCode].
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Kernel == "" {
		k, err := Kernel()
		if err != nil {
			return nil, err
		}
		cfg.Kernel = k
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 1024
	}
	if cfg.CacheDiskMB == 0 {
		cfg.CacheDiskMB = 256
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}

	dir, err := os.MkdirTemp("", "erofsd-vm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initrd.gz")
	if err := writeInitramfs(initrd, cfg); err != nil {
		return nil, fmt.Errorf("vm: initramfs: %w", err)
	}
	cache := filepath.Join(dir, "cache.img")
	if err := makeCacheDisk(ctx, cache, cfg.CacheDiskMB); err != nil {
		return nil, fmt.Errorf("vm: cache disk: %w", err)
	}

	args := []string{
		"-accel", "tcg,thread=multi", "-cpu", "max", "-m", strconv.Itoa(cfg.MemoryMB), "-smp", "2",
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", cfg.Kernel, "-initrd", initrd,
		// no_timer_check: under a loaded host, TCG can be too slow for
		// the IO-APIC timer check, which then panics the boot.
		"-append", "console=ttyS0 panic=-1 quiet no_timer_check",
		"-drive", "file=" + qemuEscape(cache) + ",format=raw,if=virtio",
	}
	for _, d := range cfg.Disks {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("vm: disk: %w", err)
		}
		args = append(args, "-drive", "file="+qemuEscape(d)+",format=raw,if=virtio,readonly=on")
	}
	var console, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.Stdout = &console
	if cfg.Console != nil {
		cmd.Stdout = io.MultiWriter(&console, cfg.Console)
	}
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	runErr := cmd.Run()

	res := parseConsole(console.String())
	res.Duration = time.Since(start)
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("vm: guest killed after %v: %w%s", res.Duration.Round(time.Millisecond), ctx.Err(), tail(res.Console))
	case runErr != nil:
		return res, fmt.Errorf("vm: qemu: %v: %s%s", runErr, strings.TrimSpace(stderr.String()), tail(res.Console))
	case res.ExitCode < 0:
		return res, fmt.Errorf("vm: guest stopped without reporting the script's exit status%s", tail(res.Console))
	}
	return res, nil
}

// parseConsole splits the console at /init's markers. ExitCode is -1
// when the exit marker is missing.
func parseConsole(s string) *Result {
	s = strings.ReplaceAll(s, "\r", "")
	res := &Result{Console: s, ExitCode: -1}
	body := s
	if i := strings.Index(body, markStart+"\n"); i >= 0 {
		body = body[i+len(markStart)+1:]
	}
	i := strings.LastIndex(body, markExit)
	if i < 0 {
		res.Output = body
		return res
	}
	res.Output = body[:i]
	line, _, _ := strings.Cut(body[i+len(markExit):], "\n")
	if code, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
		res.ExitCode = code
	}
	return res
}

// tail formats the end of the console for an error message.
func tail(console string) string {
	lines := strings.Split(strings.TrimRight(console, "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "\nconsole (last lines):\n" + strings.Join(lines, "\n")
}

// qemuEscape doubles the commas of a path for qemu's option syntax.
func qemuEscape(p string) string { return strings.ReplaceAll(p, ",", ",,") }

func makeCacheDisk(ctx context.Context, path string, mb int) error {
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(path, int64(mb)<<20); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// busybox is the statically linked busybox of Debian's busybox-static.
const busybox = "/bin/busybox"

func writeInitramfs(path string, cfg Config) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw := gzip.NewWriter(f)
	w := newCPIOWriter(zw)
	for _, d := range []string{"/bin", "/proc", "/sys", "/dev", "/tmp", "/cache", "/mnt", "/vm"} {
		w.Dir(d, 0o755)
	}
	w.Dir("/root", 0o700)
	w.Symlink("/bin/sh", "busybox")
	w.File("/vm/script", 0o755, int64(len(cfg.Script)), strings.NewReader(cfg.Script))
	w.File("/init", 0o755, int64(len(initScript)), strings.NewReader(initScript))
	if err := copyFile(w, busybox, busybox); err != nil {
		return fmt.Errorf("%w (install busybox-static)", err)
	}
	for _, file := range cfg.Files {
		if !filepath.IsAbs(file.Guest) {
			return fmt.Errorf("guest path %q is not absolute", file.Guest)
		}
		if err := copyFile(w, file.Host, file.Guest); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func copyFile(w *cpioWriter, host, guest string) error {
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New(host + " is not a regular file")
	}
	return w.File(guest, uint32(fi.Mode().Perm()), fi.Size(), f)
}
