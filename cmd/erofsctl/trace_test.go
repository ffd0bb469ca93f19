package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"github.com/erofsd/erofsd/prefetchlist"
)

func TestTraceUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"trace"},
		{"trace", dir, "--"},
		{"trace", "--duration", "-1s", dir},
		{"trace", dir, dir},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("erofsctl %q: %v, want the usage", args, err)
		}
	}
	if err := run(context.Background(), []string{"trace", dir}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, erofstrace.ErrNotErofs) {
		t.Errorf("trace of a plain directory: %v", err)
	}
}

// TestTraceCommand runs erofsctl trace around a command reading two
// files of a mounted image: the list holds them in that order, the
// summary counts them, and a failing command's status is the error.
func TestTraceCommand(t *testing.T) {
	require.Host(t, require.Root, require.FileBackedErofs, func() error {
		tr, err := erofstrace.Open(0, nil)
		if err != nil {
			return err
		}
		return tr.Close()
	})
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	for name, data := range map[string]string{"etc/one": "1\n", "two": strings.Repeat("two\n", 3000), "three": "3\n"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, _, _ := testimage.Build(t, src, build.Options{})
	mnt := t.TempDir()
	unmount, err := testmount.FileBacked(img, nil, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer unmount()

	out := filepath.Join(t.TempDir(), "list")
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"trace", "--output", out, mnt, "--",
		"sh", "-c", `cat "$1/two" "$1/etc/one" >/dev/null; exit 3`, "sh", mnt}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "exited with status 3") {
		t.Fatalf("trace: %v, want the command's status 3\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "2 files,") || !strings.Contains(stderr.String(), "0 unresolved nids") {
		t.Errorf("summary: %s", stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	l, err := prefetchlist.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []prefetchlist.Entry{
		{Path: "/two", Ranges: []prefetchlist.Range{{Off: 0, Len: 12000}}},
		{Path: "/etc/one", Ranges: []prefetchlist.Range{{Off: 0, Len: 2}}},
	}
	if !reflect.DeepEqual(l.Entries, want) {
		t.Fatalf("list %+v, want %+v", l.Entries, want)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout: %q", stdout.String())
	}

	// Without --output the list goes to standard output, the command's
	// output to standard error; cached pages are not read again.
	stdout.Reset()
	stderr.Reset()
	if err := run(context.Background(), []string{"trace", mnt, "--", "cat", filepath.Join(mnt, "two"), filepath.Join(mnt, "three")}, &stdout, &stderr); err != nil {
		t.Fatalf("trace: %v\n%s", err, stderr.String())
	}
	if got, want := stdout.String(), "# erofsd prefetch list v1\n/three\t0+2\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if !strings.HasPrefix(stderr.String(), strings.Repeat("two\n", 3000)+"3\n") {
		t.Errorf("the command's output is not on stderr: %.40q", stderr.String())
	}
}

func TestMountUnder(t *testing.T) {
	ims := []control.Image{
		{FSID: "a", Mounts: []string{"/m/a"}, Containers: []string{"k8s.io/5/c1", "k8s.io/6/c2"}},
		{FSID: "b", Mounts: []string{"/m/b"}, Containers: []string{"default/7/c2", "default/8/xc1"}},
		{FSID: "c", Containers: []string{"default/9/c3"}}, // not mounted
	}
	for _, tc := range []struct {
		id, want, err string
	}{
		{"c1", "/m/a", ""},
		{"k8s.io/6/c2", "/m/a", ""},
		{"c2", "", "ambiguous"},
		{"c3", "", "no image"},
		{"1", "", "no image"}, // a suffix of an id is not the id
	} {
		got, err := mountUnder(ims, tc.id)
		if got != tc.want || tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: %q, %v; want %q, error with %q", tc.id, got, err, tc.want, tc.err)
		}
	}
}
