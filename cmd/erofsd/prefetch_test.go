package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testtree"
	"github.com/erofsd/erofsd/internal/treecmp"
)

// TestDaemonPrefetch drives the real binaries: a mount with a prefetch
// list and --prefetch whole fills every blob in the background (the
// metrics show its progress), after which reading every file fetches
// nothing and no read waits for erofsd.
func TestDaemonPrefetch(t *testing.T) {
	dir := t.TempDir()
	bins := fanotifyBins(t, dir)
	src := filepath.Join(dir, "src")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 8<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big"), big, 0o644)
	img, blobs := filepath.Join(dir, "img.erofs"), filepath.Join(dir, "blobs")
	if out, err := exec.Command(bins["erofs-image"], "build", "--blob-dir", blobs, "--chunk-size", "256K", "-o", img, src).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	rd := startDaemon(t, bins, dir, "--blob-dir", blobs, "--prefetch", "whole", "--prefetch-rate", "64M")
	ctl, metricsAddr := rd.ctl, rd.metrics
	list := filepath.Join(dir, "list")
	os.WriteFile(list, []byte("# read at start\n/big\n\nnot/there\n"), 0o644)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := ctl("mount", "--prefetch-list", list, img, mnt); err != nil {
		t.Fatalf("erofsctl mount: %v\n%s", err, out)
	}
	defer ctl("umount", mnt)
	var m map[string]float64
	deadline := time.Now().Add(60 * time.Second)
	for {
		m = scrape(t, metricsAddr)
		if m["erofsd_prefetch_bytes_done_total"] > 0 && m["erofsd_prefetch_bytes_left"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch not done in 60 s: done %v, left %v", m["erofsd_prefetch_bytes_done_total"], m["erofsd_prefetch_bytes_left"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m["erofsd_prefetch_bytes_done_total"] < float64(len(big)) {
		t.Errorf("prefetch done: %v bytes, less than the big file", m["erofsd_prefetch_bytes_done_total"])
	}
	out, _ := ctl("status")
	if !strings.Contains(out, "prefetch_bytes_done") {
		t.Errorf("status lacks the prefetch counters:\n%s", out)
	}
	reads := `erofsd_kernel_requests_total{frontend="fanotify",result="ok",type="read"}`
	if _, err := os.Stat("/dev/cachefiles"); err == nil {
		reads = `erofsd_kernel_requests_total{frontend="cachefiles",result="ok",type="read"}`
	}
	diffs, err := treecmp.Compare(src, mnt, treecmp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
	after := scrape(t, metricsAddr)
	if f := after["erofsd_backend_fetches_total"] - m["erofsd_backend_fetches_total"]; f != 0 {
		t.Errorf("reading every file after the prefetch fetched %v chunks", f)
	}
	if r := after[reads] - m[reads]; r != 0 {
		t.Errorf("reading every file after the prefetch: %v kernel read requests", r)
	}
	for _, line := range strings.Split(rd.logs.String(), "\n") {
		if strings.Contains(line, "prefetch") {
			t.Log(line)
		}
	}
	if !strings.Contains(rd.logs.String(), "not/there") || !strings.Contains(rd.logs.String(), "prefetch done") {
		t.Errorf("the log does not report the prefetch and the missing path")
	}
}

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
	for scrape(t, rd.metrics)["erofsd_prefetch_bytes_done_total"] < 1<<20 {
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
		m := scrape(t, rd.metrics)
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
	before := scrape(t, rd.metrics)["erofsd_backend_fetches_total"]
	data, err := os.ReadFile(filepath.Join(mnt, "big"))
	if err != nil || !bytes.Equal(data, big) {
		t.Fatalf("reading after the resumed prefetch: %v", err)
	}
	if f := scrape(t, rd.metrics)["erofsd_backend_fetches_total"] - before; f != 0 {
		t.Errorf("reading after the resumed prefetch fetched %v chunks", f)
	}
}
