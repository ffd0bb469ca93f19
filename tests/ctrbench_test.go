package tests

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/hostcap"
	"github.com/erofsd/erofsd/internal/testutil/benchstat"
	"github.com/erofsd/erofsd/internal/testutil/faultproxy"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testcontainerd"
	"github.com/erofsd/erofsd/internal/testutil/testconvert"
	"github.com/erofsd/erofsd/internal/testutil/testoci"
	"github.com/erofsd/erofsd/internal/testutil/testregistry"
	"github.com/erofsd/erofsd/oci"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pyCommand is the container's command: a Python program's start, a few
// standard modules imported (C extensions and the libraries they load
// among them), then one line printed.
var pyCommand = []string{"/usr/bin/python3", "-c",
	"import json, email.parser, http.client, urllib.request, decimal, asyncio, logging, argparse, " +
		"sqlite3, ssl, hashlib, xml.etree.ElementTree, csv, zipfile; print('ready', flush=True)"}

// BenchmarkContainerStart measures "time to first output" of a container
// through CRI: from PullImage's start to the first stdout line of the
// container in its CRI log (that line's timestamp), the pod sandbox
// already running; and the bytes the registry served meanwhile. The
// image is built from the host's python3: the C library and the
// libraries python3 and its extension modules load, python3 with its
// standard library, and a 256 MiB layer of incompressible data the
// command never reads. It runs, in one run, through containerd's own
// overlayfs snapshotter (the source image: full download and unpack,
// then run) and through erofsd's snapshotter (the converted image,
// lazily), alternating, each round cold (the image removed through CRI,
// erofsd's cache files of it deleted), on loopback and through a
// simulated slow link (the fault proxy adding 20 ms to every request, a
// token bucket capping the bandwidth at 1 Gbit/s), and prints the
// medians next to the targets and to Slacker's (FAST'16) figures. Two
// more erofsd variants run in each round: the image converted again with
// a start set (the start traced once with erofsctl trace --container,
// then convert --prefetch-list), and the plain converted image through a
// second erofsd with --readahead-across-files (the old readahead by blob
// offsets); with each, the bytes fetched against the bytes the command
// opens. Run with:
//
//	go test -run '^$' -bench ContainerStart -benchtime 1x ./tests/
//
// EROFSD_BENCH_ROUNDS sets the rounds per snapshotter and link (3),
// EROFSD_BENCH_FLAGS adds erofsd flags (e.g. "--readahead-window 0") and
// EROFSD_BENCH_CHUNK the converted image's chunk size (bytes; 0: the
// converter's default), to try settings.
func BenchmarkContainerStart(b *testing.B) {
	require.Host(b, require.Root, require.FileBackedErofs, require.Tool("ldd", "libc-bin"), hostPython,
		func() error { return fanotify.Supported(b.TempDir()) })
	rounds := envInt(b, "EROFSD_BENCH_ROUNDS", 3)
	if rounds < 1 {
		rounds = 1
	}
	bins := buildCommands(b, "erofsd", "erofsctl")
	reg := testregistry.Start(b, testregistry.Options{})
	// The link: the fault proxy counts what the registry serves, adds
	// each request's latency and caps the bandwidth.
	link := faultproxy.Start(b, faultproxy.Options{Target: reg.Host})
	host := link.Host
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	img, imageFiles := pythonImage(b)
	push(b, link.Host+"/pause:1", testcontainerd.PauseImage(b))
	push(b, link.Host+"/py:src", img)
	testconvert.InRegistry(b, "oci://"+link.Host+"/py:src", "oci://"+link.Host+"/py:erofs", int64(envInt(b, "EROFSD_BENCH_CHUNK", 0)))
	fullRef, lazyRef := host+"/py:src", host+"/py:erofs"
	full, lazy := csManifest(b, fullRef), csManifest(b, lazyRef)
	fullSize, lazySize := csLayerBytes(full), csLayerBytes(lazy)
	var srcSize int64 // the layers uncompressed
	layers, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			b.Fatal(err)
		}
		srcSize += n
	}
	bigLayer := full.Layers[len(full.Layers)-1]
	touchedFiles, touched := startFootprint(b, imageFiles)

	esd := startErofsd(b, bins, erofsdOptions{plainHosts: []string{host}, extra: strings.Fields(os.Getenv("EROFSD_BENCH_FLAGS"))})
	lazyCtd := testcontainerd.Start(b, testcontainerd.Options{Snapshotter: esd.snapSocket, PlainHTTP: []string{host}, SandboxImage: host + "/pause:1"})
	// The old readahead (by blob offsets, across files), for comparison.
	esdOld := startErofsd(b, bins, erofsdOptions{plainHosts: []string{host}, extra: append(strings.Fields(os.Getenv("EROFSD_BENCH_FLAGS")), "--readahead-across-files")})
	oldCtd := testcontainerd.Start(b, testcontainerd.Options{Snapshotter: esdOld.snapSocket, PlainHTTP: []string{host}, SandboxImage: host + "/pause:1"})
	fullCtd := testcontainerd.Start(b, testcontainerd.Options{PlainHTTP: []string{host}, SandboxImage: host + "/pause:1"})
	lazyPod, err := lazyCtd.RunPod(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	fullPod, err := fullCtd.RunPod(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	oldPod, err := oldCtd.RunPod(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	dropImage := func(ctd *testcontainerd.Containerd, ref string) {
		b.Helper()
		if _, err := ctd.Images.RemoveImage(ctx, &rt.RemoveImageRequest{Image: &rt.ImageSpec{Image: ref}}); err != nil {
			b.Fatalf("RemoveImage %s: %v", ref, err)
		}
	}
	dropErofsdCache := func(esd *erofsdProc) {
		b.Helper()
		fanCache := filepath.Join(esd.dir, "cache", "fanotify")
		// Containerd's GC removes the snapshots, erofsd unmounts and
		// unregisters the image (and drops its bootstrap); its blob
		// cache files stay for the next pull (no drop on removal yet,
		// design §3.9): removed here, as the evictor removes files of
		// blobs no mount uses.
		pollUntil(b, time.Minute, "erofsd to release the image after RemoveImage", func() bool {
			ims, err := esd.api.Images(ctx)
			return err == nil && len(ims) == 0
		})
		ents, _ := os.ReadDir(fanCache)
		for _, e := range ents {
			if err := os.Remove(filepath.Join(fanCache, e.Name())); err != nil {
				b.Fatal(err)
			}
		}
	}

	// The start set: the start traced once, lazily, over loopback, and
	// the image converted again with the list (as a user would, with
	// erofsctl trace --container and erofs-image convert --prefetch-list).
	if _, err := lazyCtd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: lazyRef}}); err != nil {
		b.Fatal(err)
	}
	startList, recID, err := traceContainer(ctx, esd, lazyCtd, lazyPod, lazyRef, "record", pyCommand...)
	if err != nil {
		b.Fatal(err)
	}
	lazyCtd.Runtime.RemoveContainer(ctx, &rt.RemoveContainerRequest{ContainerId: recID})
	dropImage(lazyCtd, lazyRef)
	dropErofsdCache(esd)
	testconvert.InRegistryWith(b, "oci://"+link.Host+"/py:src", "oci://"+link.Host+"/py:erofs-start",
		oci.ConvertOptions{ChunkSize: int64(envInt(b, "EROFSD_BENCH_CHUNK", 0)), PrefetchList: startList})
	startRef := host + "/py:erofs-start"
	var listBytes int64
	for _, e := range startList.Entries {
		for _, r := range e.Ranges {
			listBytes += r.Len
		}
	}

	// A round: pull, create, start, first output, exit; then the image
	// removed and, for erofsd, its cache files, so the next round is cold
	// again (checked by what the registry served).
	n := 0
	round := func(variant int) startResult {
		b.Helper()
		n++
		lazyRun := variant != fullPull
		ctd, pod, ref := fullCtd, fullPod, fullRef
		switch variant {
		case lazyPull:
			ctd, pod, ref = lazyCtd, lazyPod, lazyRef
		case startSetPull:
			ctd, pod, ref = lazyCtd, lazyPod, startRef
		case acrossFilesPull:
			ctd, pod, ref = oldCtd, oldPod, lazyRef
		}
		res, err := startOnce(ctx, ctd, pod, link, ref, fmt.Sprintf("py%d", n))
		if err != nil {
			b.Fatalf("%s: %v", ref, err)
		}
		dropImage(ctd, ref)
		if lazyRun {
			if variant == acrossFilesPull {
				dropErofsdCache(esdOld)
			} else {
				dropErofsdCache(esd)
			}
			// Cold means blob chunks came from the registry, not only
			// the manifest, config and bootstrap.
			if min := lazy.Layers[len(lazy.Layers)-1].Size + 1<<20; res.bytesAtExit < min {
				b.Fatalf("erofsd round %d: the registry served %d bytes, less than the bootstrap and one chunk (%d): not a cold start", n, res.bytesAtExit, min)
			}
		} else {
			// RemoveImage deletes the content and the snapshots
			// (synchronous GC); checked, then by the bytes served.
			pollUntil(b, time.Minute, "containerd to delete the large layer after RemoveImage", func() bool {
				out, err := ctd.TryCtr("-n", "k8s.io", "content", "ls", "-q")
				return err == nil && !strings.Contains(out, bigLayer.Digest.String())
			})
			if res.bytes < fullSize {
				b.Fatalf("overlayfs round %d: the registry served %d bytes, less than the image's layers (%d): not a full pull", n, res.bytes, fullSize)
			}
		}
		return res
	}

	links := []struct {
		name    string
		latency time.Duration
		rate    int64
	}{
		{"loopback", 0, 0},
		{"slow link (20 ms per request, 1 Gbit/s)", 20 * time.Millisecond, 125_000_000},
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fmt.Printf("image: python3 and its standard library from this host, and a 256 MiB layer never read; %d layers, %.1f MiB uncompressed,\n"+
			"  %.1f MiB compressed (what overlayfs pulls), %.1f MiB as an erofsd image (bootstrap and blobs)\n"+
			"command: python3 -c %q\n"+
			"  it opens %d files of the image, %.1f MiB = %.1f%% of the erofsd image (mapped libraries counted whole)\n",
			len(full.Layers), csMiB(srcSize), csMiB(fullSize), csMiB(lazySize), pyCommand[2], touchedFiles, csMiB(touched), 100*float64(touched)/float64(lazySize))
		for li, l := range links {
			link.SetLink(l.latency, l.rate)
			var check string
			if l.rate > 0 {
				// The link as one stream sees it: the big layer, whole.
				mbs, err := measureLink(ctx, link.URL+"/v2/py/blobs/"+bigLayer.Digest.String(), bigLayer.Size)
				if err != nil {
					b.Fatal(err)
				}
				check = fmt.Sprintf("; one GET of the %.0f MiB layer through it: %.0f MB/s", csMiB(bigLayer.Size), mbs)
			}
			results := make([][]startResult, variants)
			for r := 0; r < rounds; r++ {
				// Alternating, and which goes first too: the machine is
				// shared and the runs warm what they share.
				for k := range variants {
					v := (r + k) % variants
					results[v] = append(results[v], round(v))
				}
			}
			fulls, lazies, starts := results[fullPull], results[lazyPull], results[startSetPull]
			tf, tl := csMedian(fulls, func(s startResult) float64 { return s.first.Seconds() }), csMedian(lazies, func(s startResult) float64 { return s.first.Seconds() })
			pf := csMedian(fulls, func(s startResult) float64 { return s.pull.Seconds() })
			pl := csMedian(lazies, func(s startResult) float64 { return s.pull.Seconds() })
			bf := csMedian(fulls, func(s startResult) float64 { return float64(s.bytes) })
			bl := csMedian(lazies, func(s startResult) float64 { return float64(s.bytes) })
			blExit := csMedian(lazies, func(s startResult) float64 { return float64(s.bytesAtExit) })
			rf := csMedian(fulls, func(s startResult) float64 { return float64(s.requests) })
			rl := csMedian(lazies, func(s startResult) float64 { return float64(s.requests) })
			prf := csMedian(fulls, func(s startResult) float64 { return float64(s.pullReqs) })
			prl := csMedian(lazies, func(s startResult) float64 { return float64(s.pullReqs) })
			ratio, share := tl/tf, bl/float64(lazySize)
			key := []string{"loop", "slow"}[li]
			target := ""
			if l.latency > 0 {
				target = " (target <= 0.2x)"
			}
			fmt.Printf("%s, median of %d rounds each%s:\n", l.name, rounds, check)
			fmt.Printf("  first output  overlayfs %6.2fs %s  erofsd %5.2fs %s  = %.2fx%s\n", tf, csSecs(fulls), tl, csSecs(lazies), ratio, target)
			fmt.Printf("  of which pull overlayfs %6.2fs = %.0f%% of its start (Slacker: pulls are 76%%)  erofsd %5.2fs = %.0f%%\n",
				pf, 100*pf/tf, pl, 100*pl/tl)
			fmt.Printf("  bytes pulled  overlayfs %.1f MiB; erofsd %.1f MiB of %.1f MiB = %.1f%% (target < 10%%; Slacker: 6.4%% read at start)%s\n",
				csMiB(int64(bf)), csMiB(int64(bl)), csMiB(lazySize), 100*share, csExitNote(blExit, bl))
			fmt.Printf("  requests      overlayfs %.0f, erofsd %.0f (containerd's and erofsd's together; during PullImage %.0f and %.0f)\n", rf, rl, prf, prl)
			ts := csMedian(starts, func(s startResult) float64 { return s.first.Seconds() })
			bs := csMedian(starts, func(s startResult) float64 { return float64(s.bytes) })
			bsExit := csMedian(starts, func(s startResult) float64 { return float64(s.bytesAtExit) })
			rs := csMedian(starts, func(s startResult) float64 { return float64(s.requests) })
			fmt.Printf("  with the start set (traced once, %d files, %.1f MiB; convert --prefetch-list):\n", len(startList.Entries), csMiB(listBytes))
			fmt.Printf("    first output %5.2fs %s = %.2fx overlayfs, %.2fx lazy without it (#13 target <= 0.5x)\n", ts, csSecs(starts), ts/tf, ts/tl)
			fmt.Printf("    bytes pulled %.1f MiB = %.1f%%%s; requests %.0f\n", csMiB(int64(bs)), 100*bs/float64(lazySize), csExitNote(bsExit, bs), rs)
			olds := results[acrossFilesPull]
			to := csMedian(olds, func(s startResult) float64 { return s.first.Seconds() })
			bo := csMedian(olds, func(s startResult) float64 { return float64(s.bytes) })
			ro := csMedian(olds, func(s startResult) float64 { return float64(s.requests) })
			fmt.Printf("  fetched / opened (#16 target <= 1.5x): erofsd %.2fx (%.1f of %.1f MiB), %.0f requests; readahead across files (--readahead-across-files, the old window) %.2fx, first output %.2fs = %.2fx overlayfs, %.0f requests\n",
				bl/float64(touched), csMiB(int64(bl)), csMiB(touched), rl, bo/float64(touched), to, to/tf, ro)
			b.ReportMetric(ts/tf, key+"-startset-ratio")
			b.ReportMetric(bl/float64(touched), key+"-fetched-per-opened")
			b.ReportMetric(100*bs/float64(lazySize), key+"-startset-pulled-%")
			b.ReportMetric(ratio, key+"-start-ratio")
			b.ReportMetric(100*share, key+"-pulled-%")
			b.ReportMetric(tl, key+"-erofsd-s")
			b.ReportMetric(tf, key+"-overlayfs-s")
		}
	}
	b.StopTimer()
	link.SetLink(0, 0)
}

// The variants of a round: containerd's overlayfs with the source image,
// erofsd with the converted image, erofsd with it converted with the
// start's prefetch list, and erofsd with the converted image and the old
// readahead by blob offsets.
const (
	fullPull = iota
	lazyPull
	startSetPull
	acrossFilesPull // erofsd with --readahead-across-files
	variants
)

// startResult is one container start.
type startResult struct {
	pull, first time.Duration // from PullImage's start to its end, and to the first output
	bytes       int64         // served by the registry until the first output was seen
	bytesAtExit int64         // until the container exited
	requests    int64         // made to the registry until the first output was seen
	pullReqs    int64         // of which during PullImage
}

// startOnce pulls ref, runs pyCommand in pod as container name and times
// it; the container is removed.
func startOnce(ctx context.Context, ctd *testcontainerd.Containerd, pod *testcontainerd.Pod, link *faultproxy.Proxy, ref, name string) (startResult, error) {
	var res startResult
	before, reqs := link.BodyBytes(), link.Requests()
	start := time.Now()
	if _, err := ctd.Images.PullImage(ctx, &rt.PullImageRequest{Image: &rt.ImageSpec{Image: ref}}); err != nil {
		return res, fmt.Errorf("PullImage: %w", err)
	}
	res.pull, res.pullReqs = time.Since(start), link.Requests()-reqs
	id, err := pod.Start(ctx, name, ref, pyCommand...)
	if err != nil {
		return res, err
	}
	defer ctd.Runtime.RemoveContainer(context.WithoutCancel(ctx), &rt.RemoveContainerRequest{ContainerId: id})
	st, err := ctd.Runtime.ContainerStatus(ctx, &rt.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return res, err
	}
	logPath := st.Status.LogPath
	// The first stdout line's timestamp is when containerd read it from
	// the container: the poll's interval does not count.
	var firstAt time.Time
	for firstAt.IsZero() {
		at, ok, err := firstStdout(logPath)
		if err != nil {
			return res, err
		}
		if ok {
			firstAt, res.bytes, res.requests = at, link.BodyBytes()-before, link.Requests()-reqs
			break
		}
		if st, err := ctd.Runtime.ContainerStatus(ctx, &rt.ContainerStatusRequest{ContainerId: id}); err == nil &&
			st.Status.State == rt.ContainerState_CONTAINER_EXITED {
			if at, ok, _ := firstStdout(logPath); ok {
				firstAt, res.bytes, res.requests = at, link.BodyBytes()-before, link.Requests()-reqs
				break
			}
			out, _ := os.ReadFile(logPath)
			return res, fmt.Errorf("container exited %d without output:\n%s", st.Status.ExitCode, out)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	res.first = firstAt.Sub(start)
	code, err := pod.Wait(ctx, id)
	res.bytesAtExit = link.BodyBytes() - before
	if err != nil {
		return res, err
	}
	out, _ := os.ReadFile(logPath)
	if code != 0 || !bytes.Contains(out, []byte(" stdout F ready\n")) || bytes.Contains(out, []byte(" stderr ")) {
		return res, fmt.Errorf("container exited %d, log:\n%s", code, out)
	}
	return res, nil
}

// firstStdout returns the timestamp of the first stdout line of a CRI
// log ("TIMESTAMP STREAM P|F TEXT" lines).
func firstStdout(path string) (time.Time, bool, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ts, rest, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(rest, "stdout ") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("CRI log %s: %w", path, err)
		}
		return at, true, nil
	}
	return time.Time{}, false, sc.Err()
}

func csMedian(rs []startResult, f func(startResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return benchstat.Median(v)
}

func csSecs(rs []startResult) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%.2f", r.first.Seconds()))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func csExitNote(atExit, atFirst float64) string {
	if atExit-atFirst < 1<<20 {
		return ""
	}
	return fmt.Sprintf("; %.1f MiB by the exit", csMiB(int64(atExit)))
}

func csMiB(n int64) float64 { return float64(n) / (1 << 20) }

func csManifest(b *testing.B, ref string) *v1.Manifest {
	b.Helper()
	m, err := remoteImage(b, ref).Manifest()
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func csLayerBytes(m *v1.Manifest) int64 {
	var n int64
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// hostPython is a need: the host's python3 (Debian's, with its standard
// library under /usr/lib), from which the image is built.
func hostPython() error {
	if _, err := pythonPaths(); err != nil {
		return &hostcap.Missing{What: "/usr/bin/python3", Why: "not usable to build the benchmark's image (Debian package python3): " + err.Error(), Installable: true, Err: err}
	}
	return nil
}

// pythonPaths returns the interpreter's real path and its standard
// library directory.
func pythonPaths() ([2]string, error) {
	exe, err := filepath.EvalSymlinks("/usr/bin/python3")
	if err != nil {
		return [2]string{}, err
	}
	lib := filepath.Join("/usr/lib", filepath.Base(exe))
	if _, err := os.Stat(filepath.Join(lib, "os.py")); err != nil {
		return [2]string{}, err
	}
	return [2]string{exe, lib}, nil
}

// pythonImage builds the benchmark's image from the host: a base layer
// (the dynamic loader and the libraries ldd finds for python3 and its
// extension modules), python3 with its standard library as installed
// (its __pycache__ included, as in python images; the -dev package's
// static library under config-* left out), and 256 MiB of random data
// under /opt/app that the command never reads.
func pythonImage(b *testing.B) (v1.Image, map[string]int64) {
	b.Helper()
	files := map[string]int64{}
	paths, err := pythonPaths()
	if err != nil {
		b.Fatal(err)
	}
	exe, stdlib := paths[0], paths[1]
	dynload, _ := filepath.Glob(filepath.Join(stdlib, "lib-dynload", "*.so"))
	libs := lddPaths(b, append([]string{exe}, dynload...))

	base := newHostLayer(b, files)
	for _, l := range libs {
		base.addPath(l)
	}
	base.add(tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	base.add(tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})

	py := newHostLayer(b, files)
	py.addPath("/usr/bin/python3")
	py.addPath(stdlib)
	err = filepath.WalkDir(stdlib, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), "config-") {
			return filepath.SkipDir
		}
		py.addEntry(p)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// Debian's sitecustomize.py is a symlink into /etc.
	if site := filepath.Join("/etc", filepath.Base(stdlib), "sitecustomize.py"); csExists(site) {
		py.addPath(site)
	}

	data := newHostLayer(b, nil)
	data.add(tar.Header{Name: "opt/", Typeflag: tar.TypeDir, Mode: 0o755})
	data.add(tar.Header{Name: "opt/app/", Typeflag: tar.TypeDir, Mode: 0o755})
	data.addFile("opt/app/model.bin", testoci.Random(77, 256<<20))

	img := testoci.Image(b, []v1.Layer{base.layer(gzip.DefaultCompression), py.layer(gzip.DefaultCompression), data.layer(gzip.BestSpeed)}, "linux", "amd64")
	cf, err := img.ConfigFile()
	if err != nil {
		b.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Entrypoint = []string{"/usr/bin/python3"}
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		b.Fatal(err)
	}
	return img, files
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// lddPaths returns the libraries (and the loader) ldd lists for files.
func lddPaths(b *testing.B, files []string) []string {
	b.Helper()
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		o, err := exec.Command("ldd", f).Output()
		if err != nil {
			b.Fatalf("ldd %s: %v", f, err)
		}
		for _, m := range lddLine.FindAllStringSubmatch(string(o), -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
			}
		}
	}
	return out
}

func csExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// hostLayer writes a layer's tar of host files with their modes and
// mtimes (the .pyc files record their sources' mtimes: a layer that
// changed them would make python recompile every module).
type hostLayer struct {
	b     *testing.B
	buf   bytes.Buffer
	tw    *tar.Writer
	seen  map[string]bool
	files map[string]int64 // host files added, by path: their sizes
}

func newHostLayer(b *testing.B, files map[string]int64) *hostLayer {
	l := &hostLayer{b: b, seen: map[string]bool{}, files: files}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

// add writes a header (and no body) once per name.
func (l *hostLayer) add(h tar.Header) {
	if l.seen[h.Name] {
		return
	}
	l.seen[h.Name] = true
	if h.ModTime.IsZero() {
		h.ModTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	h.Format = tar.FormatPAX
	if err := l.tw.WriteHeader(&h); err != nil {
		l.b.Fatal(err)
	}
}

func (l *hostLayer) addFile(name string, body []byte) {
	l.add(tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
	if _, err := l.tw.Write(body); err != nil {
		l.b.Fatal(err)
	}
}

// addEntry adds the host path p as it is (a directory, a file or a
// symlink, not followed); its parents must be in the layer already.
func (l *hostLayer) addEntry(p string) {
	fi, err := os.Lstat(p)
	if err != nil {
		l.b.Fatal(err)
	}
	name := strings.TrimPrefix(p, "/")
	if l.seen[name] || l.seen[name+"/"] {
		return
	}
	var target string
	if fi.Mode()&fs.ModeSymlink != 0 {
		if target, err = os.Readlink(p); err != nil {
			l.b.Fatal(err)
		}
	}
	h, err := tar.FileInfoHeader(fi, target)
	if err != nil {
		l.b.Fatal(err)
	}
	h.Name, h.Uid, h.Gid, h.Uname, h.Gname = name, 0, 0, "", ""
	switch {
	case fi.IsDir():
		h.Name += "/"
		l.add(*h)
	case fi.Mode().IsRegular():
		body, err := os.ReadFile(p)
		if err != nil {
			l.b.Fatal(err)
		}
		l.add(*h)
		if _, err := l.tw.Write(body); err != nil {
			l.b.Fatal(err)
		}
		if l.files != nil {
			l.files[p] = int64(len(body))
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		l.add(*h)
	default:
		l.b.Fatalf("%s: not a file, directory or symlink", p)
	}
}

// addPath adds the absolute host path p with every directory and
// symlink on the way to it, each symlink followed to what it names
// (/lib -> usr/lib, libz.so.1 -> libz.so.1.2.13), as the container
// resolves them.
func (l *hostLayer) addPath(p string) {
	l.b.Helper()
	for hops := 0; ; hops++ {
		if hops > 40 {
			l.b.Fatalf("%s: too many symlinks", p)
		}
		parts := strings.Split(strings.Trim(filepath.Clean(p), "/"), "/")
		cur, next := "/", ""
		for i, part := range parts {
			q := filepath.Join(cur, part)
			fi, err := os.Lstat(q)
			if err != nil {
				l.b.Fatal(err)
			}
			l.addEntry(q)
			if fi.Mode()&fs.ModeSymlink != 0 {
				target, _ := os.Readlink(q)
				if !filepath.IsAbs(target) {
					target = filepath.Join(cur, target)
				}
				next = filepath.Join(append([]string{target}, parts[i+1:]...)...)
				break
			}
			cur = q
		}
		if next == "" {
			return
		}
		p = next
	}
}

// layer closes the tar and returns it as a gzip-compressed OCI layer.
func (l *hostLayer) layer(level int) v1.Layer {
	l.b.Helper()
	if err := l.tw.Close(); err != nil {
		l.b.Fatal(err)
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, level)
	if err != nil {
		l.b.Fatal(err)
	}
	if _, err := zw.Write(l.buf.Bytes()); err != nil {
		l.b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		l.b.Fatal(err)
	}
	l.buf = bytes.Buffer{}
	data := gz.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		l.b.Fatal(err)
	}
	return layer
}

// startFootprint runs the command's imports with the host's python3 and
// returns how many of the image's files (files, by host path) it opened
// or mapped, and their bytes: what a lazy pull needs at the least, up to
// the parts of mapped files never touched.
func startFootprint(b *testing.B, files map[string]int64) (int, int64) {
	b.Helper()
	script := pyCommand[2] + `
import os, sys
seen = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__cached__", None) or getattr(m, "__file__", None)
    if f and os.path.exists(f):
        seen.add(os.path.realpath(f))
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split()
        if len(parts) >= 6 and parts[5].startswith("/"):
            seen.add(os.path.realpath(parts[5]))
for f in sorted(seen):
    print(f)
`
	cmd := exec.Command("/usr/bin/python3", "-c", script)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("python3 on the host: %v\n%s", err, out)
	}
	var n int
	var bytes int64
	for _, f := range strings.Split(string(out), "\n") {
		if size, ok := files[f]; ok {
			n, bytes = n+1, bytes+size
		}
	}
	return n, bytes
}

// measureLink GETs url whole and returns the rate in MB/s.
func measureLink(ctx context.Context, url string, size int64) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || n != size {
		return 0, fmt.Errorf("GET %s: %s, %d of %d bytes: %v", url, resp.Status, n, size, err)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}
