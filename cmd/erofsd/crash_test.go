package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
)

// supervised is an "erofsd supervise" started for a test.
type supervised struct {
	t    *testing.T
	cmd  *exec.Cmd
	api  *control.Client
	logs *lockedBuffer
}

func startSupervised(t *testing.T, bins map[string]string, dir string, args ...string) *supervised {
	t.Helper()
	sock := filepath.Join(dir, "erofsd.sock")
	s := &supervised{t: t, api: control.NewClient(sock), logs: &lockedBuffer{}}
	s.cmd = exec.Command(bins["erofsd"], append([]string{"supervise", "--socket", sock, "--cache-dir", filepath.Join(dir, "cache"),
		"--state-dir", filepath.Join(dir, "state"), "--frontend", "fanotify", "--metrics-addr", ""}, args...)...)
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			s.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("supervisor and daemon log:\n%s", s.logs.String())
		}
	})
	s.status()
	return s
}

// status waits for the daemon to answer and returns its status.
func (s *supervised) status() *control.Status {
	s.t.Helper()
	for i := 0; i < 400; i++ {
		if st, err := s.api.Status(context.Background()); err == nil {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("daemon does not answer\n%s", s.logs.String())
	return nil
}

// timedReaders start n readers of path that read it in 128 KiB pieces
// spread over the file, again and again until stop is closed, and check
// every byte; the returned function waits for them and returns their
// errors and the longest single read.
func timedReaders(path string, want []byte, n int, stop <-chan struct{}) func() ([]error, time.Duration) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var longest time.Duration
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(path)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer f.Close()
			buf := make([]byte, 128<<10)
			pieces := len(want) / len(buf)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64((i*8+r*67)%pieces) * int64(len(buf))
				start := time.Now()
				_, err := f.ReadAt(buf, off)
				took := time.Since(start)
				mu.Lock()
				longest = max(longest, took)
				if err == nil && !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
					err = errors.New("wrong bytes")
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("reader %d at %d: %w", r, off, err))
				}
				mu.Unlock()
				if err != nil {
					return
				}
				if i%pieces == pieces-1 {
					// Read it all: drop the page cache so reads go to
					// the cache files (and events) again.
					os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o200)
				}
			}
		}()
	}
	return func() ([]error, time.Duration) {
		wg.Wait()
		return errs, longest
	}
}

// TestCrashLoopStall kills the daemon five times in a row, each time
// soon after its successor started serving, while 8 readers stream a
// 64 MiB file that is not all fetched yet: a daemon that served is
// restarted at once, so no read waits a second, and every byte is right.
func TestCrashLoopStall(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	img, blobs, want := bigFileImage(t, bins, dir, 64<<20)
	s := startSupervised(t, bins, dir, "--blob-dir", blobs, "--readahead-window", "0")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	ctx := context.Background()
	if _, err := s.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "big", Bootstrap: img}, Mountpoint: mnt}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	wait := timedReaders(filepath.Join(mnt, "big"), want, 8, stop)
	pid := s.status().PID
	for kill := range 5 {
		time.Sleep(250 * time.Millisecond)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", kill, err)
		}
		for i := 0; ; i++ {
			if st := s.status(); st.PID != pid {
				pid = st.PID
				break
			}
			if i > 500 {
				t.Fatalf("no new daemon after kill %d", kill)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(250 * time.Millisecond)
	close(stop)
	errs, longest := wait()
	for _, err := range errs {
		t.Error(err)
	}
	t.Logf("longest read across 5 kills: %v", longest)
	if longest >= time.Second {
		t.Errorf("a read waited %v across the kills; want under 1 s", longest)
	}
	if st := s.status(); st.Mounts != 1 {
		t.Errorf("%d mounts after the kills", st.Mounts)
	}
	if out, err := exec.Command(bins["erofsctl"], "--socket", filepath.Join(dir, "erofsd.sock"), "umount", mnt).CombinedOutput(); err != nil {
		t.Errorf("umount: %v\n%s", err, out)
	}
}

// TestSIGTERMWithHungStore stops "erofsd supervise" with SIGTERM while
// reads wait on a blob store that never answers: supervisor and daemon
// end within a few seconds, and the reads fail with EIO.
func TestSIGTERMWithHungStore(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	img, _, _ := bigFileImage(t, bins, dir, 8<<20)
	s := startSupervised(t, bins, dir, "--request-timeout", "60s")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	ctx := context.Background()
	if _, err := s.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "hung", Bootstrap: img, BlobDir: hung.URL}, Mountpoint: mnt}); err != nil {
		t.Fatal(err)
	}
	reads := make(chan error, 4)
	for i := range 4 {
		go func() {
			f, err := os.Open(filepath.Join(mnt, "big"))
			if err == nil {
				_, err = f.ReadAt(make([]byte, 4096), int64(i)<<20)
				f.Close()
			}
			reads <- err
		}()
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("erofsd supervise still running 10 s after SIGTERM")
	}
	took := time.Since(start)
	t.Logf("SIGTERM to exit with 4 reads pending on a hung store: %v", took)
	if took > 5*time.Second {
		t.Errorf("stopping took %v; want a few seconds", took)
	}
	if out, _ := exec.Command("pgrep", "-f", "erofsd --socket "+filepath.Join(dir, "erofsd.sock")).Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("a daemon outlived its supervisor: pid %s", out)
	}
	for range 4 {
		select {
		case err := <-reads:
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("a read pending at SIGTERM: %v, want EIO", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a read pending at SIGTERM did not end")
		}
	}
}
