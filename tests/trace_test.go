package tests

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testcontainerd"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/erofsd/erofsd/prefetchlist"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestTraceOptimizeStart is the start-order loop end to end, with the
// real commands on this machine's kernel: a scripted start (sha256sum of
// 40 files of the 3,000 in a lazily mounted image, and 32 KiB from the
// middle of a 4 MiB file) runs under erofsctl trace; erofs-image optimize
// re-lays the image for the list it wrote; a second cold start of the
// optimized image through a fresh erofsd prints the same checksums after
// far fewer, larger store reads, every one of them the start set's.
func TestTraceOptimizeStart(t *testing.T) {
	require.Host(t, require.Root, require.FileBackedErofs, func() error { return fanotify.Supported(t.TempDir()) },
		func() error {
			_, err := erofstrace.Open(0, nil) // BPF, tracefs and the EROFS tracepoints
			return err
		})
	bins := buildCommands(t, "erofsd", "erofsctl", "erofs-image")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	rng := rand.New(rand.NewPCG(13, 13))
	var files []string
	for i := range 3000 {
		name := fmt.Sprintf("lib%02d/mod%04d.py", i%60, i)
		files = append(files, name)
		data := make([]byte, 200+rng.IntN(16<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 4<<20)
	for j := range big {
		big[j] = byte(rng.Uint32())
	}
	os.WriteFile(filepath.Join(src, "data.bin"), big, 0o644)
	var workload []string
	for i := range 40 {
		workload = append(workload, files[(i*977)%len(files)])
	}
	script := "cd \"$1\" && sha256sum " + strings.Join(workload, " ") +
		" && dd if=data.bin bs=4096 skip=300 count=8 status=none | sha256sum"

	img, blobs := filepath.Join(work, "img"), filepath.Join(work, "blobs")
	runOK(t, bins["erofs-image"], "build", "--blob-dir", blobs, "-o", img, src)

	// The first start, lazy, traced.
	esd := startErofsd(t, bins, erofsdOptions{})
	mnt := filepath.Join(esd.dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := esd.ctl("mount", "--fsid", "plain", "--blob-dir", blobs, img, mnt); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	list := filepath.Join(work, "start.list")
	cmd := exec.Command(bins["erofsctl"], "trace", "--output", list, mnt, "--", "sh", "-c", script, "sh", mnt)
	var lazyOut, traceErr strings.Builder
	cmd.Stdout, cmd.Stderr = &lazyOut, &traceErr
	if err := cmd.Run(); err != nil {
		t.Fatalf("erofsctl trace: %v\n%s", err, traceErr.String())
	}
	t.Log(strings.TrimSpace(traceErr.String()))
	lazyReqs, lazyBytes := storeReads(t, esd)
	if out, err := esd.ctl("umount", mnt); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}

	// The list: the files in the order the start read them first, and a
	// range of data.bin, not all of it.
	l, err := prefetchlist.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range l.Entries {
		if e.Path != "/data.bin" {
			got = append(got, strings.TrimPrefix(e.Path, "/"))
		}
	}
	if strings.Join(got, " ") != strings.Join(workload, " ") {
		t.Fatalf("traced files:\n%q\nwant the workload's, in order:\n%q", got, workload)
	}
	var dataRanges []prefetchlist.Range
	for _, e := range l.Entries {
		if e.Path == "/data.bin" {
			dataRanges = e.Ranges
		}
	}
	if len(dataRanges) == 0 || dataRanges[0].Off > 300*4096 || dataRanges[len(dataRanges)-1].End() < 308*4096 {
		t.Fatalf("data.bin ranges %+v: want the ones read, not the whole file", dataRanges)
	}

	// Re-laid for the list, then started cold through a fresh erofsd.
	opt, optBlobs := filepath.Join(work, "opt"), filepath.Join(work, "opt-blobs")
	runOK(t, bins["erofs-image"], "optimize", "--blob-dir", blobs, "--out-blob-dir", optBlobs, "--prefetch-list", list, img, opt)
	esd2 := startErofsd(t, bins, erofsdOptions{})
	mnt2 := filepath.Join(esd2.dir, "mnt")
	os.Mkdir(mnt2, 0o755)
	if out, err := esd2.ctl("mount", "--fsid", "opt", "--blob-dir", optBlobs, opt, mnt2); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	pollUntil(t, 30*time.Second, "the start set to be fetched", func() bool {
		st, err := esd2.api.Status(context.Background())
		return err == nil && st.Counters["start_set_fetched_bytes_total"] > 0 && st.Counters["prefetch_bytes_left"] == 0
	})
	out, err := exec.Command("sh", "-c", script, "sh", mnt2).Output()
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	optReqs, optBytes := storeReads(t, esd2)
	if want := lazyOut.String(); string(out) != want || !strings.Contains(want, "data.bin") && strings.Count(want, "\n") != len(workload)+1 {
		t.Fatalf("the optimized image's start printed\n%s\nthe first start\n%s", out, want)
	}
	st, _ := esd2.api.Status(context.Background())
	t.Logf("lazy start: %d store reads, %d bytes; optimized: %d reads, %d bytes (start set %d bytes, %d hits, %d late, %d misses)",
		lazyReqs, lazyBytes, optReqs, optBytes, st.Counters["start_set_fetched_bytes_total"], st.Counters["start_set_hits_total"],
		st.Counters["start_set_late_total"], st.Counters["start_set_misses_total"])
	if optReqs*4 > lazyReqs {
		t.Errorf("optimized start: %d store reads, the lazy one %d: want at least 4x fewer", optReqs, lazyReqs)
	}
	if optReqs == 0 || lazyReqs == 0 || optBytes/optReqs <= 2*(lazyBytes/lazyReqs) {
		t.Errorf("store reads average %d bytes optimized, %d lazy: want them at least twice as large", optBytes/max(optReqs, 1), lazyBytes/max(lazyReqs, 1))
	}
	if st.Counters["start_set_hits_total"] == 0 {
		t.Errorf("the second start found no start set chunk fetched ahead")
	}
	if st.Counters["start_set_misses_total"] != 0 {
		t.Errorf("the second start read %d chunks outside its start set", st.Counters["start_set_misses_total"])
	}
}

// storeReads returns the local store's reads and the bytes erofsd fetched.
func storeReads(t *testing.T, e *erofsdProc) (int64, int64) {
	t.Helper()
	st, err := e.api.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Counters["backend_requests_total{backend=local}"], st.Counters["backend_fetched_bytes_total"]
}

// runOK runs a command that must succeed.
func runOK(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// traceContainer creates a container of ref running args in pod, starts
// it under erofsctl trace --container, waits for it to exit and returns
// the prefetch list the trace wrote and the container's id.
func traceContainer(ctx context.Context, e *erofsdProc, ctd *testcontainerd.Containerd, pod *testcontainerd.Pod, ref, name string, args ...string) (*prefetchlist.List, string, error) {
	id, err := pod.Create(ctx, name, ref, args...)
	if err != nil {
		return nil, "", err
	}
	list := filepath.Join(e.dir, name+".list")
	cmd := exec.CommandContext(ctx, e.bins["erofsctl"], "--socket", filepath.Join(e.dir, "erofsd.sock"), "trace", "--container", id, "--output", list)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, id, err
	}
	if err := cmd.Start(); err != nil {
		return nil, id, err
	}
	defer cmd.Process.Kill()
	// It says so once attached.
	first := make([]byte, 4096)
	n, _ := io.ReadAtLeast(stderr, first, len("tracing reads on"))
	if !strings.HasPrefix(string(first[:n]), "tracing reads on") {
		rest, _ := io.ReadAll(stderr)
		cmd.Wait()
		return nil, id, fmt.Errorf("erofsctl trace --container %s: %s%s", id, first[:n], rest)
	}
	if _, err := ctd.Runtime.StartContainer(ctx, &rt.StartContainerRequest{ContainerId: id}); err != nil {
		return nil, id, fmt.Errorf("StartContainer: %w", err)
	}
	if code, err := pod.Wait(ctx, id); err != nil || code != 0 {
		return nil, id, fmt.Errorf("traced container exited %d: %v", code, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(stderr)
	if err := cmd.Wait(); err != nil {
		return nil, id, fmt.Errorf("erofsctl trace: %v\n%s", err, rest)
	}
	l, err := prefetchlist.ReadFile(list)
	return l, id, err
}
