package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/internal/testutil/require"
)

// TestCPIOWriter unpacks an archive of cpioWriter with cpio(1), an
// independent reader, and compares what comes out.
func TestCPIOWriter(t *testing.T) {
	require.Host(t, require.Tool("cpio", "cpio"))
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.Dir("/bin", 0o755)
	w.Symlink("/bin/sh", "busybox")
	for _, f := range []struct {
		name string
		perm uint32
		data string
	}{
		{"/init", 0o755, "#!/bin/sh\n"},
		{"/a/b/c/deep", 0o600, "deep file, parents implied"},
		{"/a/empty", 0o644, ""},
		{"/a/three", 0o644, "abc"}, // data needing padding
	} {
		w.File(f.name, f.perm, int64(len(f.data)), strings.NewReader(f.data))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive of %d bytes is not 4-byte aligned", buf.Len())
	}

	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh: link to %q, %v", target, err)
	}
	for name, want := range map[string]string{"init": "#!/bin/sh\n", "a/b/c/deep": "deep file, parents implied", "a/empty": "", "a/three": "abc"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "a/b/c/deep")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a/b/c/deep: %v, %v; want mode 0600", fi.Mode(), err)
	}
}

func TestParseConsole(t *testing.T) {
	console := "[ boot noise ]\r\n" + markStart + "\r\nline 1\r\nline 2\r\n" + markExit + "7\r\n[ reboot ]\r\n"
	res := parseConsole(console)
	if res.Output != "line 1\nline 2\n" || res.ExitCode != 7 {
		t.Errorf("output %q, exit %d", res.Output, res.ExitCode)
	}
	if res := parseConsole("Kernel panic\n"); res.ExitCode != -1 {
		t.Errorf("no marker: exit %d, want -1", res.ExitCode)
	}
}
