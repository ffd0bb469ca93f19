package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
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
	cmd := exec.Command(bin, "--socket", sock, "--cache-dir", filepath.Join(dir, "cache"), "--state-dir", filepath.Join(dir, "state"))
	var logs strings.Builder
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	c := control.NewClient(sock)
	ctx := context.Background()
	var st *control.Status
	var err error
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
