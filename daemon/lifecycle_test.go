package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"golang.org/x/sys/unix"
)

// randomImage builds an image of one file "f" of size random bytes, its
// blob in its own directory, and returns the image, the blob directory
// and the bytes.
func randomImage(t *testing.T, size int) (img, blobDir string, data []byte) {
	t.Helper()
	src := t.TempDir()
	data = make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	blobDir = t.TempDir()
	img, _, _ = testimage.Build(t, src, build.Options{BlobDir: blobDir, ChunkSize: 256 << 10})
	return img, blobDir, data
}

func mountReq(fsid, img, blobDir, mp string) control.MountRequest {
	return control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: fsid, Bootstrap: img, BlobDir: blobDir}, Mountpoint: mp}
}

// erofsMounts counts the erofs mounts on mp.
func erofsMounts(t *testing.T, mp string) int {
	t.Helper()
	ents, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.MountPoint == mp && e.FSType == "erofs" {
			n++
		}
	}
	return n
}

// TestMountReadUnmount: an image mounted through the in-process daemon
// reads back right, and its unmount releases the image.
func TestMountReadUnmount(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	td := startDaemon(t, holderOf(t), testConfig(dir))
	img, blobs, data := randomImage(t, 3<<20)
	mp := t.TempDir()
	ctx := context.Background()
	if _, err := td.api.Mount(ctx, mountReq("one", img, blobs, mp)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, right bytes %v", err, bytes.Equal(got, data))
	}
	if err := td.api.Unmount(ctx, mp); err != nil {
		t.Fatal(err)
	}
	if ims, _ := td.api.Images(ctx); len(ims) != 0 {
		t.Errorf("images after unmount: %+v", ims)
	}
}

// TestMountStorm: 50 mounts of one mountpoint at once, with unmounts
// among them: exactly one mount wins at a time, the others are told the
// mountpoint is busy, erofsctl ls and the kernel agree all along, and
// after a last unmount nothing is left mounted or registered.
func TestMountStorm(t *testing.T) {
	needFanotify(t)
	td := startDaemon(t, holderOf(t), testConfig(t.TempDir()))
	img, blobs, _ := randomImage(t, 1<<20)
	mp := t.TempDir()
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, busy := 0, 0
	var other []error
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%5 == 4 {
				td.api.Unmount(ctx, mp)
				return
			}
			_, err := td.api.Mount(ctx, mountReq(fmt.Sprintf("storm%d", i), img, blobs, mp))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, control.ErrExists):
				busy++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	if won == 0 || won+busy != 40 || len(other) > 0 {
		t.Fatalf("%d mounts won, %d busy, other errors %v", won, busy, other)
	}
	mounts, _ := td.Mounts(ctx)
	if n := erofsMounts(t, mp); n != len(mounts) || n > 1 {
		t.Fatalf("%d erofs mounts on %s, erofsctl ls lists %d", n, mp, len(mounts))
	}
	if len(mounts) == 1 {
		if err := td.api.Unmount(ctx, mp); err != nil {
			t.Fatal(err)
		}
	}
	if n := erofsMounts(t, mp); n != 0 {
		t.Errorf("%d erofs mounts left on %s", n, mp)
	}
	if ims, _ := td.api.Images(ctx); len(ims) != 0 {
		t.Errorf("%d images left registered", len(ims))
	}
}

// hungStore is an HTTP blob store that accepts requests and never
// answers them, until the test ends.
func hungStore(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv.URL
}

// TestNothingBlocksUnrelatedWork: a FIFO given as an image is refused at
// once, and a mount whose reads wait on a hung store delays nothing of
// another image: its mount, its reads, the status.
func TestNothingBlocksUnrelatedWork(t *testing.T) {
	needFanotify(t)
	cfg := testConfig(t.TempDir())
	cfg.RequestTimeout = 30 * time.Second // longer than this test waits
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()

	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := td.api.Register(ctx, control.RegisterRequest{FSID: "fifo", Bootstrap: fifo})
	if !errors.Is(err, control.ErrBadRequest) || !strings.Contains(err.Error(), "regular file") || time.Since(start) > 5*time.Second {
		t.Fatalf("a FIFO as image: %v after %v", err, time.Since(start))
	}

	hungImg, _, _ := randomImage(t, 1<<20)
	hungMp := t.TempDir()
	if _, err := td.api.Mount(ctx, mountReq("hung", hungImg, hungStore(t), hungMp)); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(hungMp, unix.MNT_DETACH) // a read is still waiting on it
	go os.ReadFile(filepath.Join(hungMp, "f"))  // waits on the store
	time.Sleep(200 * time.Millisecond)

	img, blobs, data := randomImage(t, 2<<20)
	mp := t.TempDir()
	start = time.Now()
	if _, err := td.api.Mount(ctx, mountReq("local", img, blobs, mp)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the local image beside a hung one: %v", err)
	}
	if _, err := td.api.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("mounting and reading a local image took %v beside a hung store", d)
	}
	td.api.Unmount(ctx, mp)
}

// TestHungStoreTimesOut: a read whose data a store never sends fails
// with EIO at the request timeout (and the next read does not wait
// again for longer), the status answers meanwhile, and stopping erofsd
// with reads pending ends it within seconds, the reads failing.
func TestHungStoreTimesOut(t *testing.T) {
	needFanotify(t)
	cfg := testConfig(t.TempDir())
	cfg.RequestTimeout = 2 * time.Second
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	img, _, _ := randomImage(t, 1<<20)
	mp := t.TempDir()
	if _, err := td.api.Mount(ctx, mountReq("hung", img, hungStore(t), mp)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mp, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 2 {
		start := time.Now()
		_, err := f.ReadAt(make([]byte, 4096), int64(i)*512<<10)
		if !errors.Is(err, syscall.EIO) || time.Since(start) > cfg.RequestTimeout+3*time.Second {
			t.Fatalf("read %d from a hung store: %v after %v; want EIO after about %v", i, err, time.Since(start), cfg.RequestTimeout)
		}
	}
	if n := td.counter("requests_timed_out_total{frontend=fanotify}"); n == 0 {
		t.Error("no timed-out request counted")
	}

	// Reads pending when erofsd stops for good fail at once.
	pending := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := f.ReadAt(make([]byte, 4096), int64(i+2)*128<<10)
			pending <- err
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if took := td.stop(false); took > 4*time.Second {
		t.Errorf("stopping with reads pending on a hung store took %v", took)
	}
	for range 4 {
		select {
		case err := <-pending:
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("a read pending at stop: %v, want EIO", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a read pending at stop did not end")
		}
	}
	unix.Unmount(mp, unix.MNT_DETACH)
}

// TestStateDamagedAndTampered: a restarted daemon finds its state file
// cut short and an entry added for a mountpoint that holds a tmpfs. It
// adopts the real mount from what still parses (reads go on, umount
// works), and refuses the tampered entry: erofsctl umount of that
// mountpoint is refused and the tmpfs stays.
func TestStateDamagedAndTampered(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
	holder := holderOf(t)
	cfg := testConfig(dir)
	first := startDaemon(t, holder, cfg)
	ctx := context.Background()
	img, blobs, data := randomImage(t, 2<<20)
	mp := t.TempDir()
	if _, err := first.api.Mount(ctx, mountReq("real", img, blobs, mp)); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mp, unix.MNT_DETACH)
	first.stop(true) // hands over: the mount waits for the next daemon

	tmpfs := t.TempDir()
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(tmpfs, unix.MNT_DETACH)
	statePath := filepath.Join(cfg.StateDir, "state.json")
	good, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	// The tampered entry first, then the real one; the file cut after
	// the real mount's entry.
	tampered := strings.Replace(string(good), `"mounts": [`, fmt.Sprintf(`"mounts": [
    {"mountpoint": %q, "fsid": "real", "frontend": "fanotify"},`, tmpfs), 1)
	real := strings.LastIndex(tampered, `"frontend": "fanotify"`)
	cut := real + strings.Index(tampered[real:], "}") + 1
	if err := os.WriteFile(statePath, []byte(tampered[:cut]), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(statePath + ".prev")

	second := startDaemon(t, holder, cfg)
	mounts, _ := second.Mounts(ctx)
	if len(mounts) != 1 || mounts[0].Mountpoint != mp {
		t.Fatalf("adopted %+v, want only %s\n%s", mounts, mp, second.logs.String())
	}
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading the adopted mount: %v", err)
	}
	if err := second.api.Unmount(ctx, tmpfs); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("umount of the tampered entry's mountpoint: %v", err)
	}
	if ents, _ := mountinfo.Read(); func() bool { e, ok := mountinfo.Top(ents, tmpfs); return !ok || e.FSType != "tmpfs" }() {
		t.Error("the tmpfs is gone")
	}
	if err := second.api.Unmount(ctx, mp); err != nil {
		t.Fatal(err)
	}
}

// TestUnmountWhileInUseElsewhere: the image's mount point is unmounted
// while a bind mount of it (as a container's overlay would) still uses
// the filesystem. Reads through the bind mount go on getting the right
// bytes (released at once, the cache file's missing blocks would read as
// zeros); once the bind mount goes too, the image is released.
func TestUnmountWhileInUseElsewhere(t *testing.T) {
	needFanotify(t)
	td := startDaemon(t, holderOf(t), testConfig(t.TempDir()))
	ctx := context.Background()
	img, blobs, data := randomImage(t, 4<<20)
	mp, bind := t.TempDir(), t.TempDir()
	if _, err := td.api.Mount(ctx, mountReq("shared", img, blobs, mp)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(mp, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(bind, unix.MNT_DETACH)
	if err := td.api.Unmount(ctx, mp); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(bind, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading through the bind mount after the unmount: %v, right bytes %v", err, bytes.Equal(got, data))
	}
	if ims, _ := td.api.Images(ctx); len(ims) != 1 {
		t.Errorf("%d images registered while the filesystem is in use; want it kept", len(ims))
	}
	if err := unix.Unmount(bind, 0); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { ims, _ := td.api.Images(ctx); return len(ims) == 0 }) {
		t.Error("the image stays registered after the filesystem is gone")
	}
}
