package blobstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
)

// TestOCIFaults puts a fault-injecting proxy between the store and the
// real registry.
func TestOCIFaults(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	data := randomBlob(4, 1<<20)
	d := pushBlob(t, reg, "faulty/repo", data)
	proxy := faultproxy.Start(t, faultproxy.Options{Target: reg.URL(), FlipAt: 7,
		SlowChunk: 8 << 10, SlowDelay: 100 * time.Millisecond, SlowMax: 3 * time.Second})
	// The timeout is what turns a slow body into a retry.
	o := mustOCI(t, proxy.Host+"/faulty/repo", OCIOptions{PlainHTTP: true,
		HTTPOptions: HTTPOptions{Backoff: time.Millisecond, Retries: 3, Timeout: 400 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := o.Stats()

	proxy.SetSchedule(faultproxy.Sequence(faultproxy.Status503, faultproxy.Status503))
	b, err := o.Open(ctx, d)
	if err != nil {
		t.Fatalf("open after two 503s: %v", err)
	}
	if st.Retries.Load() != 2 {
		t.Fatalf("%d retries, want 2", st.Retries.Load())
	}

	read := func(off, n int) ([]byte, error) {
		p := make([]byte, n)
		_, err := b.ReadAt(ctx, p, int64(off))
		return p, err
	}
	for _, f := range []faultproxy.Fault{faultproxy.Status503, faultproxy.Reset, faultproxy.Truncate, faultproxy.Slow} {
		t.Run(f.String(), func(t *testing.T) {
			retries := st.Retries.Load()
			proxy.SetSchedule(faultproxy.Sequence(f))
			p, err := read(4096, 200_000)
			if err != nil || !bytes.Equal(p, data[4096:204096]) {
				t.Fatalf("read through %v: %v", f, err)
			}
			if proxy.Faults(f) == 0 {
				t.Fatalf("%v not injected", f)
			}
			if st.Retries.Load() != retries+1 {
				t.Fatalf("%d retries, want 1", st.Retries.Load()-retries)
			}
		})
	}

	t.Run("flip", func(t *testing.T) {
		// At this layer flipped bytes come back as they are: chunk
		// digests above catch them. Check that the proxy really flipped.
		proxy.SetSchedule(faultproxy.Sequence(faultproxy.Flip))
		p, err := read(1000, 100)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(data[1000:1100])
		want[7] ^= 0xff
		if !bytes.Equal(p, want) || proxy.Faults(faultproxy.Flip) != 1 {
			t.Fatalf("flip: got %x, want %x (flips %d)", p[:10], want[:10], proxy.Faults(faultproxy.Flip))
		}
		p, err = read(1000, 100)
		if err != nil || !bytes.Equal(p, data[1000:1100]) {
			t.Fatalf("read after the flip: %v", err)
		}
	})

	t.Run("more faults than retries", func(t *testing.T) {
		proxy.SetSchedule(faultproxy.Sequence(faultproxy.Status503, faultproxy.Reset, faultproxy.Truncate, faultproxy.Status503))
		temp := st.Temporary.Load()
		if _, err := read(0, 4096); !errors.Is(err, ErrTemporary) {
			t.Fatalf("want ErrTemporary after 4 faults: %v", err)
		}
		if st.Temporary.Load() != temp+1 {
			t.Fatal("temporary error not counted")
		}
		// The faults have stopped: reads recover.
		if p, err := read(0, 4096); err != nil || !bytes.Equal(p, data[:4096]) {
			t.Fatalf("after faults stopped: %v", err)
		}
	})

	t.Run("seeded", func(t *testing.T) {
		// A random (seeded, so repeatable) mix of transient faults over
		// many reads; bounded in number by the proxy.
		proxy := faultproxy.Start(t, faultproxy.Options{Target: reg.URL(), MaxFaults: 40,
			Schedule: faultproxy.Seeded(42, 0.3, faultproxy.Status503, faultproxy.Reset, faultproxy.Truncate)})
		// Enough retries that no run of faults in this seed's schedule
		// outlasts them (at rate 0.3, four in a row do happen).
		o := mustOCI(t, proxy.Host+"/faulty/repo", OCIOptions{PlainHTTP: true,
			HTTPOptions: HTTPOptions{Backoff: time.Millisecond, Retries: 8, Timeout: 10 * time.Second}})
		b, err := o.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			off := (i * 104729) % (len(data) - 65536)
			p := make([]byte, 65536)
			if _, err := b.ReadAt(ctx, p, int64(off)); err != nil || !bytes.Equal(p, data[off:off+65536]) {
				t.Fatalf("read %d at %d: %v", i, off, err)
			}
		}
		injected := proxy.Faults(faultproxy.Status503) + proxy.Faults(faultproxy.Reset) + proxy.Faults(faultproxy.Truncate)
		if injected == 0 || o.Stats().Retries.Load() == 0 {
			t.Fatalf("%d faults injected, %d retries", injected, o.Stats().Retries.Load())
		}
		t.Logf("%d faults, %d retries, %d requests", injected, o.Stats().Retries.Load(), o.Stats().Requests.Load())
	})
}

// TestOCIConcurrencyBound: MaxInFlight bounds the requests a store has
// open at once, here seen at a proxy whose every body is slow.
func TestOCIConcurrencyBound(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	data := randomBlob(9, 256<<10)
	d := pushBlob(t, reg, "conc/repo", data)
	proxy := faultproxy.Start(t, faultproxy.Options{Target: reg.URL(), SlowChunk: 8 << 10, SlowDelay: 10 * time.Millisecond,
		Schedule: func(int, *http.Request) faultproxy.Fault { return faultproxy.Slow }})
	o := mustOCI(t, proxy.Host+"/conc/repo", OCIOptions{PlainHTTP: true,
		HTTPOptions: HTTPOptions{MaxInFlight: 2, Timeout: 10 * time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := o.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			p := make([]byte, 32<<10)
			off := i * len(p)
			if _, err := b.ReadAt(ctx, p, int64(off)); err != nil || !bytes.Equal(p, data[off:off+len(p)]) {
				errs <- fmt.Errorf("read %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if peak := proxy.Peak(); peak != 2 {
		t.Fatalf("%d requests at once at the registry, want the limit 2", peak)
	}
}
