package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/fdhold"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/sirupsen/logrus"
)

// testDaemon is a Daemon running in the test process, with a holder of
// its kernel fds standing in for "erofsd supervise" (the fanotify front
// end only runs held), so that a second testDaemon on the same holder is
// a restarted daemon.
type testDaemon struct {
	*Daemon
	t      *testing.T
	cfg    Config
	holder *fdhold.Holder
	api    *control.Client
	logs   *strings.Builder
	cancel context.CancelFunc
	done   chan error
}

// holderOf starts an in-process holder for daemons of a test.
func holderOf(t *testing.T) *fdhold.Holder {
	h := fdhold.NewHolder()
	t.Cleanup(h.Close)
	return h
}

// needFanotify skips unless this kernel serves through fanotify as root.
func needFanotify(t *testing.T) {
	t.Helper()
	require.Host(t, require.FileBackedErofs, func() error { return fanotify.Supported(t.TempDir()) })
}

// testConfig is a Config with the daemon's dirs and socket in dir.
func testConfig(dir string) Config {
	return Config{CacheDir: filepath.Join(dir, "cache"), StateDir: filepath.Join(dir, "state"),
		Socket: filepath.Join(dir, "erofsd.sock"), Frontend: "fanotify", Version: "test"}
}

// startDaemon runs New(cfg).Run in the background with a client of
// holder as its supervisor and waits until its API answers. It is
// stopped for good when the test ends, unless stopped before.
func startDaemon(t *testing.T, holder *fdhold.Holder, cfg Config) *testDaemon {
	t.Helper()
	sup, dmn, err := fdhold.Pair()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- holder.Serve(sup) }()
	logs := &strings.Builder{}
	log := logrus.New()
	log.SetOutput(lockedWriter{b: logs})
	cfg.Logger = log
	cfg.Supervisor = fdhold.NewClient(dmn)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{Daemon: d, t: t, cfg: cfg, holder: holder, api: control.NewClient(cfg.Socket), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := d.Run(ctx)
		dmn.Close()
		<-served
		sup.Close()
		td.done <- err
	}()
	t.Cleanup(func() {
		td.stop(false)
		if t.Failed() {
			t.Logf("erofsd log:\n%s", logs.String())
		}
	})
	for i := 0; ; i++ {
		if _, err := td.api.Status(context.Background()); err == nil {
			return td
		}
		select {
		case err := <-td.done:
			t.Fatalf("erofsd ended at start: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			t.Fatalf("erofsd does not answer:\n%s", logs.String())
		}
	}
}

// stop ends the daemon: for good, or handing over to a next one (its
// mounts then wait for that one). It returns how long Run took to end;
// calling it again does nothing.
func (td *testDaemon) stop(handover bool) time.Duration {
	if td.cancel == nil {
		return 0
	}
	if handover {
		td.HandOver()
	}
	start := time.Now()
	td.cancel()
	td.cancel = nil
	select {
	case err := <-td.done:
		if err != nil {
			td.t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		td.t.Fatalf("Run did not return 30 s after its context ended")
	}
	return time.Since(start)
}

// counter reads a status counter by key.
func (td *testDaemon) counter(key string) int64 {
	td.t.Helper()
	st, err := td.api.Status(context.Background())
	if err != nil {
		td.t.Fatal(err)
	}
	return st.Counters[key]
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// lockedWriter lets the daemon's logger and the test read one buffer.
type lockedWriter struct{ b *strings.Builder }

var logMu = make(chan struct{}, 1)

func (w lockedWriter) Write(p []byte) (int, error) {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return w.b.Write(p)
}
