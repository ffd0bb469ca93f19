package main

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
)

// TestFailedReadsLogRateLimited serves an image whose blob is corrupt:
// every read fails (EIO), each failure is logged naming the image, the
// blob and the offset, and the repeats are cut to the limiter's burst.
func TestFailedReadsLogRateLimited(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	data := make([]byte, 1<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "file"), data, 0o644)
	img, blobs := filepath.Join(dir, "img.erofs"), filepath.Join(dir, "blobs")
	if out, err := exec.Command(bins["erofs-image"], "build", "--blob-dir", blobs, "-o", img, src).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ents, _ := os.ReadDir(blobs)
	if len(ents) != 1 {
		t.Fatalf("%d blobs", len(ents))
	}
	blob := ents[0].Name()
	f, _ := os.OpenFile(filepath.Join(blobs, blob), os.O_RDWR, 0)
	f.WriteAt([]byte("corrupt"), 100)
	f.Close()

	sock := filepath.Join(dir, "erofsd.sock")
	sup := exec.Command(bins["erofsd"], "supervise", "--socket", sock, "--cache-dir", filepath.Join(dir, "cache"),
		"--state-dir", filepath.Join(dir, "state"), "--blob-dir", blobs, "--frontend", "fanotify", "--metrics-addr", "")
	var logs lockedBuffer
	sup.Stderr = &logs
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	defer func() {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		sup.Process.Signal(syscall.SIGTERM)
		sup.Wait()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	c := control.NewClient(sock)
	ctx := context.Background()
	var err error
	for i := 0; i < 200; i++ {
		if _, err = c.Status(ctx); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if _, err := c.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "corrupt", Bootstrap: img}, Mountpoint: mnt}); err != nil {
		t.Fatal(err)
	}
	failures := 0
	for i := 0; i < 25; i++ {
		if _, err := os.ReadFile(filepath.Join(mnt, "file")); err != nil {
			failures++
		}
	}
	if failures != 25 {
		t.Fatalf("%d of 25 reads of a corrupt blob failed", failures)
	}
	var denied []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `msg="read denied"`) {
			denied = append(denied, l)
		}
	}
	if len(denied) == 0 || len(denied) > logBurst {
		t.Fatalf("%d read-denied lines for 25 failed reads; want 1 to %d", len(denied), logBurst)
	}
	for _, l := range denied {
		for _, want := range []string{"image=corrupt", "sha256:" + blob, "off=", "digest"} {
			if !strings.Contains(l, want) {
				t.Errorf("log line lacks %q: %s", want, l)
			}
		}
	}
}
