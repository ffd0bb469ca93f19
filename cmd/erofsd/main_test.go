package main

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/ondemand/fanotify"
)

// TestDaemonLifecycle runs the real binary: it answers on its 0600
// socket, explains why it cannot mount when /dev/cachefiles is missing or
// busy, registers and lists images, and exits cleanly on SIGTERM.
func TestDaemonLifecycle(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "erofsd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "run", "erofsd.sock")
	// Only the cachefiles front end: on kernels without /dev/cachefiles
	// the daemon must say so and refuse mounts with the reason.
	cmd := exec.Command(bin, "--socket", sock, "--cache-dir", filepath.Join(dir, "cache"), "--state-dir", filepath.Join(dir, "state"), "--frontend", "cachefiles", "--metrics-addr", "")
	var logs strings.Builder
	cmd.Stderr = &logs
	// Play systemd: a notify socket that must see READY=1, then STOPPING=1.
	notifyPath := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	notified := func(want string) {
		t.Helper()
		buf := make([]byte, 512)
		notify.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := notify.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), want) {
			t.Fatalf("notify socket: %q, %v; want %s", buf[:n], err, want)
		}
	}
	notified("READY=1")
	c := control.NewClient(sock)
	ctx := context.Background()
	var st *control.Status
	for i := 0; i < 100; i++ {
		if st, err = c.Status(ctx); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("daemon does not answer: %v\n%s", err, logs.String())
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v)", fi.Mode(), err)
	}
	if _, err := os.Stat("/dev/cachefiles"); err != nil {
		if !strings.Contains(st.Frontend, "no /dev/cachefiles") {
			t.Errorf("status does not say why it cannot serve: %q", st.Frontend)
		}
		mp := t.TempDir()
		_, err := c.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "x", Bootstrap: "/nonexistent"}, Mountpoint: mp})
		if !errors.Is(err, control.ErrUnavailable) || !strings.Contains(err.Error(), "cachefiles") {
			t.Errorf("mount without /dev/cachefiles: %v", err)
		}
	}
	if _, err := c.Register(ctx, control.RegisterRequest{FSID: "x", Bootstrap: "relative/path"}); !errors.Is(err, control.ErrBadRequest) {
		t.Errorf("relative bootstrap: %v", err)
	}
	if _, err := c.Register(ctx, control.RegisterRequest{FSID: "bad/fsid", Bootstrap: "/etc/hostname"}); !errors.Is(err, control.ErrBadRequest) {
		t.Errorf("bad fsid: %v", err)
	}
	if err := c.Unmount(ctx, "/not/mounted"); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("unmount of an unknown mountpoint: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notified("STOPPING=1")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after SIGTERM")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Error("socket left behind")
	}
}

// fanotifyBins skips unless this kernel can serve through fanotify as
// root, and builds erofsd, erofsctl and erofs-image into dir.
func fanotifyBins(t *testing.T, dir string) map[string]string {
	t.Helper()
	require.Host(t, require.FileBackedErofs, func() error { return fanotify.Supported(dir) })
	bins := map[string]string{}
	for _, name := range []string{"erofsd", "erofsctl", "erofs-image"} {
		bins[name] = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", bins[name], "../"+name).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return bins
}

// bigFileImage builds an image of one file, "big", of size random bytes
// in 256 KiB chunks, with its blob in dir/blobs; it returns the image,
// the blob dir and the file's bytes.
func bigFileImage(t *testing.T, bins map[string]string, dir string, size int) (img, blobs string, data []byte) {
	t.Helper()
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	data = make([]byte, size)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big"), data, 0o644)
	img, blobs = filepath.Join(dir, "img.erofs"), filepath.Join(dir, "blobs")
	if out, err := exec.Command(bins["erofs-image"], "build", "--chunk-size", "256K", "--blob-dir", blobs, "-o", img, src).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return img, blobs, data
}

// TestSupervisedCrashFanotify kills erofsd with SIGKILL while 8 readers
// stream a 64 MiB file through the fanotify front end: the supervisor
// keeps the group and the journal, restarts the daemon, and every reader
// finishes with the right bytes and no error.
func TestSupervisedCrashFanotify(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	img, blobs, want := bigFileImage(t, bins, dir, 64<<20)
	sock := filepath.Join(dir, "erofsd.sock")
	sup := exec.Command(bins["erofsd"], "supervise", "--socket", sock, "--cache-dir", filepath.Join(dir, "cache"),
		"--state-dir", filepath.Join(dir, "state"), "--blob-dir", blobs, "--frontend", "fanotify", "--metrics-addr", "")
	var logs strings.Builder
	sup.Stderr = &logs
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	c := control.NewClient(sock)
	ctx := context.Background()
	status := func() *control.Status {
		for i := 0; i < 200; i++ {
			if st, err := c.Status(ctx); err == nil {
				return st
			}
			time.Sleep(25 * time.Millisecond)
		}
		t.Fatalf("daemon does not answer\n%s", logs.String())
		return nil
	}
	first := status()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	defer func() {
		exec.Command(bins["erofsctl"], "--socket", sock, "umount", mnt).Run()
		syscall.Unmount(mnt, syscall.MNT_DETACH) // if the daemon lost track of it
		sup.Process.Signal(syscall.SIGTERM)
		sup.Wait()
		if t.Failed() || testing.Verbose() {
			t.Logf("supervisor and daemon log:\n%s", logs.String())
		}
	}()
	if _, err := c.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "big", Bootstrap: img}, Mountpoint: mnt}); err != nil {
		t.Fatal(err)
	}

	wait := streamReaders(filepath.Join(mnt, "big"), want, 8, time.Minute)
	time.Sleep(150 * time.Millisecond)
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, err := range wait() {
		t.Error(err)
	}
	second := status()
	if second.PID == first.PID {
		t.Fatal("the daemon was not restarted")
	}
	if second.Mounts != 1 || second.Images != 1 {
		t.Errorf("after the restart: %d mounts, %d images; want the mount adopted", second.Mounts, second.Images)
	}
	// A second crash: the restarted daemon must have kept the mount in
	// its saved state for the next one.
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	wait = streamReaders(filepath.Join(mnt, "big"), want, 4, time.Minute)
	if err := syscall.Kill(second.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, err := range wait() {
		t.Error("after the second crash:", err)
	}
	var third *control.Status
	for i := 0; i < 400; i++ {
		if third = status(); third.PID != second.PID {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if third.PID == second.PID || third.Mounts != 1 || third.Images != 1 {
		t.Errorf("after the second restart: pid %d (was %d), %d mounts, %d images; want the mount adopted again", third.PID, second.PID, third.Mounts, third.Images)
	}
}

// TestConfigFile checks the TOML config: the shipped deploy/config.toml
// loads, unknown keys and bad values are refused with the key named, and
// a flag on the command line wins over the file.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "erofsd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(config string, args ...string) (string, error) {
		p := filepath.Join(dir, "config.toml")
		os.WriteFile(p, []byte(config), 0o644)
		out, err := exec.Command(bin, append([]string{"--config", p}, append(args, "--version")...)...).CombinedOutput()
		return string(out), err
	}
	shipped, err := os.ReadFile("../../deploy/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(string(shipped)); err != nil || !strings.Contains(out, "erofsd") {
		t.Fatalf("deploy/config.toml: %v\n%s", err, out)
	}
	for config, key := range map[string]string{
		"bogus = 1\n":                       "bogus",
		"workers = \"many\"\n":              "workers",
		"frontend = \"ebpf\"\n":             "frontend",
		"workers = 0\n":                     "workers",
		"cache_dir = [\"a\", \"b\"]\n":      "cache_dir",
		"version = true\n":                  "version",
		"cachefiles_bcull = 50\n":           "bcull 50%",
		"cachefiles_fstop = 7\n":            "fstop 7%",
		"fanotify_cache_limit = \"lots\"\n": "fanotify_cache_limit",
		"fanotify_cache_limit = -1\n":       "fanotify_cache_limit",
		"cache_check_interval = \"0s\"\n":   "cache_check_interval",
	} {
		out, err := run(config)
		if err == nil || !strings.Contains(out, key) {
			t.Errorf("config %q: %v, output %q; want an error naming %s", config, err, out, key)
		}
	}
	if out, err := run("cachefiles_brun = 30\ncachefiles_bcull = 20\ncachefiles_bstop = 10\nfanotify_cache_limit = \"20G\"\n"); err != nil {
		t.Errorf("valid cache settings refused: %v\n%s", err, out)
	}
	if out, err := run("frontend = \"ebpf\"\n", "--frontend", "auto"); err != nil {
		t.Errorf("a flag must win over the file: %v\n%s", err, out)
	}
	if _, err := exec.Command(bin, "--config", filepath.Join(dir, "missing.toml"), "--version").CombinedOutput(); err == nil {
		t.Error("a missing --config file was accepted")
	}
}
