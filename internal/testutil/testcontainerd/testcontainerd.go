// Package testcontainerd runs a private containerd for tests: Debian's
// real containerd and runc, with their own config, root, state and
// sockets in a short temp dir (never the system service), erofsd's
// snapshotter as the proxy plugin "erofsd" and the CRI plugin's
// snapshotter, test registries reached over plain HTTP, and a CRI client
// to drive it as kubelet does. Pods run on the host network: no CNI.
//
// The config follows ../shared/docs/containerd-testbed.md and
// docs/snapshotter-design.md §6.2 (restrict_oom_score_adj, cgroupfs,
// short socket paths).
package testcontainerd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/mountinfo"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Options configure a containerd.
type Options struct {
	// Snapshotter is erofsd's snapshotter socket; the CRI plugin then
	// pulls and runs with it. Empty: containerd's own overlayfs.
	Snapshotter string
	// PlainHTTP lists registry hosts (HOST:PORT) containerd reaches over
	// plain HTTP (certs.d/HOST/hosts.toml).
	PlainHTTP []string
	// SandboxImage is the pause image, in a test registry.
	SandboxImage string
	// Dir is where containerd keeps everything, its socket Dir/c.sock
	// (default: a new short temp dir); removed when the test ends.
	Dir string
}

// NewDir returns a new directory for Options.Dir, short enough for the
// sockets in it (t.TempDir's are not).
func NewDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// Containerd is a running private containerd.
type Containerd struct {
	Dir     string // the root of all its files
	Address string // its gRPC socket
	Runtime rt.RuntimeServiceClient
	Images  rt.ImageServiceClient

	t      testing.TB
	config string
	conn   *grpc.ClientConn
	cmd    *exec.Cmd
	exited chan struct{}
	logMu  sync.Mutex
	log    bytes.Buffer
}

// Start runs containerd until the test ends; the test skips (or, in CI,
// fails) without root, containerd, runc or ctr.
func Start(t testing.TB, opts Options) *Containerd {
	t.Helper()
	require.Host(t, require.Root, require.Tool("containerd", "containerd"), require.Tool("ctr", "containerd"), require.Tool("runc", "runc"))
	dir := opts.Dir
	if dir == "" {
		dir = NewDir(t)
	}
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "c.sock"), t: t, config: filepath.Join(dir, "config.toml")}
	t.Cleanup(c.cleanup)
	for _, d := range []string{"root", "state", "tmp", "runc", "cni/bin", "cni/net.d", "pods"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, host := range opts.PlainHTTP {
		hd := filepath.Join(dir, "certs.d", host)
		hosts := fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host, "http://"+host)
		if err := os.MkdirAll(hd, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(hd, "hosts.toml"), []byte(hosts), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(c.config, []byte(config(dir, opts)), 0o600); err != nil {
		t.Fatal(err)
	}
	c.start()
	return c
}

// config is containerd 1.6's configuration (version 2) for dir.
func config(dir string, opts Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version = 2\nroot = %q\nstate = %q\ntemp = %q\n", dir+"/root", dir+"/state", dir+"/tmp")
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n", dir+"/c.sock", dir+"/c.sock.ttrpc")
	snapshotter := "overlayfs"
	if opts.Snapshotter != "" {
		snapshotter = "erofsd"
		fmt.Fprintf(&b, "[proxy_plugins]\n  [proxy_plugins.erofsd]\n    type = \"snapshot\"\n    address = %q\n", opts.Snapshotter)
	}
	cri := `plugins."io.containerd.grpc.v1.cri"`
	fmt.Fprintf(&b, "[%s]\n  sandbox_image = %q\n  restrict_oom_score_adj = true\n", cri, opts.SandboxImage)
	fmt.Fprintf(&b, "  [%s.containerd]\n    snapshotter = %q\n    disable_snapshot_annotations = false\n", cri, snapshotter)
	fmt.Fprintf(&b, "    [%s.containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n", cri)
	fmt.Fprintf(&b, "      [%s.containerd.runtimes.runc.options]\n        SystemdCgroup = false\n        Root = %q\n", cri, dir+"/runc")
	fmt.Fprintf(&b, "  [%s.cni]\n    bin_dir = %q\n    conf_dir = %q\n", cri, dir+"/cni/bin", dir+"/cni/net.d")
	fmt.Fprintf(&b, "  [%s.registry]\n    config_path = %q\n", cri, dir+"/certs.d")
	return b.String()
}

func (c *Containerd) start() {
	t := c.t
	t.Helper()
	cmd := exec.Command("containerd", "--config", c.config)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "XDG_RUNTIME_DIR=") && !strings.HasPrefix(e, "TMPDIR=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "TMPDIR="+filepath.Join(c.Dir, "tmp"))
	cmd.Stdout, cmd.Stderr = c.logWriter(), c.logWriter()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(c.exited) }()
	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.conn, c.Runtime, c.Images = conn, rt.NewRuntimeServiceClient(conn), rt.NewImageServiceClient(conn)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Runtime.Version(ctx, &rt.VersionRequest{})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-c.exited:
			t.Fatalf("containerd exited: %v\n%s", cmd.ProcessState, c.Log())
		default:
		}
		if i == 300 {
			t.Fatalf("containerd does not answer on %s: %v\n%s", c.Address, err, c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops containerd (its shims, and so the containers, keep running).
func (c *Containerd) stop() {
	if c.cmd == nil {
		return
	}
	c.conn.Close()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// Restart stops containerd and starts it again on the same state, as an
// upgrade or a crash and restart of the service would; running
// containers carry on in their shims.
func (c *Containerd) Restart() {
	c.t.Helper()
	c.stop()
	c.start()
}

// Log returns what containerd printed.
func (c *Containerd) Log() string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return c.log.String()
}

type lockedWriter struct{ c *Containerd }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.logMu.Lock()
	defer w.c.logMu.Unlock()
	return w.c.log.Write(p)
}

func (c *Containerd) logWriter() lockedWriter { return lockedWriter{c} }

// Ctr runs ctr against this containerd and returns its output; it fails
// the test if ctr fails.
func (c *Containerd) Ctr(args ...string) string {
	c.t.Helper()
	out, err := c.TryCtr(args...)
	if err != nil {
		c.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TryCtr runs ctr and returns its output and error.
func (c *Containerd) TryCtr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.Address}, args...)...).CombinedOutput()
	return string(out), err
}

// Pod is a pod sandbox on the host network.
type Pod struct {
	ID     string
	c      *Containerd
	config *rt.PodSandboxConfig
}

// RunPod starts a pod sandbox (pulling the sandbox image if needed).
func (c *Containerd) RunPod(ctx context.Context, name string) (*Pod, error) {
	logDir := filepath.Join(c.Dir, "pods", name)
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	cfg := &rt.PodSandboxConfig{
		Metadata:     &rt.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"},
		LogDirectory: logDir,
		Linux: &rt.LinuxPodSandboxConfig{SecurityContext: &rt.LinuxSandboxSecurityContext{
			NamespaceOptions: &rt.NamespaceOption{Network: rt.NamespaceMode_NODE}}},
	}
	resp, err := c.Runtime.RunPodSandbox(ctx, &rt.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return nil, fmt.Errorf("RunPodSandbox %s: %w", name, err)
	}
	return &Pod{ID: resp.PodSandboxId, c: c, config: cfg}, nil
}

// Remove stops and removes the pod and its containers.
func (p *Pod) Remove(ctx context.Context) error {
	if _, err := p.c.Runtime.StopPodSandbox(ctx, &rt.StopPodSandboxRequest{PodSandboxId: p.ID}); err != nil {
		return err
	}
	_, err := p.c.Runtime.RemovePodSandbox(ctx, &rt.RemovePodSandboxRequest{PodSandboxId: p.ID})
	return err
}

// Start creates and starts a container of image running args (the
// image's entrypoint when args is empty) and returns its id.
func (p *Pod) Start(ctx context.Context, name, image string, args ...string) (string, error) {
	id, err := p.Create(ctx, name, image, args...)
	if err != nil {
		return "", err
	}
	if _, err := p.c.Runtime.StartContainer(ctx, &rt.StartContainerRequest{ContainerId: id}); err != nil {
		return "", fmt.Errorf("StartContainer %s: %w", name, err)
	}
	return id, nil
}

// Create creates a container of image running args, not started, and
// returns its id.
func (p *Pod) Create(ctx context.Context, name, image string, args ...string) (string, error) {
	cfg := &rt.ContainerConfig{Metadata: &rt.ContainerMetadata{Name: name}, Image: &rt.ImageSpec{Image: image},
		Command: args, LogPath: name + ".log"}
	cc, err := p.c.Runtime.CreateContainer(ctx, &rt.CreateContainerRequest{PodSandboxId: p.ID, SandboxConfig: p.config, Config: cfg})
	if err != nil {
		return "", fmt.Errorf("CreateContainer %s: %w", name, err)
	}
	return cc.ContainerId, nil
}

// Wait waits for a container to exit and returns its exit code.
func (p *Pod) Wait(ctx context.Context, id string) (int32, error) {
	for {
		st, err := p.c.Runtime.ContainerStatus(ctx, &rt.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return 0, err
		}
		if st.Status.State == rt.ContainerState_CONTAINER_EXITED {
			return st.Status.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("container %s still running: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Output returns what a container wrote to stdout and stderr so far,
// from its CRI log ("TIMESTAMP STREAM P|F TEXT" lines).
func (p *Pod) Output(name string) (string, error) {
	f, err := os.Open(filepath.Join(p.config.LogDirectory, name+".log"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	var out strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 4)
		if len(fields) < 3 {
			continue
		}
		if len(fields) == 4 {
			out.WriteString(fields[3])
		}
		if fields[2] == "F" {
			out.WriteByte('\n')
		}
	}
	return out.String(), sc.Err()
}

// Run runs a container to its end and returns its exit code and output;
// the container is removed.
func (p *Pod) Run(ctx context.Context, name, image string, args ...string) (int32, string, error) {
	id, err := p.Start(ctx, name, image, args...)
	if err != nil {
		return 0, "", err
	}
	defer p.c.Runtime.RemoveContainer(context.WithoutCancel(ctx), &rt.RemoveContainerRequest{ContainerId: id})
	code, err := p.Wait(ctx, id)
	if err != nil {
		return 0, "", err
	}
	out, err := p.Output(name)
	return code, out, err
}

// cleanup removes every pod and container, stops containerd and its
// shims, unmounts what is left under Dir and removes it with the
// containers' cgroups.
func (c *Containerd) cleanup() {
	t := c.t
	var ids []string
	if c.cmd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if pods, err := c.Runtime.ListPodSandbox(ctx, &rt.ListPodSandboxRequest{}); err == nil {
			for _, p := range pods.Items {
				ids = append(ids, p.Id)
				c.Runtime.StopPodSandbox(ctx, &rt.StopPodSandboxRequest{PodSandboxId: p.Id})
				c.Runtime.RemovePodSandbox(ctx, &rt.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
		}
		if ctrs, err := c.Runtime.ListContainers(ctx, &rt.ListContainersRequest{}); err == nil {
			for _, ct := range ctrs.Containers {
				ids = append(ids, ct.Id)
			}
		}
		cancel()
		if t.Failed() {
			t.Logf("containerd log:\n%s", tail(c.Log(), 60))
		}
		c.stop()
	}
	killShims(c.Address)
	if ents, err := mountinfo.Read(); err == nil {
		var under []string
		for _, e := range ents {
			if e.MountPoint == c.Dir || strings.HasPrefix(e.MountPoint, c.Dir+"/") {
				under = append(under, e.MountPoint)
			}
		}
		slices.Reverse(under)
		for _, mp := range under {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	removeCgroups(ids)
	if err := os.RemoveAll(c.Dir); err != nil {
		t.Logf("removing %s: %v", c.Dir, err)
	}
}

// killShims kills the runc shims of the containerd at address, and so
// their containers.
func killShims(address string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if i := slices.Index(args, "-address"); i >= 0 && i+1 < len(args) && args[i+1] == address {
			var pid int
			fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeCgroups removes the cgroup directories containerd made for the
// pods and containers (cgroupfs driver: <controller>/k8s.io/<id> on
// cgroup v1, k8s.io/<id> on v2).
func removeCgroups(ids []string) {
	for _, id := range ids {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io/" + id)
		dirs = append(dirs, "/sys/fs/cgroup/k8s.io/"+id)
		for _, d := range dirs {
			os.Remove(d)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
