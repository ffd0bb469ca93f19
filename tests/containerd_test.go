package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testcontainerd"
	"github.com/erofsd/erofsd/internal/testutil/testconvert"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// buildCommands builds erofsd's commands into a temp dir and returns
// their paths by name.
func buildCommands(t testing.TB, names ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	bins := map[string]string{}
	for _, n := range names {
		bins[n] = filepath.Join(dir, n)
		if out, err := exec.Command("go", "build", "-o", bins[n], "../cmd/"+n).CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", n, err, out)
		}
	}
	return bins
}

// erofsdProc is an "erofsd supervise" with the snapshotter on.
type erofsdProc struct {
	t          testing.TB
	bins       map[string]string
	dir        string // short: it holds the sockets
	api        *control.Client
	snapSocket string
	snapRoot   string
	cmd        *exec.Cmd
	logMu      sync.Mutex
	logs       bytes.Buffer
}

func (e *erofsdProc) Write(p []byte) (int, error) {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.logs.Write(p)
}

func (e *erofsdProc) log() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.logs.String()
}

func startErofsd(t testing.TB, bins map[string]string, plainHosts ...string) *erofsdProc {
	t.Helper()
	dir, err := os.MkdirTemp("", "esd")
	if err != nil {
		t.Fatal(err)
	}
	e := &erofsdProc{t: t, bins: bins, dir: dir, api: control.NewClient(filepath.Join(dir, "erofsd.sock")),
		snapSocket: filepath.Join(dir, "sn.sock"), snapRoot: filepath.Join(dir, "snapshotter")}
	e.cmd = exec.Command(bins["erofsd"], "supervise", "--socket", filepath.Join(dir, "erofsd.sock"),
		"--cache-dir", filepath.Join(dir, "cache"), "--state-dir", filepath.Join(dir, "state"), "--frontend", "fanotify",
		"--metrics-addr", "", "--snapshotter-socket", e.snapSocket, "--snapshotter-root", e.snapRoot,
		"--snapshotter-plain-http-hosts", strings.Join(plainHosts, ","))
	e.cmd.Stderr = e
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered before containerd's cleanup (which runs first) so that
	// containerd unmounts through a running snapshotter.
	t.Cleanup(func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		e.cmd.Wait()
		if ents, err := mountinfo.Read(); err == nil {
			for i := len(ents) - 1; i >= 0; i-- {
				if strings.HasPrefix(ents[i].MountPoint, dir+"/") {
					syscall.Unmount(ents[i].MountPoint, syscall.MNT_DETACH)
				}
			}
		}
		if t.Failed() {
			t.Logf("erofsd log:\n%s", e.log())
		}
		os.RemoveAll(dir)
	})
	e.status()
	return e
}

// status waits for the daemon to answer and returns its status.
func (e *erofsdProc) status() *control.Status {
	e.t.Helper()
	for i := 0; i < 500; i++ {
		if st, err := e.api.Status(context.Background()); err == nil {
			if _, err := os.Stat(e.snapSocket); err == nil {
				return st
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("erofsd does not answer\n%s", e.log())
	return nil
}

// ctl runs erofsctl against the daemon.
func (e *erofsdProc) ctl(args ...string) (string, error) {
	out, err := exec.Command(e.bins["erofsctl"], append([]string{"--socket", filepath.Join(e.dir, "erofsd.sock")}, args...)...).CombinedOutput()
	return string(out), err
}

// erofsMountsUnder counts the erofs mounts under dir.
func erofsMountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.FSType == "erofs" && strings.HasPrefix(e.MountPoint, dir+"/") {
			out = append(out, e.MountPoint)
		}
	}
	return out
}

// appImage is the test's application image: busybox and a data layer
// of a large file and small ones.
type appImage struct {
	img      v1.Image
	big      []byte
	small    map[string][]byte
	size     int64 // bytes of its layers, uncompressed
	command  []string
	expected string // the command's output
}

func newAppImage(t testing.TB) *appImage {
	a := &appImage{big: testoci.Random(41, 48<<20), small: map[string][]byte{
		"data/small1": testoci.Random(42, 4<<10), "data/small2": testoci.Random(43, 100<<10)}}
	entries := []testoci.Entry{{Name: "data/big", Body: a.big}}
	for _, n := range []string{"data/small1", "data/small2"} {
		entries = append(entries, testoci.Entry{Name: n, Body: a.small[n]})
	}
	a.img = testcontainerd.Image(t, []string{"/bin/sh", "-c"}, testoci.Layer(t, entries))
	a.command = []string{"/bin/sh", "-c", "cd /data && sha256sum small1 small2"}
	for _, n := range []string{"small1", "small2"} {
		sum := sha256.Sum256(a.small["data/"+n])
		a.expected += hex.EncodeToString(sum[:]) + "  " + n + "\n"
	}
	layers, err := a.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := bytes.NewBuffer(nil).ReadFrom(rc)
		rc.Close()
		a.size += n
	}
	return a
}

func push(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestContainerd runs erofsd images in a real containerd (Debian's 1.6
// and runc) through erofsd's snapshotter, driven over CRI as kubelet
// drives it and with ctr, from the real registry on loopback behind a
// proxy that counts what the registry served.
func TestContainerd(t *testing.T) {
	require.Host(t, require.Root, require.FileBackedErofs, func() error { return fanotify.Supported(t.TempDir()) })
	bins := buildCommands(t, "erofsd", "erofsctl")
	reg := testregistry.Start(t, testregistry.Options{})
	link := faultproxy.Start(t, faultproxy.Options{Target: reg.Host})
	host := link.Host

	app := newAppImage(t)
	push(t, host+"/pause:1", testcontainerd.PauseImage(t))
	push(t, host+"/app:src", app.img)
	testconvert.InRegistry(t, "oci://"+host+"/app:src", "oci://"+host+"/app:erofs", 0)
	lazyRef, plainRef := host+"/app:erofs", host+"/app:src"

	esd := startErofsd(t, bins, host)
	ctd := testcontainerd.Start(t, testcontainerd.Options{Snapshotter: esd.snapSocket, PlainHTTP: []string{host}, SandboxImage: host + "/pause:1"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	pod, err := ctd.RunPod(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("CRILazy", func(t *testing.T) {
		before := link.BodyBytes()
		if _, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: lazyRef}}); err != nil {
			t.Fatalf("PullImage %s: %v", lazyRef, err)
		}
		code, out, err := pod.Run(ctx, "sums", lazyRef, app.command...)
		if err != nil || code != 0 || out != app.expected {
			t.Fatalf("container: exit %d, %v, output\n%s\nwant\n%s", code, err, out, app.expected)
		}
		served := link.BodyBytes() - before
		t.Logf("pulled and ran: the registry served %d bytes of the image's %d (%.2f%%)", served, app.size, 100*float64(served)/float64(app.size))
		if served > app.size/10 {
			t.Errorf("the registry served %d bytes, more than a tenth of the image's %d", served, app.size)
		}
		// containerd's content store holds the manifest and the config
		// only: no layer was downloaded.
		content := ctd.Ctr("-n", "k8s.io", "content", "ls", "-q")
		if mounts := erofsMountsUnder(t, esd.snapRoot); len(mounts) != 1 {
			t.Errorf("erofs mounts under the snapshotter root: %v, want one", mounts)
		}
		checkNoLayersDownloaded(t, ctd, lazyRef, content)
	})

	t.Run("PlainImage", func(t *testing.T) {
		if _, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: plainRef}}); err != nil {
			t.Fatalf("PullImage %s: %v", plainRef, err)
		}
		code, out, err := pod.Run(ctx, "plain", plainRef, app.command...)
		if err != nil || code != 0 || out != app.expected {
			t.Fatalf("container: exit %d, %v, output\n%s\nwant\n%s", code, err, out, app.expected)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		st := esd.status()
		if st.Counters[`snapshotter_operations_total{op=prepare,result=ok}`] == 0 || st.Counters[`snapshotter_operations_total{op=mounts,result=ok}`]+st.Counters[`snapshotter_operations_total{op=prepare,result=ok}`] < 2 {
			t.Errorf("snapshotter operations not counted: %v", st.Counters)
		}
	})
}

// checkNoLayersDownloaded checks that containerd's content store (the
// digests listed) holds none of the erofsd image's layers.
func checkNoLayersDownloaded(t *testing.T, ctd *testcontainerd.Containerd, ref, content string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if strings.Contains(content, l.Digest.String()) {
			t.Errorf("layer %s (%s, %d bytes) was downloaded into containerd's content store", l.Digest, l.MediaType, l.Size)
		}
	}
	if !strings.Contains(content, m.Config.Digest.String()) {
		t.Errorf("the config %s is not in the content store:\n%s", m.Config.Digest, content)
	}
}
