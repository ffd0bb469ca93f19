package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/erofsd/erofsd/internal/control"
)

// recorder is a control.Backend that records what erofsctl asks for.
type recorder struct {
	mu         sync.Mutex
	registered []control.RegisterRequest
	mounted    []control.MountRequest
	dropped    []string
}

func (r *recorder) Register(ctx context.Context, req control.RegisterRequest) (*control.Image, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.registered = append(r.registered, req)
	return &control.Image{FSID: req.FSID, Blobs: []control.Blob{{}, {}}}, nil
}

func (r *recorder) Unregister(ctx context.Context, fsid, domain string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fsid == "missing" {
		return control.ErrNotFound
	}
	r.dropped = append(r.dropped, domain+"/"+fsid)
	return nil
}

func (r *recorder) Mount(ctx context.Context, req control.MountRequest) (*control.Mount, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mounted = append(r.mounted, req)
	return &control.Mount{Mountpoint: req.Mountpoint, FSID: req.FSID, Frontend: "fanotify"}, nil
}

func (r *recorder) Images(ctx context.Context) ([]control.Image, error) { return nil, nil }
func (r *recorder) Unmount(ctx context.Context, mp string) error        { return nil }
func (r *recorder) Mounts(ctx context.Context) ([]control.Mount, error) { return nil, nil }
func (r *recorder) Status(ctx context.Context) (*control.Status, error) {
	return &control.Status{}, nil
}

// TestRegisterMountUnregister drives erofsctl's commands against a
// recording backend on a real socket: the requests carry absolute paths,
// the derived fsid, the image flags of either command, and errors come
// back typed.
func TestRegisterMountUnregister(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "erofsd.sock")
	l, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv := &http.Server{Handler: control.Handler(rec)}
	go srv.Serve(l)
	defer srv.Close()
	img := filepath.Join(dir, "image.erofs")
	os.WriteFile(img, []byte("x"), 0o644)
	t.Chdir(dir)
	ctl := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"--socket", sock}, args...), &out, &errOut)
		return out.String() + errOut.String(), err
	}

	if out, err := ctl("register", "--blob-dir", "blobs", "image.erofs", "--domain-id", "d"); err != nil || !strings.Contains(out, "2 blobs") {
		t.Fatalf("register: %v\n%s", err, out)
	}
	if out, err := ctl("mount", "--fsid", "m", "image.erofs", dir); err != nil || !strings.Contains(out, "fsid m") {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	if len(rec.registered) != 1 || len(rec.mounted) != 1 {
		t.Fatalf("requests: %+v %+v", rec.registered, rec.mounted)
	}
	r, m := rec.registered[0], rec.mounted[0]
	if r.Bootstrap != img || r.BlobDir != filepath.Join(dir, "blobs") || r.DomainID != "d" || r.FSID != defaultFSID(img) {
		t.Errorf("register request %+v", r)
	}
	if m.Bootstrap != img || m.FSID != "m" || m.Mountpoint != dir {
		t.Errorf("mount request %+v", m)
	}
	if _, err := ctl("unregister", "--domain-id", "d", r.FSID); err != nil || len(rec.dropped) != 1 || rec.dropped[0] != "d/"+r.FSID {
		t.Fatalf("unregister: %v %v", err, rec.dropped)
	}
	if _, err := ctl("unregister", "missing"); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("unregister of an unknown image: %v", err)
	}
	for _, bad := range [][]string{
		{"register"},
		{"register", "--plain-http", "image.erofs"}, // not an oci:// image
		{"register", "nonexistent.erofs"},
		{"unregister"},
		{"mount", "image.erofs"},
	} {
		if _, err := ctl(bad...); err == nil {
			t.Errorf("erofsctl %q accepted", bad)
		}
	}
}
