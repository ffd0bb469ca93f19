package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func backend(t *testing.T, data []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "" || strings.Contains(r.Host, "backend") {
			http.Error(w, "host not kept", http.StatusBadRequest)
			return
		}
		if strings.Contains(r.URL.Path, "missing") {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, rng string) (int, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func TestFaults(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefghijklmnop"), 10000) // 160,000 bytes
	srv := backend(t, data)
	p := Start(t, Options{Target: srv.URL, FlipAt: 5, SlowChunk: 40000, SlowDelay: 50 * time.Millisecond,
		Schedule: Sequence(Status503, Reset, Truncate, Slow, Flip, None)})
	u := p.URL + "/v2/r/blobs/sha256:x"

	if code, _, err := get(t, u, ""); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("503: %d %v", code, err)
	}
	if _, b, err := get(t, u, ""); err == nil || len(b) >= len(data) {
		t.Fatalf("reset: %d bytes, %v", len(b), err)
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset gave %v, want ECONNRESET", err)
	}
	if _, b, err := get(t, u, ""); !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != 1000 {
		t.Fatalf("truncate: %d bytes, %v", len(b), err)
	}
	start := time.Now()
	if code, b, err := get(t, u, ""); err != nil || code != 200 || !bytes.Equal(b, data) {
		t.Fatalf("slow: %d %d %v", code, len(b), err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("slow body took only %v", d)
	}
	code, b, err := get(t, u, "bytes=100-199")
	if err != nil || code != http.StatusPartialContent || len(b) != 100 {
		t.Fatalf("flip: %d %d %v", code, len(b), err)
	}
	for i := range b {
		want := data[100+i]
		if i == 5 {
			want ^= 0xff
		}
		if b[i] != want {
			t.Fatalf("byte %d: %#x, want %#x", i, b[i], want)
		}
	}
	if _, b, err := get(t, u, ""); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("after the sequence: %v", err)
	}
	for f := Status503; f < numFaults; f++ {
		if p.Faults(f) != 1 {
			t.Errorf("%v injected %d times", f, p.Faults(f))
		}
	}
	// Requests that do not match (uploads) pass and do not use the schedule.
	p.SetSchedule(Sequence(Status503))
	if code, _, _ := get(t, p.URL+"/v2/r/blobs/uploads/x", ""); code != 200 {
		t.Fatalf("upload path faulted: %d", code)
	}
	if code, _, _ := get(t, u, ""); code != http.StatusServiceUnavailable {
		t.Fatalf("schedule restarted: %d", code)
	}
}

func TestBoundAndSeed(t *testing.T) {
	srv := backend(t, []byte("hello"))
	p := Start(t, Options{Target: srv.URL, MaxFaults: 3, Schedule: func(int, *http.Request) Fault { return Status503 }})
	bad := 0
	for range 10 {
		if code, _, _ := get(t, p.URL+"/blobs/a", ""); code != 200 {
			bad++
		}
	}
	if bad != 3 {
		t.Fatalf("%d faults, want the bound 3", bad)
	}
	// Seeded schedules repeat.
	a, b := Seeded(7, 0.5, Reset, Flip), Seeded(7, 0.5, Reset, Flip)
	var sa, sb []Fault
	for i := range 50 {
		sa, sb = append(sa, a(i, nil)), append(sb, b(i, nil))
	}
	if !slices.Equal(sa, sb) {
		t.Fatal("same seed, different schedules")
	}
	n := 0
	for _, f := range sa {
		if f != None {
			n++
		}
	}
	if n == 0 || n == 50 {
		t.Fatalf("rate 0.5 gave %d faults in 50", n)
	}
	if _, err := New(Options{Target: "://"}); err == nil {
		t.Fatal("bad target accepted")
	}
}

func TestDroppedFaultsDoNotCount(t *testing.T) {
	srv := backend(t, []byte("hello"))
	p := Start(t, Options{Target: srv.URL, MaxFaults: 1, Schedule: func(int, *http.Request) Fault { return Truncate }})
	// A 404 cannot be truncated: the fault is dropped, not spent.
	if code, _, err := get(t, p.URL+"/blobs/missing", ""); err != nil || code != http.StatusNotFound {
		t.Fatalf("404 path: %d %v", code, err)
	}
	req, _ := http.NewRequest(http.MethodHead, p.URL+"/blobs/a", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if _, _, err := get(t, p.URL+"/blobs/a", ""); err == nil {
		t.Fatal("the one allowed fault was spent on answers it cannot apply to")
	}
	if _, b, err := get(t, p.URL+"/blobs/a", ""); err != nil || string(b) != "hello" {
		t.Fatalf("after the bound: %q %v", b, err)
	}
}

func TestLinkLatencyRateAndBytes(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	srv := backend(t, data)
	p := Start(t, Options{Target: srv.URL, Latency: 50 * time.Millisecond, Rate: 1 << 20})
	start := time.Now()
	code, b, err := get(t, p.URL+"/v2/r/blobs/sha256:x", "")
	took := time.Since(start)
	if err != nil || code != http.StatusOK || !bytes.Equal(b, data) {
		t.Fatalf("GET: %d, %d bytes, %v", code, len(b), err)
	}
	// 50 ms of latency and 256 KiB at 1 MiB/s: at least 300 ms.
	if took < 300*time.Millisecond {
		t.Errorf("took %v, want at least 300ms", took)
	}
	if code, b, err = get(t, p.URL+"/v2/r/blobs/sha256:x", "bytes=0-999"); err != nil || code != http.StatusPartialContent || len(b) != 1000 {
		t.Fatalf("range GET: %d, %d bytes, %v", code, len(b), err)
	}
	if got := p.BodyBytes(); got != int64(len(data))+1000 {
		t.Errorf("BodyBytes %d, want %d", got, len(data)+1000)
	}
}

// A cap near 1 Gbit/s must hold on average despite coarse sleeps.
func TestLinkRateHighCap(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<21) // 32 MiB
	srv := backend(t, data)
	p := Start(t, Options{Target: srv.URL, Rate: 125_000_000})
	start := time.Now()
	if code, b, err := get(t, p.URL+"/x", ""); err != nil || code != http.StatusOK || len(b) != len(data) {
		t.Fatalf("GET: %d, %d bytes, %v", code, len(b), err)
	}
	rate := float64(len(data)) / time.Since(start).Seconds()
	// At most the cap (plus the first few ms running ahead); at least
	// half of it on a loaded machine.
	if rate > 140e6 || rate < 60e6 {
		t.Errorf("%.0f MB/s through a 125 MB/s link", rate/1e6)
	}
}
