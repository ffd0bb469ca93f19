package fanotify

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/prefetchlist"
)

// TestPrefetchWhole mounts an image lazily, prefetches every blob in
// the background (the watches have no writer fd yet: the first write
// primes one with a read of its own) and checks that the cache files are
// complete and unmarked, and that reading every file afterwards fetches
// nothing and raises no event.
func TestPrefetchWhole(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 6<<20+12345)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big"), big, 0o644)
	m := newLazyMount(t, src, 64<<10, false)
	for i, w := range m.watches {
		m.objs[i].Attach(w.Target())
	}
	im := m.reg.Images()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	res, err := m.reg.Prefetch(ctx, im, ondemand.PrefetchOptions{Whole: true})
	if err != nil {
		t.Fatalf("prefetch: %v (%+v)", err, res)
	}
	t.Logf("prefetched %d of %d bytes in %v, %d events", res.Done, res.Planned, time.Since(start), m.srv.Stats.Events.Load())
	if res.Done != res.Planned || res.Planned == 0 {
		t.Fatalf("result %+v", res)
	}
	for _, w := range m.watches {
		// Complete when the prefetch returns; unmarked once checked
		// whole, in the background.
		if !w.Complete() {
			t.Fatalf("%s: not complete after the prefetch", w.Path)
		}
		if !waitUnmarked(t, w) {
			t.Fatalf("%s: still marked 10 s after the prefetch", w.Path)
		}
	}
	if ev := m.srv.Stats.Events.Load(); ev > int64(len(m.watches)) {
		t.Errorf("%d events during the prefetch: want one priming read per blob", ev)
	}
	fetches, events := m.reg.Stats.Fetches.Load(), m.srv.Stats.Events.Load()
	treecmp.Expect(t, src, m.mnt, treecmp.Options{})
	if f, e := m.reg.Stats.Fetches.Load(), m.srv.Stats.Events.Load(); f != fetches || e != events {
		t.Errorf("reading every file after the prefetch: %d fetches, %d events", f-fetches, e-events)
	}
	if d := m.srv.Stats.Denied.Load(); d != 0 {
		t.Errorf("%d reads denied", d)
	}
}

// bigFilePrefetchMount mounts a random file of a little over 3 MiB
// lazily (64 KiB chunks), its watches attached as prefetch targets.
func bigFilePrefetchMount(t *testing.T) *lazyMount {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	big := make([]byte, 3<<20+4321)
	rand.Read(big)
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "big"), big, 0o644)
	m := newLazyMount(t, src, 64<<10, false)
	for i, w := range m.watches {
		m.objs[i].Attach(w.Target())
	}
	return m
}

// holdChecks holds the map flush lock of m's watches, which finishing a
// complete file (its proof or whole check) takes first, until the returned func (safe to call
// twice) is called.
func holdChecks(m *lazyMount) (unlock func()) {
	for _, w := range m.watches {
		w.flushMu.Lock()
	}
	return sync.OnceFunc(func() {
		for _, w := range m.watches {
			w.flushMu.Unlock()
		}
	})
}

// TestPrefetchDoesNotWaitForCheck: the prefetch that completes a cache
// file returns without waiting for the file to be made durable and
// proven to be the blob (here held up on the map's flush lock); the file
// is unmarked once they are done.
func TestPrefetchDoesNotWaitForCheck(t *testing.T) {
	m := bigFilePrefetchMount(t)
	unlock := holdChecks(m)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := m.reg.Prefetch(ctx, m.reg.Images()[0], ondemand.PrefetchOptions{Whole: true})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("prefetch: %v", err)
		}
	case <-time.After(20 * time.Second):
		unlock()
		t.Fatalf("prefetch still running 20 s after it started: it waits for the complete file's check (%v)", <-done)
	}
	for _, w := range m.watches {
		if !w.Complete() {
			t.Fatalf("%s: not complete after the prefetch", w.Path)
		}
	}
	unlock()
	for _, w := range m.watches {
		if !waitUnmarked(t, w) {
			t.Fatalf("%s: still marked 10 s after its check could run", w.Path)
		}
	}
}

// TestPrefetchAfterServeStartsNothing: a prefetch that completes a file
// once Serve has stopped starts no background check that Serve no longer
// waits for (it would use the group after Release); the next start
// checks the file.
func TestPrefetchAfterServeStartsNothing(t *testing.T) {
	m := bigFilePrefetchMount(t)
	f, err := os.Open(filepath.Join(m.mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	f.ReadAt(make([]byte, 1), 0) // an event: the watch gets its writer fd
	f.Close()
	m.srv.Close()
	stopped := func() bool {
		m.srv.bgMu.Lock()
		defer m.srv.bgMu.Unlock()
		return m.srv.bgStopped
	}
	for deadline := time.Now().Add(10 * time.Second); !stopped(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Serve did not stop")
		}
	}
	// A check started now would wait here.
	unlock := holdChecks(m)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.reg.Prefetch(ctx, m.reg.Images()[0], ondemand.PrefetchOptions{Whole: true}); err != nil {
		t.Fatalf("prefetch: %v", err)
	}
	idle := make(chan struct{})
	go func() { m.srv.bg.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(2 * time.Second):
		unlock()
		t.Fatal("a prefetch after Serve stopped started background work")
	}
}

// TestPrefetchWhileReading prefetches at a bandwidth limit while every
// file is read through the mount: reads and prefetch share the chunks,
// nothing is fetched twice, every byte is right.
func TestPrefetchWhileReading(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 16<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big"), big, 0o644)
	m := newLazyMount(t, src, 64<<10, false)
	for i, w := range m.watches {
		m.objs[i].Attach(w.Target())
	}
	im := m.reg.Images()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		res ondemand.PrefetchResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := m.reg.Prefetch(ctx, im, ondemand.PrefetchOptions{Files: prefetchlist.Files("big"), Whole: true, Limiter: ondemand.NewLimiter(64 << 20)})
		done <- result{res, err}
	}()
	treecmp.Expect(t, src, m.mnt, treecmp.Options{})
	r := <-done
	if r.err != nil || r.res.Done != r.res.Planned {
		t.Fatalf("prefetch: %v %+v", r.err, r.res)
	}
	chunks := 0
	for _, b := range im.Blobs {
		chunks += b.Chunks
	}
	if f, z := m.reg.Stats.Fetches.Load(), m.reg.Stats.ZeroChunks.Load(); f+z != int64(chunks) || z > int64(len(im.Blobs)) {
		t.Errorf("%d chunk fetches and %d zero chunks written for %d chunks", f, z, chunks)
	}
	t.Logf("prefetch %+v; %d events", r.res, m.srv.Stats.Events.Load())
}
