package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

type fakeBackend struct{ images map[string]Image }

func (f *fakeBackend) Register(ctx context.Context, r RegisterRequest) (*Image, error) {
	if r.FSID == "" {
		return nil, fmt.Errorf("%w: no fsid", ErrBadRequest)
	}
	if _, ok := f.images[r.FSID]; ok {
		return nil, fmt.Errorf("%w: %s", ErrExists, r.FSID)
	}
	im := Image{FSID: r.FSID, Bootstrap: r.Bootstrap}
	f.images[r.FSID] = im
	return &im, nil
}

func (f *fakeBackend) Unregister(ctx context.Context, fsid, domain string) error {
	if _, ok := f.images[fsid]; !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, fsid)
	}
	delete(f.images, fsid)
	return nil
}

func (f *fakeBackend) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	for _, im := range f.images {
		out = append(out, im)
	}
	return out, nil
}

func (f *fakeBackend) Mount(ctx context.Context, r MountRequest) (*Mount, error) {
	return nil, fmt.Errorf("%w: no kernel support", ErrUnavailable)
}
func (f *fakeBackend) Unmount(ctx context.Context, mp string) error {
	return fmt.Errorf("%w: busy", ErrInUse)
}
func (f *fakeBackend) Mounts(ctx context.Context) ([]Mount, error) { return []Mount{}, nil }
func (f *fakeBackend) Status(ctx context.Context) (*Status, error) {
	return &Status{Version: "test", Counters: map[string]int64{"x": 1}}, nil
}

func TestClientServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "erofsd.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(&fakeBackend{images: map[string]Image{}})}
	go srv.Serve(l)
	defer srv.Close()
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	if _, err := Listen(sock); err == nil {
		t.Fatal("second daemon could listen on a live socket")
	}

	ctx := context.Background()
	c := NewClient(sock)
	if st, err := c.Status(ctx); err != nil || st.Version != "test" || st.Counters["x"] != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if _, err := c.Register(ctx, RegisterRequest{FSID: "a", Bootstrap: "/img"}); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		err  error
		want error
	}{
		{func() error { _, err := c.Register(ctx, RegisterRequest{FSID: "a"}); return err }(), ErrExists},
		{func() error { _, err := c.Register(ctx, RegisterRequest{}); return err }(), ErrBadRequest},
		{c.Unregister(ctx, "nope", ""), ErrNotFound},
		{func() error { _, err := c.Mount(ctx, MountRequest{}); return err }(), ErrUnavailable},
		{c.Unmount(ctx, "/mnt"), ErrInUse},
	}
	for i, ch := range checks {
		if !errors.Is(ch.err, ch.want) {
			t.Errorf("%d: got %v, want %v", i, ch.err, ch.want)
		}
	}
	if ims, err := c.Images(ctx); err != nil || len(ims) != 1 || ims[0].FSID != "a" {
		t.Fatalf("images: %+v %v", ims, err)
	}
	if err := c.Unregister(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	// Unknown fields are refused, not ignored.
	resp, err := c.http.Post("http://erofsd/v1/images", "application/json", stringsReader(`{"fsid":"b","bogus":1}`))
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown field: %v %v", resp.Status, err)
	}
	resp.Body.Close()

	if _, err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Status(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("no daemon: %v", err)
	}
}

func stringsReader(s string) *stringReader { return &stringReader{s: s} }

type stringReader struct{ s string }

func (r *stringReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}
