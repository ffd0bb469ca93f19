// Package faultproxy is a reverse proxy for tests that injects faults
// between an HTTP client and a real server (a registry, a blob server):
// 5xx answers, connections reset or cut short mid-body, slow bodies and
// flipped bytes. Which request gets which fault is chosen by a
// deterministic Schedule, and the number of faults is bounded, so tests
// that use it are repeatable and end.
//
// The proxy listens on 127.0.0.1 only and keeps the client's Host header,
// so URLs the server builds (upload locations, redirects) point back at
// the proxy.
package faultproxy

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what the proxy does to one request.
type Fault int

const (
	// None passes the request and its answer through.
	None Fault = iota
	// Status503 answers 503 Service Unavailable without asking the server.
	Status503
	// Reset sends the answer's headers and part of its body, then resets
	// the connection (TCP RST).
	Reset
	// Truncate sends the headers (with the full Content-Length) and part
	// of the body, then closes the connection cleanly.
	Truncate
	// Slow sends the body in small pieces with a delay between them.
	Slow
	// Flip inverts one byte of the body (at Options.FlipAt), leaving
	// everything else intact: corruption only a checksum can see.
	Flip
	numFaults
)

var faultNames = [...]string{"none", "503", "reset", "truncate", "slow", "flip"}

func (f Fault) String() string {
	if f >= 0 && f < numFaults {
		return faultNames[f]
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Schedule picks the fault for the n-th (from 0) request the proxy may
// fault. It is called under the proxy's lock, in request order.
type Schedule func(n int, r *http.Request) Fault

// Sequence faults the first requests with faults, in order, and passes
// the rest through.
func Sequence(faults ...Fault) Schedule {
	return func(n int, _ *http.Request) Fault {
		if n < len(faults) {
			return faults[n]
		}
		return None
	}
}

// Seeded faults each request with probability rate, the fault drawn from
// kinds, from a generator seeded with seed: the same seed gives the same
// sequence of decisions.
func Seeded(seed uint64, rate float64, kinds ...Fault) Schedule {
	r := rand.New(rand.NewPCG(seed, seed+1))
	return func(int, *http.Request) Fault {
		if len(kinds) == 0 || r.Float64() >= rate {
			return None
		}
		return kinds[r.IntN(len(kinds))]
	}
}

// Options configure a proxy.
type Options struct {
	// Target is the server: http://HOST:PORT, or HOST:PORT.
	Target string
	// Schedule picks faults; nil passes everything through.
	Schedule Schedule
	// MaxFaults bounds the faults injected over the proxy's life
	// (default 100); later requests pass through. Faults other than
	// Status503 only apply to bodies of 200 and 206 answers to GET: on
	// other answers the chosen fault is dropped (and not counted).
	MaxFaults int
	// Match selects the requests that may be faulted (default: GET and
	// HEAD of blobs, paths containing "/blobs/" but not "/uploads/").
	// Requests not matched pass through and do not advance the schedule.
	Match func(*http.Request) bool
	// CutAfter is how many body bytes Reset and Truncate send (default
	// 1000, or half the body when shorter).
	CutAfter int64
	// FlipAt is the body offset whose byte Flip inverts (default 0; past
	// the body's end nothing is flipped and the fault is not counted).
	FlipAt int64
	// SlowChunk and SlowDelay pace a Slow body (default 16 KiB every
	// 20 ms); SlowMax bounds the time one slow body takes (default 5 s)
	// before the rest is sent at full speed.
	SlowChunk int
	SlowDelay time.Duration
	SlowMax   time.Duration

	// Latency delays every request before it is forwarded: a link's
	// round trip.
	Latency time.Duration
	// Rate caps the bytes per second of all answers' bodies together
	// (0: no cap): a link's bandwidth, shared by its connections.
	Rate int64
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// URL is http://HOST:PORT of the proxy; Host is HOST:PORT.
	URL, Host string

	opts   Options
	target *url.URL
	client *http.Transport
	srv    *httptest.Server

	mu       sync.Mutex
	schedule Schedule
	n        int // requests matched since the schedule was set
	faults   int // faults injected in total

	requests atomic.Int64
	bodies   atomic.Int64 // body bytes sent
	linkMu   sync.Mutex
	latency  time.Duration // Options.Latency, or as SetLink set it
	rate     int64         // Options.Rate, or as SetLink set it
	linkFree time.Time     // with a rate: when the link has sent what it was given
	inFlight atomic.Int64
	peak     atomic.Int64
	counts   [numFaults]atomic.Int64
}

// Peak returns the most requests the proxy was handling at once, for
// tests of a client's concurrency limit.
func (p *Proxy) Peak() int64 { return p.peak.Load() }

// Start runs a proxy to opts.Target until the test ends.
func Start(t testing.TB, opts Options) *Proxy {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// New runs a proxy to opts.Target; Close stops it.
func New(opts Options) (*Proxy, error) {
	target := opts.Target
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("faultproxy target %q: want http://HOST:PORT", opts.Target)
	}
	if opts.MaxFaults <= 0 {
		opts.MaxFaults = 100
	}
	if opts.Match == nil {
		opts.Match = func(r *http.Request) bool {
			return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
				strings.Contains(r.URL.Path, "/blobs/") && !strings.Contains(r.URL.Path, "/uploads/")
		}
	}
	if opts.CutAfter <= 0 {
		opts.CutAfter = 1000
	}
	if opts.SlowChunk <= 0 {
		opts.SlowChunk = 16 << 10
	}
	if opts.SlowDelay <= 0 {
		opts.SlowDelay = 20 * time.Millisecond
	}
	if opts.SlowMax <= 0 {
		opts.SlowMax = 5 * time.Second
	}
	p := &Proxy{opts: opts, target: u, schedule: opts.Schedule, latency: opts.Latency, rate: opts.Rate,
		client: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 64}}
	p.srv = httptest.NewServer(p) // 127.0.0.1 only
	p.URL = p.srv.URL
	p.Host = strings.TrimPrefix(p.srv.URL, "http://")
	return p, nil
}

// Close stops the proxy.
func (p *Proxy) Close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
	p.client.CloseIdleConnections()
}

// SetSchedule replaces the schedule (nil: no more faults) and restarts
// its request count at 0.
func (p *Proxy) SetSchedule(s Schedule) {
	p.mu.Lock()
	p.schedule, p.n = s, 0
	p.mu.Unlock()
}

// SetLink changes the link's latency and rate (Options.Latency, Rate)
// for the requests that follow.
func (p *Proxy) SetLink(latency time.Duration, rate int64) {
	p.linkMu.Lock()
	p.latency, p.rate = latency, rate
	p.linkMu.Unlock()
}

func (p *Proxy) link() (time.Duration, int64) {
	p.linkMu.Lock()
	defer p.linkMu.Unlock()
	return p.latency, p.rate
}

// BodyBytes returns how many bytes of answers' bodies the proxy sent:
// what the server behind it served.
func (p *Proxy) BodyBytes() int64 { return p.bodies.Load() }

// Requests returns how many requests the proxy received.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// Faults returns how many times fault f was injected (None: requests
// passed through unharmed).
func (p *Proxy) Faults(f Fault) int64 {
	if f < 0 || f >= numFaults {
		return 0
	}
	return p.counts[f].Load()
}

// pick chooses the fault for r, within the bound.
func (p *Proxy) pick(r *http.Request) Fault {
	if !p.opts.Match(r) {
		return None
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.schedule == nil {
		return None
	}
	n := p.n
	p.n++
	if p.faults >= p.opts.MaxFaults {
		return None
	}
	f := p.schedule(n, r)
	if f < None || f >= numFaults {
		f = None
	}
	if f != None {
		p.faults++
	}
	return f
}

// unpick gives back a fault that could not be injected.
func (p *Proxy) unpick() {
	p.mu.Lock()
	p.faults--
	p.mu.Unlock()
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	n := p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	for {
		old := p.peak.Load()
		if n <= old || p.peak.CompareAndSwap(old, n) {
			break
		}
	}
	if latency, _ := p.link(); latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	f := p.pick(r)
	if f == Status503 {
		p.counts[f].Add(1)
		http.Error(w, "faultproxy: injected 503", http.StatusServiceUnavailable)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = r.Host // the server builds URLs for the proxy, not for itself
	for _, h := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"} {
		out.Header.Del(h)
	}
	resp, err := p.client.RoundTrip(out)
	if err != nil {
		http.Error(w, "faultproxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if f != None && (r.Method == http.MethodHead || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent)) {
		// Faults other than 503 act on bodies of successful answers:
		// this one is dropped and does not count toward MaxFaults.
		p.unpick()
		f = None
	}
	switch f {
	case Reset, Truncate:
		p.cut(w, resp, f)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	body := io.Reader(resp.Body)
	switch f {
	case Flip:
		fr := &flipReader{r: body, at: p.opts.FlipAt}
		body = fr
		defer func() {
			if fr.flipped {
				p.counts[Flip].Add(1)
			} else {
				p.unpick()
			}
		}()
	case Slow:
		p.counts[Slow].Add(1)
		p.slow(w, body)
		return
	default:
		p.counts[None].Add(1)
	}
	p.copyBody(w, body)
}

// copyBody sends body to w, counted and, with Rate, paced.
func (p *Proxy) copyBody(w io.Writer, body io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			p.pace(n)
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			p.bodies.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}

// pace waits for the link to have room for n more bytes.
func (p *Proxy) pace(n int) {
	p.linkMu.Lock()
	if p.rate <= 0 {
		p.linkMu.Unlock()
		return
	}
	now := time.Now()
	if p.linkFree.Before(now) {
		p.linkFree = now
	}
	p.linkFree = p.linkFree.Add(time.Duration(float64(n) / float64(p.rate) * float64(time.Second)))
	wait := p.linkFree.Sub(now)
	p.linkMu.Unlock()
	// Sleeps shorter than a few milliseconds overshoot: let the link run
	// ahead until the debt is worth a sleep, so that the average rate
	// holds also at 1 Gbit/s.
	if wait > 5*time.Millisecond {
		time.Sleep(wait)
	}
}

// cut sends the headers and the first CutAfter bytes of the body, then
// resets or closes the connection.
func (p *Proxy) cut(w http.ResponseWriter, resp *http.Response, f Fault) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "faultproxy: cannot hijack this connection", http.StatusInternalServerError)
		return
	}
	n := p.opts.CutAfter
	if resp.ContentLength > 0 && n >= resp.ContentLength {
		n = resp.ContentLength / 2
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	p.counts[f].Add(1)
	writeHead(buf.Writer, resp)
	io.CopyN(buf, resp.Body, n)
	buf.Flush()
	if f == Reset {
		if tc, ok := conn.(*net.TCPConn); ok {
			// Linger 0: close sends RST instead of FIN.
			tc.SetLinger(0)
		}
	}
}

func writeHead(w *bufio.Writer, resp *http.Response) {
	fmt.Fprintf(w, "HTTP/1.1 %s\r\n", resp.Status)
	resp.Header.Del("Transfer-Encoding")
	resp.Header.Set("Connection", "close")
	if resp.ContentLength >= 0 {
		resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	resp.Header.Write(w)
	w.WriteString("\r\n")
}

// slow copies body to w in SlowChunk pieces, SlowDelay apart, for at
// most SlowMax.
func (p *Proxy) slow(w http.ResponseWriter, body io.Reader) {
	fl, _ := w.(http.Flusher)
	deadline := time.Now().Add(p.opts.SlowMax)
	buf := make([]byte, p.opts.SlowChunk)
	for time.Now().Before(deadline) {
		n, err := io.ReadFull(body, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client gave up
			}
			p.bodies.Add(int64(n))
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return
		}
		time.Sleep(p.opts.SlowDelay)
	}
	p.copyBody(w, body)
}

// flipReader inverts the byte at offset at of the stream.
type flipReader struct {
	r       io.Reader
	at, off int64
	flipped bool
}

func (f *flipReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if i := f.at - f.off; i >= 0 && i < int64(n) {
		b[i] ^= 0xff
		f.flipped = true
	}
	f.off += int64(n)
	return n, err
}
