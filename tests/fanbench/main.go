// Command fanbench measures the fanotify front end on this machine's
// kernel: a cold sequential read of a 256 MiB file through a lazily
// filled blob cache file (local blob store, every chunk sha256-verified)
// against the same image mounted file-backed with its complete blob, in
// the same run, and prints both, their ratio (target: at least 0.8) and
// the events handled per second; then a whole prefetch into a fresh
// cache file and a cold read after it. Needs root and Linux 6.14+.
//
//	go run ./tests/fanbench [-size MiB]
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/internal/testutil/benchstat"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"golang.org/x/sys/unix"
)

var mountRA, rounds int

func main() {
	size := flag.Int("size", 256, "file size in MiB")
	flag.IntVar(&mountRA, "mount-readahead", 4096, "readahead of both mounts in `KiB`, as erofsd sets it (0: the kernel's 128)")
	window := flag.Int64("readahead", 32<<20, "readahead window in `bytes`, as erofsd's default (0: the next chunk)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to `file`")
	flag.IntVar(&rounds, "rounds", 5, "alternating rounds of each read (medians are printed)")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fanbench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*size, *window); err != nil {
		fmt.Fprintln(os.Stderr, "fanbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(sizeMiB int, window int64) error {
	if err := kmount.Supported(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "erofsd-fanbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := fanotify.Supported(work); err != nil {
		return err
	}
	src, blobs, cache := filepath.Join(work, "src"), filepath.Join(work, "blobs"), filepath.Join(work, "cache")
	for _, d := range []string{src, blobs, cache} {
		os.MkdirAll(d, 0o755)
	}
	data := make([]byte, sizeMiB<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
		return err
	}
	data = nil
	img := filepath.Join(work, "img")
	f, _ := os.Create(img)
	b, err := build.New(f, build.Options{BlobDir: blobs})
	if err != nil {
		return err
	}
	if err := b.AddDir(context.Background(), src); err != nil {
		return err
	}
	res, err := b.Finish(context.Background())
	if err != nil {
		return err
	}
	f.Close()
	blob := filepath.Join(blobs, res.Blobs[0].Digest)

	// Rounds of reference and lazy alternating, medians printed: the
	// machine is shared, and the reference's "cold" read comes from disk
	// or from the host's cache depending on what ran before.
	store, _ := blobstore.NewLocal(blobs)
	reg := ondemand.NewRegistry()
	reg.ReadaheadWindow = window
	defer reg.Close()
	im, err := reg.Register(ondemand.ImageSpec{FSID: "bench", Bootstrap: img, Store: store})
	if err != nil {
		return err
	}
	var refs, lazies, refCPUs, lazyCPUs, doneCPUs, refMachine, lazyMachine []float64
	var events int64
	gib := float64(sizeMiB) / 1024
	for r := 0; r < rounds; r++ {
		unix.Sync()
		ref, refCPU, refMach, err := coldRead(img, blob, filepath.Join(work, "mnt-ref"))
		if err != nil {
			return err
		}
		lazy, lazyCPU, lazyMach, doneCPU, n, err := lazyRead(reg, im, img, filepath.Join(cache, fmt.Sprint("blob", r)), filepath.Join(work, "mnt-lazy"))
		if err != nil {
			return err
		}
		os.Remove(filepath.Join(cache, fmt.Sprint("blob", r)))
		os.Remove(filepath.Join(cache, fmt.Sprint("blob", r)) + ".present")
		refs, lazies, events = append(refs, ref), append(lazies, lazy), n
		refCPUs, lazyCPUs, doneCPUs = append(refCPUs, refCPU/gib), append(lazyCPUs, lazyCPU/gib), append(doneCPUs, doneCPU/gib)
		refMachine, lazyMachine = append(refMachine, refMach/gib), append(lazyMachine, lazyMach/gib)
	}
	ref, lazy := benchstat.Median(refs), benchstat.Median(lazies)
	refCPU, lazyCPU, doneCPU := benchstat.Median(refCPUs), benchstat.Median(lazyCPUs), benchstat.Median(doneCPUs)
	fmt.Printf("cold sequential read of %d MiB on this kernel (median of %d rounds):\n", sizeMiB, rounds)
	fmt.Printf("  file-backed mount, complete blob        %8.1f MiB/s  %s\n", ref, benchstat.Rounds(refs, "%.0f"))
	fmt.Printf("  fanotify, filled on demand and verified %8.1f MiB/s  %s (%d events, mount readahead %d KiB)\n",
		lazy, benchstat.Rounds(lazies, "%.0f"), events, mountRA)
	fmt.Printf("  ratio fanotify/complete %.2f (target >= 0.9)\n", lazy/ref)
	fmt.Printf("  CPU (user+sys of this process: erofsd and the reader) per GiB: fanotify %.2f s %s, complete %.2f s %s, ratio %.2f (target <= 1.5)\n",
		lazyCPU, benchstat.Rounds(lazyCPUs, "%.2f"), refCPU, benchstat.Rounds(refCPUs, "%.2f"), lazyCPU/refCPU)
	fmt.Printf("  CPU per GiB until the complete file is read natively (proven by its chunks' steps, no whole check): fanotify %.2f s %s, ratio %.2f\n",
		doneCPU, benchstat.Rounds(doneCPUs, "%.2f"), doneCPU/refCPU)
	fmt.Print(benchstat.Bounds{Ref: "the complete file", RefMiBs: ref, RefCPU: refCPU, RefMachine: refMachine, Machine: lazyMachine, SHA256: benchstat.SHA256SecondsPerGiB()})
	return printPrefetch(reg, im, img, work)
}

// lazyRead serves the image's blob from a new sparse cache file filled
// on pre-content events and reads "big" through it; it returns MiB/s, the
// CPU seconds spent during the read and until the complete file is
// unmarked (erofsd's work for this file is done then), and the events
// handled.
func lazyRead(reg *ondemand.Registry, im *ondemand.Image, img, cacheFile, mnt string) (mibs, cpu, machine, doneCPU float64, events int64, err error) {
	srv, _, _, stop, err := serveBlob(reg, im, cacheFile)
	if err != nil {
		return 0, 0, 0, 0, 0, err
	}
	defer stop()
	cpu0 := benchstat.CPUSeconds()
	mibs, cpu, machine, err = coldRead(img, cacheFile, mnt)
	if err != nil {
		return 0, 0, 0, 0, 0, err
	}
	// The read leaves the file complete (the image's one blob holds
	// little besides "big"); it is unmarked in the background.
	for deadline := time.Now().Add(time.Minute); srv.Stats.VerifiedBytes.Load()+srv.Stats.ProvenBytes.Load()+srv.Stats.NotBlob.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return 0, 0, 0, 0, 0, fmt.Errorf("%s: not unmarked a minute after the read", cacheFile)
		}
	}
	return mibs, cpu, machine, benchstat.CPUSeconds() - cpu0, srv.Stats.Events.Load(), nil
}

// serveBlob serves the image's blob from cacheFile through a fanotify
// group of its own until stop.
func serveBlob(reg *ondemand.Registry, im *ondemand.Image, cacheFile string) (*fanotify.Server, *fanotify.Watch, *ondemand.Object, func(), error) {
	obj, err := reg.Resolve(im.VolumeKey(), im.Blobs[0].Name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	srv, err := fanotify.New(fanotify.Config{})
	if err != nil {
		obj.Release()
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	stopServing := func() { cancel(); <-done; srv.Release(); obj.Release() }
	w, err := srv.Watch(cacheFile, im.Blobs[0].Size, im.Blobs[0].Digest.Sum(), obj)
	if err != nil {
		stopServing()
		return nil, nil, nil, nil, err
	}
	return srv, w, obj, func() { w.Close(); stopServing() }, nil
}

// coldRead mounts img with device and reads "big" sequentially after
// dropping the page cache; it returns MiB/s, the CPU seconds (user and
// system) this process spent meanwhile (the reader's, and for a lazy read
// erofsd's serving too, which runs in this process) and those of the
// whole machine (the kernel's writeback and other tenants too).
func coldRead(img, device, mnt string) (mibs, cpu, machine float64, err error) {
	os.MkdirAll(mnt, 0o755)
	unmount, err := testmount.FileBacked(img, []string{device}, mnt)
	if err != nil {
		return 0, 0, 0, err
	}
	defer unmount()
	if mountRA > 0 {
		if err := kmount.SetReadahead(mnt, mountRA); err != nil {
			return 0, 0, 0, err
		}
	}
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	f, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	cpu0 := benchstat.CPUSeconds()
	machine0, err := benchstat.MachineCPUSeconds()
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, make([]byte, 1<<20))
	if err != nil {
		return 0, 0, 0, err
	}
	took := time.Since(start).Seconds()
	cpu = benchstat.CPUSeconds() - cpu0
	machine1, err := benchstat.MachineCPUSeconds()
	if err != nil {
		return 0, 0, 0, err
	}
	return float64(n) / (1 << 20) / took, cpu, machine1 - machine0, nil
}
