package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testcontainerd"
	"github.com/erofsd/erofsd/internal/testutil/testconvert"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/erofsd/erofsd/oci"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	criSocket  string // the CRI image proxy's, if on
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

// erofsdOptions configure startErofsd.
type erofsdOptions struct {
	plainHosts  []string // registry hosts reached over plain HTTP
	criUpstream string   // containerd's socket: serve the CRI image proxy
	extra       []string // more flags
}

// startErofsd runs erofsd supervise with the snapshotter. Its docker
// config is empty: registry credentials come from the CRI proxy only.
func startErofsd(t testing.TB, bins map[string]string, opts erofsdOptions) *erofsdProc {
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
		"--snapshotter-plain-http-hosts", strings.Join(opts.plainHosts, ","))
	if opts.criUpstream != "" {
		e.criSocket = filepath.Join(dir, "cri.sock")
		e.cmd.Args = append(e.cmd.Args, "--cri-image-proxy-socket", e.criSocket, "--cri-image-proxy-upstream", opts.criUpstream)
	}
	e.cmd.Args = append(e.cmd.Args, opts.extra...)
	e.cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(dir, "docker"))
	e.cmd.Stderr = e
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // killed as a group if it hangs
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered before containerd's cleanup (which runs first) so that
	// containerd unmounts through a running snapshotter.
	t.Cleanup(func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { e.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Error("erofsd supervise did not stop within 20s of SIGTERM")
			syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
			e.cmd.Process.Kill()
			<-exited
		}
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

	// A registry that wants credentials, serving the same storage.
	authReg := testregistry.Start(t, testregistry.Options{User: "puller", Password: "secret", Root: reg.Root})
	authHost := authReg.Host
	// Images of their own (the same layers as another's would share
	// its snapshots, already there).
	privateData := map[string][]byte{}
	for i, repo := range []string{"private", "private2"} {
		privateData[repo] = testoci.Random(uint64(60+i), 8<<20)
		push(t, host+"/"+repo+":src", testcontainerd.Image(t, []string{"/bin/sh", "-c"},
			testoci.Layer(t, []testoci.Entry{{Name: "who", Body: []byte(repo + "\n")}, {Name: "data", Body: privateData[repo]}})))
		testconvert.InRegistry(t, "oci://"+host+"/"+repo+":src", "oci://"+host+"/"+repo+":erofs", 0)
	}

	ctdDir := testcontainerd.NewDir(t)
	esd := startErofsd(t, bins, erofsdOptions{plainHosts: []string{host, authHost}, criUpstream: filepath.Join(ctdDir, "c.sock")})
	ctd := testcontainerd.Start(t, testcontainerd.Options{Snapshotter: esd.snapSocket, PlainHTTP: []string{host, authHost},
		SandboxImage: host + "/pause:1", Dir: ctdDir})
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

	t.Run("TraceContainer", func(t *testing.T) {
		if _, err := erofstrace.Open(0, nil); errors.Is(err, erofstrace.ErrUnsupported) {
			t.Skipf("no tracing here: %v", err)
		}
		// The image is pulled and mounted (CRILazy): a container of it,
		// traced from its start, reads small1, then small2, never big.
		// CRILazy read them already: the page cache goes first, so that
		// the reads reach EROFS again.
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
		l, _, err := traceContainer(ctx, esd, ctd, pod, lazyRef, "traced", app.command...)
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, e := range l.Entries {
			if strings.HasPrefix(e.Path, "/data/") {
				order = append(order, e.Path)
			}
		}
		if strings.Join(order, " ") != "/data/small1 /data/small2" {
			t.Fatalf("traced reads of /data: %q, want small1 then small2\n%s", order, l.Encode())
		}
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

	t.Run("CtrPull", func(t *testing.T) {
		// erofsctl image pull, then stock ctr run, in a namespace of its own.
		out, err := exec.CommandContext(ctx, bins["erofsctl"], "image", "pull", "--address", ctd.Address, "--namespace", "t1", "--plain-http", lazyRef).CombinedOutput()
		if err != nil {
			t.Fatalf("erofsctl image pull: %v\n%s", err, out)
		}
		got := ctd.Ctr(append([]string{"-n", "t1", "run", "--rm", "--snapshotter", "erofsd", lazyRef, "ctr-run"}, app.command...)...)
		if got != app.expected {
			t.Fatalf("ctr run printed\n%s\nwant\n%s", got, app.expected)
		}
		checkNoLayersDownloaded(t, ctd, lazyRef, ctd.Ctr("-n", "t1", "content", "ls", "-q"))

		// An image of format 1 gets the re-convert message.
		v1ref := host + "/old:v1"
		push(t, v1ref, formatOneImage(t))
		out, err = exec.CommandContext(ctx, bins["erofsctl"], "image", "pull", "--address", ctd.Address, "--namespace", "t1", "--plain-http", v1ref).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "format 1") || !strings.Contains(string(out), "convert it again") {
			t.Errorf("pulling a format 1 image: %v\n%s", err, out)
		}
		// The snapshotter's mounts are containerd's: erofsctl umount refuses.
		for _, mp := range erofsMountsUnder(t, esd.snapRoot) {
			if out, err := esd.ctl("umount", mp); err == nil || !strings.Contains(out, "containerd") {
				t.Errorf("erofsctl umount %s of the snapshotter: %v\n%s", mp, err, out)
			}
		}
		ctd.Ctr("-n", "t1", "image", "rm", "--sync", lazyRef)
	})

	t.Run("MountInvariant", func(t *testing.T) {
		// A container holds the image's filesystem; its mount under the
		// snapshot goes (as after an accident, or a reboot's empty
		// directory): the next container must get the image again, never
		// an empty root filesystem.
		holder, err := pod.Start(ctx, "holder", lazyRef, "/bin/busybox", "sleep", "600")
		if err != nil {
			t.Fatal(err)
		}
		defer ctd.Runtime.RemoveContainer(context.WithoutCancel(ctx), &rt.RemoveContainerRequest{ContainerId: holder})
		defer ctd.Runtime.StopContainer(context.WithoutCancel(ctx), &rt.StopContainerRequest{ContainerId: holder, Timeout: 1})
		mounts := erofsMountsUnder(t, esd.snapRoot)
		if len(mounts) != 1 {
			t.Fatalf("erofs mounts under the snapshotter root: %v, want one", mounts)
		}
		if err := syscall.Unmount(mounts[0], syscall.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
		code, out, err := pod.Run(ctx, "after-umount", lazyRef, app.command...)
		if err != nil || code != 0 || out != app.expected {
			t.Fatalf("container after the mount went: exit %d, %v, output\n%s\nwant\n%s", code, err, out, app.expected)
		}
		if got := erofsMountsUnder(t, esd.snapRoot); len(got) != 1 || got[0] != mounts[0] {
			t.Errorf("erofs mounts %v, want %s again", got, mounts[0])
		}
		// The container that held the old filesystem reads on.
		resp, err := ctd.Runtime.ExecSync(ctx, &rt.ExecSyncRequest{ContainerId: holder, Cmd: []string{"/bin/sh", "-c", "cd /data && sha256sum small1 small2"}, Timeout: 60})
		if err != nil || resp.ExitCode != 0 || string(resp.Stdout) != app.expected {
			t.Errorf("exec in the holder: %v, %+v", err, resp)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		st := esd.status()
		if st.Counters[`snapshotter_operations_total{op=prepare,result=ok}`] == 0 || st.Counters[`snapshotter_operations_total{op=mounts,result=ok}`]+st.Counters[`snapshotter_operations_total{op=prepare,result=ok}`] < 2 {
			t.Errorf("snapshotter operations not counted: %v", st.Counters)
		}
	})

	t.Run("Restarts", func(t *testing.T) {
		// A container streams the large file through a slow link while
		// erofsd is killed with -9 (the supervisor restarts it), then
		// restarted for an upgrade (SIGHUP), then containerd restarts.
		link.SetLink(0, 8<<20)
		defer link.SetLink(0, 0)
		id, err := pod.Start(ctx, "stream", lazyRef, "/bin/sh", "-c", "sha256sum /data/big")
		if err != nil {
			t.Fatal(err)
		}
		defer ctd.Runtime.RemoveContainer(context.WithoutCancel(ctx), &rt.RemoveContainerRequest{ContainerId: id})
		list, err := esd.ctl("ls", "--json")
		if err != nil || !strings.Contains(list, "\"containers\"") {
			t.Errorf("erofsctl ls does not name the container's snapshot: %v\n%s", err, list)
		}
		before := link.BodyBytes()
		pollUntil(t, 30*time.Second, "the stream to start", func() bool { return link.BodyBytes()-before > 4<<20 })
		pid := esd.status().PID
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, 30*time.Second, "erofsd to be restarted", func() bool {
			st, err := esd.api.Status(ctx)
			return err == nil && st.PID != pid
		})
		esd.cmd.Process.Signal(syscall.SIGHUP)
		ctd.Restart()
		code, err := pod.Wait(ctx, id)
		out, _ := pod.Output("stream")
		if want := sha256Hex(app.big) + "  /data/big\n"; err != nil || code != 0 || out != want {
			t.Fatalf("streaming container: exit %d, %v, output %q, want %q", code, err, out, want)
		}
		if esd.status().PID == pid {
			t.Error("erofsd was not restarted")
		}
		// After all that, a new container of the image starts.
		code, out, err = pod.Run(ctx, "after-restarts", lazyRef, app.command...)
		if err != nil || code != 0 || out != app.expected {
			t.Fatalf("container after the restarts: exit %d, %v, output\n%s", code, err, out)
		}
	})

	t.Run("PullSecrets", func(t *testing.T) {
		// kubelet pulls through erofsd's CRI image proxy with a pod's
		// pull secret: containerd and erofsd both read the private
		// registry with it.
		conn, err := grpc.NewClient("unix://"+esd.criSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		kubelet := rt.NewImageServiceClient(conn)
		auth := &rt.AuthConfig{Username: "puller", Password: "secret", ServerAddress: "http://" + authHost}
		ref := authHost + "/private:erofs"
		if _, err := kubelet.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: ref}, Auth: auth}); err != nil {
			t.Fatalf("PullImage %s through the proxy: %v", ref, err)
		}
		code, out, err := pod.Run(ctx, "private", ref, "/bin/busybox", "cat", "/who")
		if err != nil || code != 0 || out != "private\n" {
			t.Fatalf("private image: exit %d, %v, output %q", code, err, out)
		}
		// Straight to containerd, the secret stays there: erofsd cannot
		// read the image, and the pull fails.
		if _, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: authHost + "/private2:erofs"}, Auth: auth}); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Errorf("a pull that bypassed the proxy: %v", err)
		}
		// After a crash, the restarted daemon still reads the private
		// image (data it had not fetched yet).
		pid := esd.status().PID
		syscall.Kill(pid, syscall.SIGKILL)
		pollUntil(t, 30*time.Second, "erofsd to be restarted", func() bool {
			st, err := esd.api.Status(ctx)
			return err == nil && st.PID != pid
		})
		code, out, err = pod.Run(ctx, "private-data", ref, "/bin/sh", "-c", "sha256sum /data")
		if want := sha256Hex(privateData["private"]) + "  /data\n"; err != nil || code != 0 || out != want {
			t.Errorf("private image after a restart: exit %d, %v, output %q", code, err, out)
		}
		if _, err := kubelet.RemoveImage(ctx, &rt.RemoveImageRequest{Image: &rt.ImageSpec{Image: ref}}); err != nil {
			t.Error(err)
		}
	})

	t.Run("HostileImages", func(t *testing.T) {
		// An erofsd image whose config gives another image's layers as
		// its diff IDs would have containerd skip those layers of the
		// other image, pulled later, and run this one's content in its
		// place: an erofsd image, or a plain one never converted.
		victim, plainVictim := host+"/victim:erofs", host+"/victim:plain"
		push(t, host+"/victim:src", whoImage(t, "victim"))
		testconvert.InRegistry(t, "oci://"+host+"/victim:src", "oci://"+victim, 0)
		// As many layers as the forger's (two blobs and a bootstrap).
		extra, err := mutate.AppendLayers(whoImage(t, "victim"), testoci.Layer(t, []testoci.Entry{{Name: "extra", Body: []byte("x")}}))
		if err != nil {
			t.Fatal(err)
		}
		push(t, plainVictim, extra)
		push(t, host+"/evil:src", whoImage(t, "evil"))
		testconvert.InRegistry(t, "oci://"+host+"/evil:src", "oci://"+host+"/evil:erofs", 0)
		for i, v := range []string{victim, plainVictim} {
			forged := withDiffIDsOf(t, host+"/evil:erofs", v)
			push(t, host+"/evil:forged", forged)
			_, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: host + "/evil:forged"}})
			// Refused at the first layer containerd does not skip: its
			// chain is not its digests', or it sits on a plain layer.
			if err == nil || !strings.Contains(err.Error(), "diff IDs are not its layers' digests") && !strings.Contains(err.Error(), "not an erofsd blob") {
				t.Errorf("pulling an image with the diff IDs of %s: %v", v, err)
			}
			if _, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: v}}); err != nil {
				t.Fatalf("PullImage %s: %v", v, err)
			}
			if code, out, err := pod.Run(ctx, fmt.Sprintf("victim%d", i), v, "/bin/busybox", "cat", "/who"); err != nil || code != 0 || out != "victim\n" {
				t.Errorf("%s after the forged pull: exit %d, %v, output %q", v, code, err, out)
			}
		}
		// No client relabels erofsd's snapshots (a bootstrap taken for a
		// blob would leave its containers on an empty directory).
		top := ctd.Ctr("-n", "k8s.io", "snapshots", "--snapshotter", "erofsd", "ls")
		bootstrap := ""
		for _, line := range strings.Split(top, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[2] == "Committed" {
				if info := ctd.Ctr("-n", "k8s.io", "snapshots", "--snapshotter", "erofsd", "info", f[0]); strings.Contains(info, `"containerd.io/snapshot/erofsd.remote": "bootstrap"`) {
					bootstrap = f[0]
				}
			}
		}
		if bootstrap == "" {
			t.Fatalf("no bootstrap snapshot in\n%s", top)
		}
		for _, label := range []string{"containerd.io/snapshot/erofsd.remote=", "containerd.io/snapshot/erofsd.image=" + host + "/evil@sha256:" + strings.Repeat("0", 64)} {
			if out, err := ctd.TryCtr("-n", "k8s.io", "snapshots", "--snapshotter", "erofsd", "label", bootstrap, label); err == nil {
				t.Errorf("ctr snapshots label %s %s: allowed\n%s", bootstrap, label, out)
			}
		}
		// A plain image's annotations cannot make its layer an erofsd
		// bootstrap (and send erofsd to a registry of its choice).
		annotated, err := mutate.Append(whoImage(t, "annotated"), mutate.Addendum{
			Layer: testoci.Layer(t, []testoci.Entry{{Name: "who2", Body: []byte("annotated\n")}}),
			Annotations: map[string]string{"containerd.io/snapshot/erofsd.remote": "bootstrap",
				"containerd.io/snapshot/erofsd.image": "example.invalid/x@sha256:" + strings.Repeat("0", 64)}})
		if err != nil {
			t.Fatal(err)
		}
		push(t, host+"/annotated:v1", annotated)
		if _, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: host + "/annotated:v1"}}); err != nil {
			t.Fatal(err)
		}
		if code, out, err := pod.Run(ctx, "annotated", host+"/annotated:v1", "/bin/busybox", "cat", "/who2"); err != nil || code != 0 || out != "annotated\n" {
			t.Errorf("annotated image: exit %d, %v, output %q", code, err, out)
		}
		if strings.Contains(esd.log(), "example.invalid") {
			t.Error("erofsd followed an image's annotation to a registry")
		}
		for _, ref := range []string{victim, plainVictim, host + "/annotated:v1"} {
			ctd.Images.RemoveImage(ctx, &rt.RemoveImageRequest{Image: &rt.ImageSpec{Image: ref}})
		}
	})

	t.Run("RemovalAndLeaks", func(t *testing.T) {
		if err := pod.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		for _, ref := range []string{lazyRef, plainRef} {
			if _, err := ctd.Images.RemoveImage(ctx, &rt.RemoveImageRequest{Image: &rt.ImageSpec{Image: ref}}); err != nil {
				t.Fatalf("RemoveImage %s: %v", ref, err)
			}
		}
		released := func() bool {
			st, err := esd.api.Status(ctx)
			return err == nil && st.Images == 0 && st.Mounts == 0 && len(erofsMountsUnder(t, esd.snapRoot)) == 0
		}
		pollUntil(t, 30*time.Second, "erofsd to release the image", released)
		baseSnapshots := snapshotDirs(t, esd.snapRoot)
		pid := esd.status().PID
		baseFDs := fdCount(t, pid)

		const cycles = 20
		for i := range cycles {
			if _, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: lazyRef}}); err != nil {
				t.Fatalf("cycle %d: PullImage: %v", i, err)
			}
			p, err := ctd.RunPod(ctx, fmt.Sprintf("cycle%d", i))
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			code, out, err := p.Run(ctx, "sums", lazyRef, app.command...)
			if err != nil || code != 0 || out != app.expected {
				t.Fatalf("cycle %d: exit %d, %v, output\n%s", i, code, err, out)
			}
			if err := p.Remove(ctx); err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			if _, err := ctd.Images.RemoveImage(ctx, &rt.RemoveImageRequest{Image: &rt.ImageSpec{Image: lazyRef}}); err != nil {
				t.Fatalf("cycle %d: RemoveImage: %v", i, err)
			}
		}
		pollUntil(t, 30*time.Second, "erofsd to release the image", released)
		if esd.status().PID != pid {
			t.Fatal("erofsd restarted during the cycles")
		}
		if got := snapshotDirs(t, esd.snapRoot); got > baseSnapshots {
			t.Errorf("%d snapshot directories after %d cycles, %d before", got, cycles, baseSnapshots)
		}
		if left, _ := os.ReadDir(filepath.Join(esd.dir, "state", "bootstraps")); len(left) != 0 {
			t.Errorf("fetched bootstraps left: %d", len(left))
		}
		// A few fds come and go (connections, cache files being closed).
		if got := fdCount(t, pid); got > baseFDs+8 {
			out, _ := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", pid)).CombinedOutput()
			t.Errorf("erofsd has %d fds after %d cycles, %d before:\n%s", got, cycles, baseFDs, out)
		}
	})
}

// whoImage is busybox and /who holding who.
func whoImage(t testing.TB, who string) v1.Image {
	t.Helper()
	return testcontainerd.Image(t, []string{"/bin/sh", "-c"}, testoci.Layer(t, []testoci.Entry{{Name: "who", Body: []byte(who + "\n")}}))
}

// withDiffIDsOf returns the image at ref with the diff IDs of the image
// at other: a forged config.
func withDiffIDsOf(t testing.TB, ref, other string) v1.Image {
	t.Helper()
	img, victim := remoteImage(t, ref), remoteImage(t, other)
	vcf, err := victim.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = vcf.RootFS.DiffIDs
	forged, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return forged
}

func remoteImage(t testing.TB, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// snapshotDirs counts the overlay snapshotter's snapshot directories.
func snapshotDirs(t testing.TB, root string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func fdCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// pollUntil polls cond until it holds or limit passes.
func pollUntil(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// formatOneImage is an image in erofsd's format 1 (its own config and
// layer media types), which containerd cannot run.
func formatOneImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("not really a bootstrap"), oci.V1BootstrapMediaType))
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), oci.V1ConfigMediaType)
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
