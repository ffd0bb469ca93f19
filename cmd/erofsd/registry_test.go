package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/faultproxy"
	"github.com/erofsd/erofsd/internal/testoci"
	"github.com/erofsd/erofsd/internal/testregistry"
	"github.com/erofsd/erofsd/internal/treecmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// runningDaemon is an "erofsd supervise" started for a test.
type runningDaemon struct {
	cmd     *exec.Cmd
	sock    string
	metrics string
	logs    *strings.Builder
	bins    map[string]string
}

// startDaemon runs erofsd supervise with its own socket, cache, state
// and metrics address, plus args, and waits until it answers.
func startDaemon(t *testing.T, bins map[string]string, dir string, args ...string) *runningDaemon {
	t.Helper()
	d := &runningDaemon{sock: filepath.Join(dir, "erofsd.sock"), metrics: freeAddr(t), logs: &strings.Builder{}, bins: bins}
	d.cmd = exec.Command(bins["erofsd"], append([]string{"supervise", "--socket", d.sock, "--cache-dir", filepath.Join(dir, "cache"),
		"--state-dir", filepath.Join(dir, "state"), "--metrics-addr", d.metrics}, args...)...)
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Signal(syscall.SIGTERM)
			d.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("erofsd log:\n%s", d.logs.String())
		}
	})
	for i := 0; i < 100; i++ {
		if _, err := d.ctl("status"); err == nil {
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("erofsd does not answer:\n%s", d.logs.String())
	return nil
}

func (d *runningDaemon) ctl(args ...string) (string, error) {
	out, err := exec.Command(d.bins["erofsctl"], append([]string{"--socket", d.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// TestDaemonRegistryMount converts an image into the real registry on
// loopback, mounts it through erofsd by reference with no blob dir, and
// checks the tree against the image's flattened rootfs and the bytes
// fetched against what was read.
func TestDaemonRegistryMount(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	reg := testregistry.Start(t, testregistry.Options{})

	bigData := testoci.Random(77, 64<<20)
	layers := append(testoci.Layers(t, 6<<20), testoci.Layer(t, testoci.ManyFiles("many", 1500, 16<<10, 7)),
		testoci.Layer(t, []testoci.Entry{{Name: "big64", Body: bigData}}))
	src := testoci.Image(t, layers, "linux", "amd64")
	ref, err := name.ParseReference(reg.Host + "/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, src); err != nil {
		t.Fatal(err)
	}
	target := "oci://" + reg.Host + "/app:erofs"
	if out, err := exec.Command(bins["erofs-image"], "convert", "--plain-http", "--chunk-size", "64K", "--platform", "linux/amd64",
		"oci://"+reg.Host+"/app:v1", target).CombinedOutput(); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	rootfs := filepath.Join(dir, "rootfs")
	testoci.Flatten(t, src, rootfs)

	d := startDaemon(t, bins, dir, "--frontend", "fanotify")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	// Plain HTTP only when asked, also on loopback.
	if out, err := d.ctl("mount", target, mnt); err == nil || !strings.Contains(out, "plain-http") {
		t.Fatalf("mount over plain HTTP without --plain-http: %v\n%s", err, out)
	}
	if out, err := d.ctl("mount", "--platform", "linux/amd64", target, mnt, "--plain-http"); err != nil {
		t.Fatalf("erofsctl mount: %v\n%s", err, out)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	out, _ := d.ctl("ls")
	if !strings.Contains(out, reg.Host+"/app@sha256:") {
		t.Errorf("ls does not name the manifest the image came from:\n%s", out)
	}

	// A metadata walk fetches no file data.
	fetched := func() float64 { return scrape(t, d.metrics)["erofsd_backend_fetched_bytes_total"] }
	entries := 0
	err = filepath.WalkDir(mnt, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		_, err = os.Lstat(p)
		entries++
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := fetched(); n != 0 || entries < 1500 {
		t.Errorf("walking %d entries fetched %v bytes of file data, want 0", entries, n)
	}
	// Reading two small files fetches their chunks, not the image.
	read := int64(0)
	for _, p := range []string{"etc/passwd", "many/d010/f00500"} {
		data, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(rootfs, p))
		if string(data) != string(want) {
			t.Fatalf("%s differs", p)
		}
		read += int64(len(data))
	}
	if n := fetched(); n < float64(read) || n > float64(read)+2*64<<10 {
		t.Errorf("reading %d bytes fetched %v bytes; want that, up to a chunk more per file", read, n)
	}

	// 8 readers at random offsets of a 64 MiB file while its chunks
	// come from the registry: every piece right.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := 0; r < 8; r++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			f, err := os.Open(filepath.Join(mnt, "big64"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			rnd := rand.New(rand.NewPCG(seed, seed))
			buf := make([]byte, 256<<10)
			for i := 0; i < 40; i++ {
				off := rnd.Int64N(int64(len(bigData) - len(buf)))
				if _, err := f.ReadAt(buf, off); err != nil {
					errs <- fmt.Errorf("read at %d: %w", off, err)
					return
				}
				if !bytes.Equal(buf, bigData[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("wrong bytes at %d", off)
					return
				}
			}
		}(uint64(r))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error("reader:", err)
	}

	diffs, err := treecmp.Compare(rootfs, mnt, treecmp.Options{IgnoreDirMtime: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, diff := range diffs {
		t.Error(diff)
	}
	m := scrape(t, d.metrics)
	if m[`erofsd_backend_requests_total{backend="oci"}`] == 0 || m["erofsd_chunk_digest_failures_total"] != 0 {
		t.Errorf("oci backend requests %v, digest failures %v", m[`erofsd_backend_requests_total{backend="oci"}`], m["erofsd_chunk_digest_failures_total"])
	}
	if out, err := d.ctl("umount", mnt); err != nil {
		t.Fatalf("erofsctl umount: %v\n%s", err, out)
	}
	// The fetched bootstrap goes with the image.
	if left, _ := os.ReadDir(filepath.Join(dir, "state", "bootstraps")); len(left) != 0 {
		t.Errorf("%d fetched bootstraps left after the image was unmounted", len(left))
	}
	// A source image that was never converted is refused clearly.
	if out, err := d.ctl("mount", "--plain-http", "oci://"+reg.Host+"/app:v1", mnt); err == nil || !strings.Contains(out, "not an erofsd image") {
		t.Errorf("mounting an unconverted image: %v\n%s", err, out)
	}
}

// TestDaemonRegistryFaults puts a fault-injecting proxy between erofsd
// and the registry: 503s, connection resets, truncated, slow and
// corrupted bodies, bounded in count. Every read returns the right bytes
// or fails with EIO, never wrong bytes; once the faults stop, every file
// reads back right.
func TestDaemonRegistryFaults(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	reg := testregistry.Start(t, testregistry.Options{})
	var entries []testoci.Entry
	for i := 0; i < 12; i++ {
		entries = append(entries, testoci.Entry{Name: fmt.Sprintf("f%02d", i), Body: testoci.Random(uint64(100+i), 300<<10+i*4099)})
	}
	src := testoci.Image(t, []v1.Layer{testoci.Layer(t, entries)}, "linux", "amd64")
	ref, err := name.ParseReference(reg.Host + "/faulty:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, src); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bins["erofs-image"], "convert", "--plain-http", "--chunk-size", "64K", "--platform", "linux/amd64",
		"oci://"+reg.Host+"/faulty:v1", "oci://"+reg.Host+"/faulty:erofs").CombinedOutput(); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	proxy := faultproxy.Start(t, faultproxy.Options{Target: reg.Host, MaxFaults: 200, FlipAt: 100,
		SlowChunk: 64 << 10, SlowDelay: 5 * time.Millisecond, SlowMax: time.Second})

	// Chunk by chunk (no readahead window), so that many requests meet
	// the faults; streamed runs under faults are covered in blobstore and
	// ondemand.
	d := startDaemon(t, bins, dir, "--frontend", "fanotify", "--readahead-window", "0")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := d.ctl("mount", "--plain-http", "oci://"+proxy.Host+"/faulty:erofs", mnt); err != nil {
		t.Fatalf("erofsctl mount: %v\n%s", err, out)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)

	readAll := func(entries []testoci.Entry) (ok, eio int) {
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(mnt, e.Name))
			switch {
			case err == nil && bytes.Equal(data, e.Body):
				ok++
			case err == nil:
				t.Fatalf("%s: read %d wrong bytes", e.Name, len(data))
			case errors.Is(err, syscall.EIO):
				eio++
			default:
				t.Fatalf("%s: %v, want the bytes or EIO", e.Name, err)
			}
		}
		return ok, eio
	}
	proxy.SetSchedule(faultproxy.Seeded(42, 0.5, faultproxy.Status503, faultproxy.Reset, faultproxy.Truncate, faultproxy.Slow, faultproxy.Flip))
	ok, eio := readAll(entries[:10])
	injected := int64(0)
	for _, f := range []faultproxy.Fault{faultproxy.Status503, faultproxy.Reset, faultproxy.Truncate, faultproxy.Slow, faultproxy.Flip} {
		injected += proxy.Faults(f)
	}
	if proxy.Faults(faultproxy.Flip) == 0 || injected < 10 {
		t.Fatalf("only %d faults injected (%d flips): the test tests nothing", injected, proxy.Faults(faultproxy.Flip))
	}
	t.Logf("under %d faults: %d files read right, %d failed with EIO", injected, ok, eio)

	// Every body corrupted: the retry is corrupted too, so reads fail.
	proxy.SetSchedule(faultproxy.Seeded(7, 1, faultproxy.Flip))
	if ok, eio := readAll(entries[10:]); ok != 0 || eio != 2 {
		t.Fatalf("with every body corrupted: %d files read, %d EIO; want 0 and 2", ok, eio)
	}

	proxy.SetSchedule(nil)
	if ok, eio := readAll(entries); ok != len(entries) {
		t.Fatalf("after the faults stopped: %d files right, %d EIO", ok, eio)
	}
	m := scrape(t, d.metrics)
	if m["erofsd_chunk_digest_failures_total"] == 0 {
		t.Error("flipped bytes were not caught by the digest check")
	}
	if out, err := d.ctl("umount", mnt); err != nil {
		t.Fatalf("erofsctl umount: %v\n%s", err, out)
	}
}
