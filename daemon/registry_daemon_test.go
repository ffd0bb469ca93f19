package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testconvert"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestDaemonRegistryMount converts an image into the real registry on
// loopback, mounts it through erofsd by reference with no blob dir, and
// checks the tree against the image's flattened rootfs and the bytes
// fetched against what was read.
func TestDaemonRegistryMount(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
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
	testconvert.InRegistry(t, "oci://"+reg.Host+"/app:v1", target, 64<<10)
	rootfs := filepath.Join(dir, "rootfs")
	testoci.Flatten(t, src, rootfs)

	cfg := cliConfig(t, dir)
	cfg.Frontend = "fanotify"
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	// Plain HTTP only when asked, also on loopback.
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "app", Bootstrap: target}, Mountpoint: mnt}); err == nil || !strings.Contains(err.Error(), "plain-http") {
		t.Fatalf("mount over plain HTTP without plain_http: %v", err)
	}
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "app", Bootstrap: target, PlainHTTP: true, Platform: "linux/amd64"},
		Mountpoint: mnt}); err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	ims, err := td.api.Images(ctx)
	if err != nil || len(ims) != 1 || !strings.HasPrefix(ims[0].Source, reg.Host+"/app@sha256:") {
		t.Errorf("images do not name the manifest the image came from: %+v, %v", ims, err)
	}

	// A metadata walk fetches no file data.
	fetched := func() float64 { return scrape.Metrics(t, cfg.MetricsAddr)["erofsd_backend_fetched_bytes_total"] }
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
	m := scrape.Metrics(t, cfg.MetricsAddr)
	if m[`erofsd_backend_requests_total{backend="oci"}`] == 0 || m["erofsd_chunk_digest_failures_total"] != 0 {
		t.Errorf("oci backend requests %v, digest failures %v", m[`erofsd_backend_requests_total{backend="oci"}`], m["erofsd_chunk_digest_failures_total"])
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount: %v", err)
	}
	// The fetched bootstrap goes with the image.
	if left, _ := os.ReadDir(filepath.Join(cfg.StateDir, "bootstraps")); len(left) != 0 {
		t.Errorf("%d fetched bootstraps left after the image was unmounted", len(left))
	}
	// A source image that was never converted is refused clearly.
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "v1", Bootstrap: "oci://" + reg.Host + "/app:v1", PlainHTTP: true},
		Mountpoint: mnt}); err == nil || !strings.Contains(err.Error(), "not an erofsd image") {
		t.Errorf("mounting an unconverted image: %v", err)
	}
}

// TestDaemonRegistryFaults puts a fault-injecting proxy between erofsd
// and the registry: 503s, connection resets, truncated, slow and
// corrupted bodies, bounded in count. Every read returns the right bytes
// or fails with EIO, never wrong bytes; once the faults stop, every file
// reads back right.
func TestDaemonRegistryFaults(t *testing.T) {
	needFanotify(t)
	dir := t.TempDir()
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
	testconvert.InRegistry(t, "oci://"+reg.Host+"/faulty:v1", "oci://"+reg.Host+"/faulty:erofs", 64<<10)
	proxy := faultproxy.Start(t, faultproxy.Options{Target: reg.Host, MaxFaults: 200, FlipAt: 100,
		SlowChunk: 64 << 10, SlowDelay: 5 * time.Millisecond, SlowMax: time.Second})

	// Chunk by chunk (no readahead window), so that many requests meet
	// the faults; streamed runs under faults are covered in blobstore and
	// ondemand.
	cfg := cliConfig(t, dir)
	cfg.Frontend, cfg.ReadaheadWindow = "fanotify", 0
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnt := mountpoint(t)
	if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "faulty", Bootstrap: "oci://" + proxy.Host + "/faulty:erofs", PlainHTTP: true},
		Mountpoint: mnt}); err != nil {
		t.Fatalf("mount: %v", err)
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
	m := scrape.Metrics(t, cfg.MetricsAddr)
	if m["erofsd_chunk_digest_failures_total"] == 0 {
		t.Error("flipped bytes were not caught by the digest check")
	}
	if err := td.api.Unmount(ctx, mnt); err != nil {
		t.Fatalf("umount: %v", err)
	}
}
