// Package require skips tests on hosts that cannot run them: a test names
// what it needs, each need is a probe returning nil or a
// *hostcap.Missing, and Host skips with the reason. A need that installing
// a package would meet fails the test instead when CI=true: CI installs
// what the tests need, so a skip there would hide a broken setup.
//
//	require.Host(t, require.Root, require.FileBackedErofs)
//	require.Host(t, func() error { return fanotify.Supported(t.TempDir()) })
package require

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/erofsd/erofsd/internal/hostcap"
	"github.com/erofsd/erofsd/internal/kmount"
)

// Need is a probe of the host.
type Need func() error

// Host skips t (or fails it, see the package doc) unless every need is
// met; an error that is not a *hostcap.Missing fails t.
func Host(t testing.TB, needs ...Need) {
	t.Helper()
	for _, need := range needs {
		err := need()
		if err == nil {
			continue
		}
		var m *hostcap.Missing
		switch {
		case !errors.As(err, &m):
			t.Fatalf("probing the host: %v", err)
		case m.Installable && os.Getenv("CI") == "true":
			t.Fatalf("%v (CI installs it: see scripts/install-deps.sh)", err)
		default:
			t.Skip(err)
		}
	}
}

// Root needs the test to run as root.
func Root() error { return hostcap.Root("this test") }

// FileBackedErofs needs file-backed EROFS mounts (root, Linux 6.12+).
func FileBackedErofs() error { return kmount.Supported() }

// Tool needs the command name on $PATH, from Debian's package pkg.
func Tool(name, pkg string) Need {
	return func() error {
		if _, err := exec.LookPath(name); err != nil {
			return &hostcap.Missing{What: name, Why: "not found (Debian package " + pkg + ")", Installable: true, Err: err}
		}
		return nil
	}
}
