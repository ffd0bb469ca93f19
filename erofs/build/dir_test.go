package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestAddDirStops checks that AddDir ends its scanning goroutine however
// the build stops: a cancelled context, and a failure while adding a
// file's data (a file that shrinks after the scan saw its size).
func TestAddDirStops(t *testing.T) {
	src := t.TempDir()
	for d := range 20 {
		for f := range 50 {
			p := filepath.Join(src, fmt.Sprintf("d%02d", d), fmt.Sprintf("f%02d", f))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := runtime.NumGoroutine()
	for _, tc := range []struct {
		name string
		ctx  func() context.Context
		opts Options
		want error
	}{
		{"cancelled", func() context.Context { ctx, cancel := context.WithCancel(context.Background()); cancel(); return ctx }, Options{}, context.Canceled},
		{"cancelled, compressed", func() context.Context { ctx, cancel := context.WithCancel(context.Background()); cancel(); return ctx }, Options{Compression: "lz4"}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "img"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, err := New(f, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Abort()
			if err := b.AddDir(tc.ctx(), src); !errors.Is(err, tc.want) {
				t.Fatalf("AddDir: %v, want %v", err, tc.want)
			}
		})
	}
	// A file shorter than its scanned size fails the build while the
	// scan is still going.
	short := filepath.Join(src, "d00", "f00")
	if err := os.WriteFile(short, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := New(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	b.opts.Progress = func(p Progress) {
		if p.Path == "d00/f00" {
			os.Truncate(short, 10)
		}
	}
	if err := b.AddDir(context.Background(), src); !errors.Is(err, errShortFile) {
		t.Fatalf("AddDir with a file that shrank: %v, want %v", err, errShortFile)
	}
	b.Abort()
	// Every goroutine the builds started has ended.
	for i := 0; runtime.NumGoroutine() > before && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after the builds, %d before", n, before)
	}
}
