package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/require"
)

// ErrNoKernel is wrapped by [Kernel]'s error when no test kernel is cached.
var ErrNoKernel = errors.New("vm: no test kernel cached")

// kernelScript is the build script, relative to the module root.
const kernelScript = "scripts/build-test-kernel.sh"

// Kernel returns the path of the test kernel without building it:
// $EROFSD_TEST_KERNEL if set, else the bzImage that scripts/build-test-kernel.sh
// cached in ${EROFSD_KERNEL_CACHE:-/var/cache/erofsd/test-kernel}/<key>/ for
// the installed linux-source-6.1 and the current kernel.config (the script
// computes the key; see its header). The error wraps [ErrNoKernel] when no
// such kernel exists.
func Kernel() (string, error) {
	if p := os.Getenv("EROFSD_TEST_KERNEL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("vm: EROFSD_TEST_KERNEL: %w", err)
		}
		return p, nil
	}
	path, msg, err := runKernelScript(context.Background(), nil, "--check")
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return "", fmt.Errorf("%w (%s)", ErrNoKernel, msg)
	}
	return path, err
}

// BuildKernel runs scripts/build-test-kernel.sh, which installs the
// packages it needs if missing (as root) and builds the kernel unless it is
// cached: about 4 minutes on 2 cores, once. Progress goes to progress,
// which may be nil. It returns the bzImage's path.
func BuildKernel(ctx context.Context, progress io.Writer) (string, error) {
	path, _, err := runKernelScript(ctx, progress)
	return path, err
}

// Require returns the test kernel for a test that boots guests, or skips
// the test with the reason it cannot run: the host is not linux/amd64, the
// test is not root, qemu-system-x86_64, mkfs.ext4 or /bin/busybox
// (busybox-static) is missing, or no kernel is cached. With
// EROFSD_BUILD_KERNEL=1, or in CI (CI=true), a missing kernel is built
// instead; in CI a missing tool fails the test, as .ci/run installs them.
func Require(t testing.TB) string {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("vm: guests run on linux/amd64 hosts, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	// Root: the kernel cache and its build belong to root.
	require.Host(t, require.Root, require.Tool("qemu-system-x86_64", "qemu-system-x86"),
		require.Tool("mkfs.ext4", "e2fsprogs"), require.Tool(busybox, "busybox-static"))
	kernel, err := Kernel()
	if err == nil {
		return kernel
	}
	if !errors.Is(err, ErrNoKernel) {
		t.Fatal(err)
	}
	if !ci && os.Getenv("EROFSD_BUILD_KERNEL") != "1" {
		t.Skipf("%v; build it once with %s (about 4 min) or set EROFSD_BUILD_KERNEL=1", err, kernelScript)
	}
	t.Logf("%v: building it (about 4 min, cached afterwards)", err)
	kernel, err = BuildKernel(t.Context(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	return kernel
}

// runKernelScript runs the build script with args and returns the last line
// of its stdout and of its stderr.
func runKernelScript(ctx context.Context, progress io.Writer, args ...string) (path, msg string, err error) {
	script, err := findKernelScript()
	if err != nil {
		return "", "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&stderr, progress)
	}
	err = cmd.Run()
	msg = lastLine(stderr.String())
	if err != nil {
		return "", msg, fmt.Errorf("vm: %s: %w: %s", kernelScript, err, msg)
	}
	path = lastLine(stdout.String())
	if path == "" {
		return "", msg, fmt.Errorf("vm: %s printed no kernel path", kernelScript)
	}
	return path, msg, nil
}

// findKernelScript looks for the script in the module root above the
// working directory, which for tests is their package directory.
func findKernelScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, kernelScript)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("vm: %s not found above the working directory", kernelScript)
		}
		dir = parent
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}
