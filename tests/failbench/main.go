// Command failbench measures failover of the fanotify front end on this
// machine's kernel: while 8 readers stream a file through a lazily
// filled mount (erofsd supervise, blobs from a local store, every chunk
// verified), the daemon is killed with SIGKILL, several times (a new file
// each time, the kills -gap apart). Each time a probe then reads data
// nobody has read yet, so only the next daemon can serve it: the time
// from the kill to the probe's data is the failover time. It prints those times, the READ latency percentiles from the
// daemons' histograms (erofsd_read_duration_seconds, scraped from each
// daemon just before its kill and from the last one at the end), and the
// readers' own read(2) latencies, which include the reads held across a
// failover.
//
// With -kill supervisor, the supervisor dies with the daemon (as systemd
// kills a unit whose main process was SIGKILLed) and a new one is started
// with the fds a fake systemd kept in its fd store: the new daemon fills
// every watched file before it answers anything (the journal died with
// the supervisor), which the figures show; one round only, since that
// fill leaves nothing for a second.
//
//	go run ./tests/failbench [-size MiB] [-rounds N] [-gap D] [-kill daemon|supervisor]
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/internal/testutil/fakesystemd"
	"github.com/erofsd/erofsd/ondemand/fanotify"
)

func main() {
	size := flag.Int("size", 64, "streamed file size in MiB")
	rounds := flag.Int("rounds", 3, "kills")
	gap := flag.Duration("gap", 11*time.Second, "time between kills (the supervisor delays restarts of a daemon that ran less than 10 s)")
	kill := flag.String("kill", "daemon", "what to kill: daemon (the supervisor restarts it) or supervisor (with the daemon; systemd's fd store brings the fds back)")
	flag.Parse()
	if *kill != "daemon" && *kill != "supervisor" {
		fmt.Fprintln(os.Stderr, "failbench: -kill daemon|supervisor")
		os.Exit(2)
	}
	if *kill == "supervisor" && *rounds > 1 {
		// The first restart from the fd store fills every watched
		// file: later rounds would find everything present.
		*rounds = 1
	}
	if err := run(*size, *rounds, *gap, *kill == "supervisor"); err != nil {
		fmt.Fprintln(os.Stderr, "failbench:", err)
		os.Exit(1)
	}
}

const probeSize = 256 << 10 // one chunk

func run(sizeMiB, rounds int, gap time.Duration, killSupervisor bool) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root to mount")
	}
	if err := kmount.Supported(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "erofsd-failbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := fanotify.Supported(work); err != nil {
		return err
	}
	bins := map[string]string{}
	for _, name := range []string{"erofsd", "erofs-image"} {
		bins[name] = filepath.Join(work, name)
		if out, err := exec.Command("go", "build", "-o", bins[name], "./cmd/"+name).CombinedOutput(); err != nil {
			return fmt.Errorf("building %s (run from the repository root): %v\n%s", name, err, out)
		}
	}

	// Per round a streamed file, read by the readers across the kill,
	// and a probe file of one chunk that nobody reads before: probes
	// sort first in the blob ("a-") and are read in reverse order, so
	// no readahead reaches one before its round.
	src, blobs := filepath.Join(work, "src"), filepath.Join(work, "blobs")
	os.MkdirAll(src, 0o755)
	streamed := make([][]byte, rounds)
	probes := make([][]byte, rounds)
	for i := range probes {
		streamed[i] = make([]byte, sizeMiB<<20)
		rand.Read(streamed[i])
		os.WriteFile(filepath.Join(src, fmt.Sprintf("big-%03d", i)), streamed[i], 0o644)
		probes[i] = make([]byte, probeSize)
		rand.Read(probes[i])
		os.WriteFile(filepath.Join(src, fmt.Sprintf("a-probe-%03d", i)), probes[i], 0o644)
	}
	img := filepath.Join(work, "img.erofs")
	if out, err := exec.Command(bins["erofs-image"], "build", "--chunk-size", "256K", "--blob-dir", blobs, "-o", img, src).CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v\n%s", err, out)
	}

	mgr, err := fakesystemd.Listen(work)
	if err != nil {
		return err
	}
	defer mgr.Close()
	sock, metricsAddr := filepath.Join(work, "erofsd.sock"), freeAddr()
	args := []string{"supervise", "--socket", sock, "--cache-dir", filepath.Join(work, "cache"), "--state-dir", filepath.Join(work, "state"),
		"--blob-dir", blobs, "--frontend", "fanotify", "--metrics-addr", metricsAddr, "--log-level", "warn"}
	var logs bytes.Buffer
	var logMu sync.Mutex
	logw := writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(p) })
	start := func() (*exec.Cmd, error) {
		cmd := mgr.Command(bins["erofsd"], args...)
		cmd.Stdout, cmd.Stderr = logw, logw
		cmd.WaitDelay = time.Second
		return cmd, cmd.Start()
	}
	sup, err := start()
	if err != nil {
		return err
	}
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	defer func() {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		sup.Process.Signal(syscall.SIGTERM)
		sup.Wait()
	}()
	c := control.NewClient(sock)
	ctx := context.Background()
	daemonPID := func(old int) (int, error) {
		for i := 0; i < 1000; i++ {
			if st, err := c.Status(ctx); err == nil && st.PID != old {
				return st.PID, nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		logMu.Lock()
		defer logMu.Unlock()
		return 0, fmt.Errorf("no daemon answers\n%s", logs.String())
	}
	pid, err := daemonPID(0)
	if err != nil {
		return err
	}
	if _, err := c.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: "bench", Bootstrap: img}, Mountpoint: mnt}); err != nil {
		return err
	}

	hist := map[float64]float64{} // le -> cumulative count, summed over daemons
	var failovers, lats []time.Duration
	lostBefore, filledAll := 0, false
	what := "the daemon (the supervisor restarts it)"
	if killSupervisor {
		what = "supervisor and daemon (restart from the fd store)"
	}
	fmt.Printf("fanotify failover on this kernel, %d MiB streamed by 8 readers per round, SIGKILL of %s, %d round(s):\n", sizeMiB, what, rounds)
	for round := 0; round < rounds; round++ {
		time.Sleep(gap)
		wait := streamReaders(filepath.Join(mnt, fmt.Sprintf("big-%03d", round)), streamed[round], 8)
		time.Sleep(150 * time.Millisecond)
		if err := scrapeHistogram(metricsAddr, hist); err != nil {
			return err
		}
		probe := rounds - 1 - round
		probePath := filepath.Join(mnt, fmt.Sprintf("a-probe-%03d", probe))
		killed := time.Now()
		if killSupervisor {
			sup.Process.Kill()
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return err
		}
		// The probe starts once the old daemon is gone, so only a new
		// one can answer it; the time still counts from the kill.
		for fakesystemd.Alive(pid) {
			time.Sleep(100 * time.Microsecond)
		}
		type result struct {
			data []byte
			err  error
			at   time.Time
		}
		done := make(chan result, 1)
		go func() {
			b, err := os.ReadFile(probePath)
			done <- result{b, err, time.Now()}
		}()
		if killSupervisor {
			// As systemd: once the unit's processes are gone, start it
			// again with the fds from its store.
			sup.Wait()
			if sup, err = start(); err != nil {
				return err
			}
		}
		res := <-done
		if res.err != nil || !bytes.Equal(res.data, probes[probe]) {
			logMu.Lock()
			defer logMu.Unlock()
			return fmt.Errorf("probe %d after the kill: %v (%d bytes)\n%s", probe, res.err, len(res.data), logs.String())
		}
		if pid, err = daemonPID(pid); err != nil {
			return err
		}
		// A daemon killed between taking events and journaling them
		// leaves a lost batch: the next one fills every watched file
		// before answering, which makes every later probe present.
		logMu.Lock()
		lost := strings.Count(logs.String(), "answered events lost by the previous daemon")
		logMu.Unlock()
		d := res.at.Sub(killed)
		switch {
		case filledAll:
			fmt.Printf("  round %d: %.1f ms, not counted: an earlier lost-batch recovery had filled the probe\n", round+1, ms(d))
		case lost > lostBefore:
			fmt.Printf("  round %d: %.1f ms, including a lost-batch recovery (every watched file filled first)\n", round+1, ms(d))
			failovers = append(failovers, d)
			filledAll = true
		default:
			fmt.Printf("  round %d: %.1f ms\n", round+1, ms(d))
			failovers = append(failovers, d)
		}
		lostBefore = lost
		got, err := wait()
		if err != nil {
			return err
		}
		lats = append(lats, got...)
	}
	if err := scrapeHistogram(metricsAddr, hist); err != nil {
		return err
	}
	report(failovers, hist, lats)
	return nil
}

// streamReaders starts 8 readers of path, each reading it all once in
// 128 KiB pieces spread over the file and checking the bytes; wait
// returns their read(2) latencies or the first error.
func streamReaders(path string, want []byte, n int) (wait func() ([]time.Duration, error)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lats []time.Duration
	var firstErr error
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			fail := func(err error) {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
			f, err := os.Open(path)
			if err != nil {
				fail(err)
				return
			}
			defer f.Close()
			buf := make([]byte, 128<<10)
			pieces := len(want) / len(buf)
			mine := make([]time.Duration, 0, pieces)
			for i := 0; i < pieces; i++ {
				off := int64((i*8 + r*67) % pieces * len(buf))
				t0 := time.Now()
				if _, err := f.ReadAt(buf, off); err != nil {
					fail(fmt.Errorf("reader %d at %d: %w", r, off, err))
					return
				}
				mine = append(mine, time.Since(t0))
				if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
					fail(fmt.Errorf("reader %d: wrong bytes at %d", r, off))
					return
				}
				time.Sleep(time.Millisecond)
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}(r)
	}
	return func() ([]time.Duration, error) {
		wg.Wait()
		return lats, firstErr
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:9851"
	}
	defer l.Close()
	return l.Addr().String()
}

// scrapeHistogram adds the daemon's fanotify READ latency buckets to
// hist (a daemon's histogram dies with it: each is scraped before its
// kill).
func scrapeHistogram(addr string, hist map[float64]float64) error {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return fmt.Errorf("scraping: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const prefix = `erofsd_read_duration_seconds_bucket{frontend="fanotify",le="`
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		leStr, val, _ := strings.Cut(rest, `"} `)
		le, err1 := strconv.ParseFloat(leStr, 64)
		v, err2 := strconv.ParseFloat(val, 64)
		if err1 == nil && err2 == nil {
			hist[le] += v
		}
	}
	return sc.Err()
}

// quantile interpolates within the histogram's buckets as Prometheus'
// histogram_quantile does.
func quantile(q float64, hist map[float64]float64) float64 {
	les := slices.Sorted(func(yield func(float64) bool) {
		for le := range hist {
			if !yield(le) {
				return
			}
		}
	})
	if len(les) == 0 {
		return math.NaN()
	}
	total := hist[les[len(les)-1]]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	prevLE, prevCount := 0.0, 0.0
	for _, le := range les {
		if hist[le] >= rank {
			if math.IsInf(le, 1) {
				return prevLE
			}
			return prevLE + (le-prevLE)*(rank-prevCount)/(hist[le]-prevCount)
		}
		prevLE, prevCount = le, hist[le]
	}
	return prevLE
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)]
}

func report(failovers []time.Duration, hist map[float64]float64, lats []time.Duration) {
	msStr := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms(d)) }
	if len(failovers) == 0 {
		return
	}
	fmt.Printf("  kill -9 to the first read served by the new daemon: median %s, min %s, max %s\n",
		msStr(percentile(failovers, 0.5)), msStr(slices.Min(failovers)), msStr(slices.Max(failovers)))
	count := 0.0
	for le, v := range hist {
		if math.IsInf(le, 1) {
			count = v
		}
	}
	fmt.Printf("  READ latency from the daemons' histograms (%.0f events): p50 %.2f ms, p99 %.2f ms\n",
		count, 1000*quantile(0.5, hist), 1000*quantile(0.99, hist))
	fmt.Printf("  readers' read(2) of 128 KiB (%d reads): p50 %s, p99 %s, max %s\n",
		len(lats), msStr(percentile(lats, 0.5)), msStr(percentile(lats, 0.99)), msStr(slices.Max(lats)))
}
