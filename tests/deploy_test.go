package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/erofsd/erofsd/internal/testutil/require"
)

// TestSystemdUnitVerifies lints deploy/systemd/erofsd.service with this
// machine's systemd (Debian 12's 252), pointing ExecStart at a built
// erofsd so that the check includes the binary.
func TestSystemdUnitVerifies(t *testing.T) {
	require.Host(t, require.Tool("systemd-analyze", "systemd"))
	analyze, _ := exec.LookPath("systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "erofsd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/erofsd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("../deploy/systemd/erofsd.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "Type=notify") || !strings.Contains(string(unit), "erofsd supervise") {
		t.Fatal("the unit should run erofsd supervise as a notify service")
	}
	if !strings.Contains(string(unit), "FileDescriptorStoreMax=") {
		t.Error("the unit should enable the fd store (FileDescriptorStoreMax=)")
	}
	path := filepath.Join(dir, "erofsd.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/erofsd", bin)), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The drop-in with FileDescriptorStorePreserve= (systemd 254+),
	// next to the unit where systemd-analyze finds it: clean on 254+;
	// before, the key must be the only complaint (make install leaves
	// the drop-in out there).
	dropIn, err := os.ReadFile("../deploy/systemd/erofsd.service.d/fdstore-preserve.conf")
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(path+".d", 0o755)
	os.WriteFile(filepath.Join(path+".d", "fdstore-preserve.conf"), dropIn, 0o644)
	out, err = exec.Command(analyze, "verify", path).CombinedOutput()
	if v := systemdVersion(t); v >= 254 {
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("systemd %d: verify with the drop-in: %v\n%s", v, err, out)
		}
	} else {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], "Unknown key") || !strings.Contains(lines[0], "FileDescriptorStorePreserve") {
			t.Fatalf("systemd %d: verify with the drop-in: want only the unknown FileDescriptorStorePreserve key, got %v\n%s", v, err, out)
		}
		t.Logf("systemd %d lacks FileDescriptorStorePreserve= (254+): the drop-in is installed only on newer systemd", v)
	}
}

// systemdVersion is the major version systemctl reports (0 if unknown).
func systemdVersion(t *testing.T) int {
	out, err := exec.Command("systemctl", "--version").Output()
	if err != nil {
		return 0
	}
	var v int
	fmt.Sscanf(string(out), "systemd %d", &v)
	return v
}

// TestContainerdConfigs loads deploy/containerd's snippets: the version 2
// one with this machine's containerd (1.6), which must take erofsd as its
// CRI snapshotter; both are checked for the settings that make pulls
// lazy.
func TestContainerdConfigs(t *testing.T) {
	for _, file := range []string{"config-v2.toml", "config-v3.toml"} {
		data, err := os.ReadFile(filepath.Join("../deploy/containerd", file))
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if _, err := toml.Decode(string(data), &cfg); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, want := range []string{`address = "/run/erofsd/snapshotter.sock"`, `snapshotter = "erofsd"`, `disable_snapshot_annotations = false`} {
			if !strings.Contains(string(data), want) {
				t.Errorf("%s lacks %s", file, want)
			}
		}
	}
	unit, err := os.ReadFile("../deploy/systemd/erofsd.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "--snapshotter-socket /run/erofsd/snapshotter.sock") || !strings.Contains(string(unit), "Before=containerd.service") {
		t.Error("the unit should serve the snapshotter on the socket the snippets name, before containerd starts")
	}

	require.Host(t, require.Tool("containerd", "containerd"))
	out, err := exec.Command("containerd", "--config", "../deploy/containerd/config-v2.toml", "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	dump := string(out)
	for _, want := range []string{"[proxy_plugins.erofsd]", `address = "/run/erofsd/snapshotter.sock"`, `snapshotter = "erofsd"`, "disable_snapshot_annotations = false"} {
		if !strings.Contains(dump, want) {
			t.Errorf("containerd's view of config-v2.toml lacks %s", want)
		}
	}
}
