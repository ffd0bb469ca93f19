package daemon

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/snapshotter"
)

// A registry that accepts connections and never answers costs a
// snapshotter mount a bounded time, not the image's lock for ever.
func TestSnapshotterMountHungRegistry(t *testing.T) {
	needFanotify(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	host := l.Addr().String()
	cfg := testConfig(t.TempDir())
	cfg.RequestTimeout = time.Second
	cfg.Snapshotter.PlainHTTPHosts = []string{host}
	td := startDaemon(t, holderOf(t), cfg)

	manifest := "sha256:" + strings.Repeat("a", 64)
	start := time.Now()
	err = snapshotterImages{td.Daemon}.MountImage(context.Background(), snapshotter.Image{
		Ref: host + "/app@" + manifest, Chain: "sha256:" + strings.Repeat("b", 64), Dir: t.TempDir(), FSID: "ctrd-1"})
	took := time.Since(start)
	if err == nil {
		t.Fatal("mounted from a registry that never answers")
	}
	if took > 10*time.Second {
		t.Errorf("took %v to give up (request timeout 1s)", took)
	}
	if errors.Is(err, control.ErrBadRequest) {
		t.Errorf("a hung registry is not a bad request: %v", err)
	}
}
