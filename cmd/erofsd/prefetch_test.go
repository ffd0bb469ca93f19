package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
)

func TestPrefetchConfigKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	for config, key := range map[string]string{
		"prefetch = \"lazy\"\n":      "prefetch",
		"prefetch_rate = \"fast\"\n": "prefetch_rate",
		"prefetch_rate = -1\n":       "prefetch_rate",
	} {
		os.WriteFile(p, []byte(config), 0o644)
		err := run([]string{"--config", p, "--version"})
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("config %q: %v; want an error naming %s", config, err, key)
		}
	}
	os.WriteFile(p, []byte("prefetch = \"whole\"\nprefetch_rate = \"100M\"\n"), 0o644)
	if err := run([]string{"--config", p, "--version"}); err != nil {
		t.Errorf("good prefetch keys: %v", err)
	}
}

// TestDaemonPrefetchResumes kills the daemon (SIGKILL) while a slow
// prefetch runs: the restarted daemon resumes it from its state and
// completes the blobs, without fetching what was already in the cache.
func TestDaemonPrefetchResumes(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	img, blobs, big := bigFileImage(t, bins, dir, 6<<20)
	rd := startDaemon(t, bins, dir, "--blob-dir", blobs, "--frontend", "fanotify", "--prefetch-rate", "2M")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := rd.ctl("mount", "--prefetch", "whole", img, mnt); err != nil {
		t.Fatalf("erofsctl mount: %v\n%s", err, out)
	}
	defer rd.ctl("umount", mnt)
	pid := func() int {
		out, err := rd.ctl("status", "--json")
		if err != nil {
			return 0
		}
		var st control.Status
		if json.Unmarshal([]byte(out), &st) != nil {
			return 0
		}
		return st.PID
	}
	// Some of it fetched, not all: then the daemon dies.
	deadline := time.Now().Add(30 * time.Second)
	for scrape.Metrics(t, rd.metrics)["erofsd_prefetch_bytes_done_total"] < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatal("prefetch did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	first := pid()
	if first == 0 {
		t.Fatal("no daemon pid")
	}
	syscall.Kill(first, syscall.SIGKILL)
	deadline = time.Now().Add(30 * time.Second)
	for p := pid(); p == 0 || p == first; p = pid() {
		if time.Now().After(deadline) {
			t.Fatal("the daemon was not restarted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The new daemon finishes the prefetch: the blob completes.
	deadline = time.Now().Add(60 * time.Second)
	for {
		m := scrape.Metrics(t, rd.metrics)
		if m["erofsd_prefetch_bytes_done_total"] > 0 && m["erofsd_prefetch_bytes_left"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the prefetch was not resumed: done %v, left %v", m["erofsd_prefetch_bytes_done_total"], m["erofsd_prefetch_bytes_left"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(rd.logs.String(), "resuming prefetch") {
		t.Error("the log does not say the prefetch was resumed")
	}
	before := scrape.Metrics(t, rd.metrics)["erofsd_backend_fetches_total"]
	data, err := os.ReadFile(filepath.Join(mnt, "big"))
	if err != nil || !bytes.Equal(data, big) {
		t.Fatalf("reading after the resumed prefetch: %v", err)
	}
	if f := scrape.Metrics(t, rd.metrics)["erofsd_backend_fetches_total"] - before; f != 0 {
		t.Errorf("reading after the resumed prefetch fetched %v chunks", f)
	}
}

// runningDaemon is an "erofsd supervise" started for a test.
type runningDaemon struct {
	cmd     *exec.Cmd
	sock    string
	metrics string
	logs    *strings.Builder
	bins    map[string]string
}

// startDaemon runs erofsd supervise with its own socket, cache, state
// and metrics address, plus args, and waits until it answers.
func startDaemon(t *testing.T, bins map[string]string, dir string, args ...string) *runningDaemon {
	t.Helper()
	d := &runningDaemon{sock: filepath.Join(dir, "erofsd.sock"), metrics: scrape.FreeAddr(t), logs: &strings.Builder{}, bins: bins}
	d.cmd = exec.Command(bins["erofsd"], append([]string{"supervise", "--socket", d.sock, "--cache-dir", filepath.Join(dir, "cache"),
		"--state-dir", filepath.Join(dir, "state"), "--metrics-addr", d.metrics}, args...)...)
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Signal(syscall.SIGTERM)
			d.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("erofsd log:\n%s", d.logs.String())
		}
	})
	for i := 0; i < 100; i++ {
		if _, err := d.ctl("status"); err == nil {
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("erofsd does not answer:\n%s", d.logs.String())
	return nil
}

func (d *runningDaemon) ctl(args ...string) (string, error) {
	out, err := exec.Command(d.bins["erofsctl"], append([]string{"--socket", d.sock}, args...)...).CombinedOutput()
	return string(out), err
}
