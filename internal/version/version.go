// Package version reports the version of the running binary: a value set
// at link time, else what the Go toolchain recorded in the build info.
package version

import "runtime/debug"

// override, when set at link time, wins over the build info:
//
//	go build -ldflags "-X github.com/erofsd/erofsd/internal/version.override=v1.2.3" ./cmd/...
var override string

// String returns the binary's version: the link-time override if set;
// else the main module's version when the toolchain knows one (a release
// tag, or a pseudo-version that Go 1.24 and later derive from the git
// checkout, "+dirty" when it had local changes); else the VCS revision,
// shortened to 12 characters, with "-dirty" for local changes; else "dev".
func String() string {
	if override != "" {
		return override
	}
	info, _ := debug.ReadBuildInfo()
	return fromBuildInfo(info)
}

// fromBuildInfo is String's choice from a build info (nil when the binary
// has none).
func fromBuildInfo(info *debug.BuildInfo) string {
	if info == nil {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "-dirty"
	}
	return rev
}
