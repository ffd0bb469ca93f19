package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"
)

// BuildStatic builds the main package pkg (an import path, or a path
// relative to the test's directory) as a static linux/amd64 binary for the
// guest (CGO_ENABLED=0, stripped) into a temporary directory of t, and
// returns the binary's path.
func BuildStatic(t testing.TB, pkg string) (string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("vm: go build %s: %v\n%s", pkg, err, msg)
	}
	return out, nil
}
