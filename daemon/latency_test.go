package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/testutil/scrape"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
)

// TestKernelReadLatency: with --kernel-read-latency, reads of a mount's
// files show in erofsd_kernel_read_seconds for that mount, counted once
// each, and a second mount's stay its own.
func TestKernelReadLatency(t *testing.T) {
	needFanotify(t)
	if m, err := erofstrace.OpenLatency(nil); err != nil {
		if errors.Is(err, erofstrace.ErrUnsupported) {
			t.Skipf("no kernel read latency here: %v", err)
		}
		t.Fatal(err)
	} else {
		m.Close()
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "f"), 1<<20)
	blobs := filepath.Join(dir, "blobs")
	img := buildImage(t, src, blobs, 0)
	cfg := cliConfig(t, dir)
	cfg.BlobDir, cfg.KernelReadLatency = blobs, true
	td := startDaemon(t, holderOf(t), cfg)
	ctx := context.Background()
	mnts := []string{mountpoint(t), mountpoint(t)}
	for i, mnt := range mnts {
		if _, err := td.api.Mount(ctx, control.MountRequest{RegisterRequest: control.RegisterRequest{FSID: fmt.Sprintf("img%d", i), Bootstrap: img},
			Mountpoint: mnt, Frontend: "fanotify"}); err != nil {
			t.Fatalf("mount: %v", err)
		}
		defer td.api.Unmount(ctx, mnt)
	}
	key := func(i int) string {
		return fmt.Sprintf(`erofsd_kernel_read_seconds_count{fsid="img%d",mountpoint="%s"}`, i, mnts[i])
	}
	before := scrape.Metrics(t, cfg.MetricsAddr)
	f, err := os.Open(filepath.Join(mnts[0], "f"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	const reads = 50
	for i := range reads {
		if _, err := f.ReadAt(buf, int64(i)*8192); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	after := scrape.Metrics(t, cfg.MetricsAddr)
	if got := after[key(0)] - before[key(0)]; got < reads || got > reads+2 {
		t.Errorf("%d preads of img0: %v counted", reads, got)
	}
	if got := after[key(1)] - before[key(1)]; got != 0 {
		t.Errorf("img1 counted %v reads of img0's files", got)
	}
	if _, ok := after[key(1)]; !ok {
		t.Errorf("no histogram for img1:\n%v", after)
	}
}
