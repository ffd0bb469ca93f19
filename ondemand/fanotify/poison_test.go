package fanotify

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/ondemand"
)

// gatedSource is a source whose fill waits for a signal before writing.
type gatedSource struct {
	size    int64
	entered chan struct{}
	release chan struct{}
}

func (g *gatedSource) Size() int64                           { return g.size }
func (g *gatedSource) Name() string                          { return "gated" }
func (g *gatedSource) Readahead(off, n int64) (int64, int64) { return 0, 0 }
func (g *gatedSource) Fill(ctx context.Context, off, n int64, w ondemand.BlockWriter) error {
	close(g.entered)
	<-g.release
	return w.WriteBlocks(make([]byte, ondemand.BlockSize), off&^(ondemand.BlockSize-1))
}

// TestPoisonWithWriteInFlight: Poison's truncation raises an event a
// worker must answer; with the only worker about to write into the same
// file, Poison still finishes, the write writes nothing, and the file
// stays truncated.
func TestPoisonWithWriteInFlight(t *testing.T) {
	dir := t.TempDir()
	require.Host(t, func() error { return Supported(dir) })
	srv, err := New(Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { cancel(); <-served; srv.Release() }()
	src := &gatedSource{size: 1 << 20, entered: make(chan struct{}), release: make(chan struct{})}
	p := filepath.Join(dir, "f")
	w, err := srv.Watch(p, src.size, [32]byte{}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		if f, err := os.Open(p); err == nil {
			f.ReadAt(make([]byte, 1), 0)
			f.Close()
		}
	}()
	<-src.entered // the only worker is in the fill
	poisoned := make(chan error, 1)
	go func() { poisoned <- w.Poison() }()
	time.Sleep(200 * time.Millisecond)
	close(src.release) // its write comes while Poison runs
	select {
	case err := <-poisoned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Poison did not finish: its truncate event and the worker's write wait for each other")
	}
	select {
	case <-readDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the reader was never answered")
	}
	if st, err := os.Stat(p); err != nil || st.Size() != 0 {
		t.Fatalf("after Poison the cache file has %v bytes (%v), want 0", st.Size(), err)
	}
}
