package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/fakesystemd"
)

// streamReaders starts n readers of path, each reading it all in 128 KiB
// pieces spread over the file and comparing with want; the returned
// function waits for them, at most timeout, and returns their errors.
func streamReaders(path string, want []byte, n int, timeout time.Duration) func() []error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			f, err := os.Open(path)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := make([]byte, 128<<10)
			pieces := len(want) / len(buf)
			for i := 0; i < pieces; i++ {
				k := (i*8 + r*67) % pieces // readers spread over the file
				off := int64(k * len(buf))
				if _, err := f.ReadAt(buf, off); err != nil {
					errs <- fmt.Errorf("reader %d at %d: %w", r, off, err)
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("reader %d: wrong bytes at %d", r, off)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}(r)
	}
	return func() []error {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(timeout):
			return []error{fmt.Errorf("readers still blocked after %v", timeout)}
		}
		close(errs)
		var out []error
		for err := range errs {
			out = append(out, err)
		}
		return out
	}
}

// TestFDStoreSupervisorKilled plays systemd with an fd store: erofsd
// supervise puts the fanotify group and writer fds in the store; while 8
// readers stream a 64 MiB file, the supervisor and then the daemon are
// killed with SIGKILL (as systemd kills what is left of the unit), and a
// new supervisor started with the stored fds ($LISTEN_FDS) adopts them:
// every reader finishes with the right bytes, the mount is served again,
// and a final stop empties the store.
func TestFDStoreSupervisorKilled(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	img, blobs, want := bigFileImage(t, bins, dir, 64<<20)
	mgr, err := fakesystemd.Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	sock := filepath.Join(dir, "erofsd.sock")
	args := []string{"supervise", "--socket", sock, "--cache-dir", filepath.Join(dir, "cache"),
		"--state-dir", filepath.Join(dir, "state"), "--blob-dir", blobs, "--frontend", "fanotify", "--metrics-addr", ""}
	var logs lockedBuffer
	start := func() *exec.Cmd {
		cmd := mgr.Command(bins["erofsd"], args...)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	sup := start()
	c := control.NewClient(sock)
	ctx := context.Background()
	status := func() *control.Status {
		for i := 0; i < 400; i++ {
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
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		if sup.ProcessState == nil {
			sup.Process.Kill()
			sup.Wait()
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("supervisor and daemon log:\n%s", logs.String())
		}
	}()
	if _, err := c.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "big", Bootstrap: img}, Mountpoint: mnt}); err != nil {
		t.Fatal(err)
	}
	wait := streamReaders(filepath.Join(mnt, "big"), want, 8, time.Minute)
	time.Sleep(150 * time.Millisecond)

	// The store must hold the group and the cache file's writer.
	names := map[string]bool{}
	for _, s := range mgr.Store() {
		names[s.Name] = true
	}
	writer := "fanotify-writer%3A" + filepath.Join(dir, "cache", "fanotify")
	hasWriter := false
	for n := range names {
		hasWriter = hasWriter || strings.HasPrefix(n, writer)
	}
	if !names["fanotify"] || !hasWriter {
		t.Fatalf("fd store holds %v; want fanotify and a writer", names)
	}

	// systemd's view of a SIGKILLed main process: the unit's remaining
	// processes are killed too, then it is started again.
	sup.Process.Kill()
	syscall.Kill(first.PID, syscall.SIGKILL)
	sup.Wait() // also waits for the daemon's end of the output pipe
	for i := 0; fakesystemd.Alive(first.PID); i++ {
		if i > 500 {
			t.Fatal("the daemon outlived SIGKILL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sup = start()
	for _, err := range wait() {
		t.Error(err)
	}
	second := status()
	if second.PID == first.PID || second.Mounts != 1 || second.Images != 1 {
		t.Errorf("after the restart: pid %d (was %d), %d mounts, %d images; want the mount adopted", second.PID, first.PID, second.Mounts, second.Images)
	}
	if !strings.Contains(logs.String(), "fds from systemd's fd store") {
		t.Error("the new supervisor did not say it resumed from the fd store")
	}
	got, err := os.ReadFile(filepath.Join(mnt, "big"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reading the file after the restart: %v", err)
	}

	// A final stop empties the store: nothing keeps the kernel waiting.
	if err := c.Unmount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	sup.Process.Signal(syscall.SIGTERM)
	if err := sup.Wait(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if left := mgr.Store(); len(left) > 0 {
		t.Errorf("fd store after a final stop: %v", left)
	}
}

// lockedBuffer collects the output of several processes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
