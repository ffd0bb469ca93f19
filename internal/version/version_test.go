package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	const rev = "e0b33be1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7"
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "dev"},
		{"empty", &debug.BuildInfo{}, "dev"},
		{"devel without vcs", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"release tag", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"},
			Settings: vcs("vcs.revision", rev, "vcs.modified", "false")}, "v1.2.3"},
		{"pseudo-version wins over revision", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20250101120000-e0b33be1c2d3+dirty"},
			Settings: vcs("vcs.revision", rev, "vcs.modified", "true")}, "v0.0.0-20250101120000-e0b33be1c2d3+dirty"},
		{"devel, clean revision", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs", "git", "vcs.revision", rev, "vcs.modified", "false")}, "e0b33be1c2d3"},
		{"devel, modified revision", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs", "git", "vcs.revision", rev, "vcs.modified", "true")}, "e0b33be1c2d3-dirty"},
		{"empty version, revision", &debug.BuildInfo{Settings: vcs("vcs.revision", rev)}, "e0b33be1c2d3"},
		{"short revision kept whole", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs.revision", "abc123")}, "abc123"},
		{"modified without revision", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs.modified", "true")}, "dev"},
	} {
		if got := fromBuildInfo(tc.info); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestOverrideWins(t *testing.T) {
	old := override
	defer func() { override = old }()
	override = "v9.9.9-custom"
	if got := String(); got != "v9.9.9-custom" {
		t.Fatalf("String() = %q with override set", got)
	}
	override = ""
	if got := String(); got == "" {
		t.Fatal("String() is empty without override")
	}
}

// TestLinkTimeOverride builds this package's test binary with -X on the
// documented variable path and checks that String returns the linked
// value.
func TestLinkTimeOverride(t *testing.T) {
	if os.Getenv("EROFSD_VERSION_PRINT") == "1" {
		os.Stdout.WriteString("version=" + String() + "\n")
		return
	}
	if testing.Short() {
		t.Skip("builds a test binary")
	}
	// go test puts its own GOROOT/bin first in PATH.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	bin := filepath.Join(t.TempDir(), "version.test")
	cmd := exec.Command(gobin, "test", "-c", "-o", bin,
		"-ldflags", "-X github.com/erofsd/erofsd/internal/version.override=v7.7.7-linked", ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	run := exec.Command(bin, "-test.run", "^TestLinkTimeOverride$", "-test.v")
	run.Env = append(os.Environ(), "EROFSD_VERSION_PRINT=1")
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "version=v7.7.7-linked\n") {
		t.Fatalf("linked binary prints:\n%s", out)
	}
}
