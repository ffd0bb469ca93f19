// Command zbench measures compressed images served lazily: a tree (the Go
// toolchain by default) is built into blob-mode images, uncompressed and
// with each algorithm asked for, and every file is read cold through a
// file-backed mount whose blob is filled on fanotify pre-content events
// from a local store, each chunk sha256-verified. It prints, for each
// image, the read throughput of file data, the CPU seconds per GiB of file
// data (this process: erofsd's serving and the reader; the kernel's
// decompression is the reader's system time) and the blob bytes fetched,
// next to the uncompressed image's, as medians of alternating rounds.
// Needs root and Linux 6.14+.
//
//	go run ./tests/zbench [-src DIR] [-z SPEC]... [-rounds 3]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/kmount"
	"github.com/erofsd/erofsd/internal/testutil/benchstat"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"golang.org/x/sys/unix"
)

func main() {
	src := flag.String("src", "/usr/local/go", "tree to build and read")
	var specs specList
	flag.Var(&specs, "z", "a -z `spec` of erofs-image build to compare with the uncompressed image; repeat for more (default: lz4, lz4hc, lzma, zstd)")
	bin := flag.String("bin", "bin/erofs-image", "erofs-image binary")
	rounds := flag.Int("rounds", 3, "alternating rounds")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to `file`")
	flag.Parse()
	if len(specs) == 0 {
		specs = specList{"lz4", "lz4hc", "lzma", "zstd"}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "zbench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*src, *bin, specs, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "zbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// specList collects repeated -z flags.
type specList []string

func (l *specList) String() string     { return strings.Join(*l, " ") }
func (l *specList) Set(s string) error { *l = append(*l, s); return nil }

// variant is one image of the tree and its figures.
type variant struct {
	name      string
	args      []string // erofs-image build flags besides --blob-dir
	img       string
	blobSize  int64
	build     time.Duration
	mibs, cpu []float64 // per round: MiB/s and CPU s/GiB of file data
	fetched   []int64   // per round: blob bytes in the cache file after the read
	reg       *ondemand.Registry
	im        *ondemand.Image
	dataBytes int64 // file data read in a round
	readFiles int
}

func run(src, bin string, specs []string, rounds int) error {
	if err := kmount.Supported(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "erofsd-zbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := fanotify.Supported(work); err != nil {
		return err
	}
	// The uncompressed image, then the same with small files packed
	// into shared chunks as compressed images always have them.
	vs := []*variant{{name: "uncompressed"}, {name: "packed", args: []string{"--pack-small-files"}}}
	for _, s := range specs {
		vs = append(vs, &variant{name: s, args: []string{"-z", s}})
	}
	for i, v := range vs {
		if err := v.prepare(src, bin, filepath.Join(work, fmt.Sprint("img", i))); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		defer v.reg.Close()
	}
	for r := range rounds {
		for i, v := range vs {
			cache := filepath.Join(work, fmt.Sprintf("cache-%d-%d", i, r))
			if err := v.read(cache, filepath.Join(work, "mnt")); err != nil {
				return fmt.Errorf("%s, round %d: %w", v.name, r+1, err)
			}
			os.Remove(cache)
		}
	}
	ref := vs[0]
	fmt.Printf("cold read of every file of %s (%d files, %.1f MiB), blob filled through fanotify from a local store; medians of %d rounds:\n",
		src, ref.readFiles, float64(ref.dataBytes)/(1<<20), rounds)
	fmt.Printf("  %-14s %10s %9s %11s %10s %8s %12s  %s\n", "image", "blob", "build", "read MiB/s", "vs plain", "CPU s/GiB", "fetched MiB", "rounds (MiB/s)")
	refMiBs, refCPU := benchstat.Median(ref.mibs), benchstat.Median(ref.cpu)
	for _, v := range vs {
		mibs, cpu := benchstat.Median(v.mibs), benchstat.Median(v.cpu)
		fetched := v.fetched[len(v.fetched)/2]
		fmt.Printf("  %-14s %8.1fMiB %8.2fs %11.1f %9.2fx %9.2f %12.1f  %s\n", v.name, float64(v.blobSize)/(1<<20), v.build.Seconds(),
			mibs, mibs/refMiBs, cpu, float64(fetched)/(1<<20), benchstat.Rounds(v.mibs, "%.0f"))
		if v != ref {
			fmt.Printf("  %-14s blob %.3f of plain, CPU %.2fx plain's\n", "", float64(v.blobSize)/float64(ref.blobSize), cpu/refCPU)
		}
	}
	return nil
}

// prepare builds the variant's image in blob mode and registers it.
func (v *variant) prepare(src, bin, dir string) error {
	blobs := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	v.img = filepath.Join(dir, "image.erofs")
	args := append([]string{"build", "--blob-dir", blobs, "-o", v.img}, v.args...)
	cmd := exec.Command(bin, append(args, src)...)
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %w", cmd.Args, err)
	}
	v.build = time.Since(start)
	f, err := os.Open(v.img)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	img, err := erofs.Open(f, erofs.WithSize(st.Size()))
	if err != nil {
		return err
	}
	defer img.Close()
	if devs := img.Devices(); len(devs) != 1 {
		return fmt.Errorf("want one blob, the image has %d", len(devs))
	}
	store, err := blobstore.NewLocal(blobs)
	if err != nil {
		return err
	}
	v.reg = ondemand.NewRegistry()
	v.im, err = v.reg.Register(ondemand.ImageSpec{FSID: "zbench", Bootstrap: v.img, Store: store})
	if err != nil {
		return err
	}
	v.blobSize = v.im.Blobs[0].Size
	return nil
}

// read serves the blob from a fresh cache file and reads every file of
// the mounted image cold.
func (v *variant) read(cacheFile, mnt string) error {
	obj, err := v.reg.Resolve(v.im.VolumeKey(), v.im.Blobs[0].Name)
	if err != nil {
		return err
	}
	defer obj.Release()
	srv, err := fanotify.New(fanotify.Config{})
	if err != nil {
		return err
	}
	defer srv.Release()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	w, err := srv.Watch(cacheFile, v.im.Blobs[0].Size, v.im.Blobs[0].Digest.Sum(), obj)
	if err != nil {
		return err
	}
	defer w.Close()

	os.MkdirAll(mnt, 0o755)
	unmount, err := testmount.FileBacked(v.img, []string{cacheFile}, mnt)
	if err != nil {
		return err
	}
	defer unmount()
	if err := kmount.SetReadahead(mnt, 4096); err != nil {
		return err
	}
	unix.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	cpu0 := benchstat.CPUSeconds()
	start := time.Now()
	files, n, err := readAll(mnt)
	if err != nil {
		return err
	}
	took := time.Since(start).Seconds()
	cpu := benchstat.CPUSeconds() - cpu0
	if v.readFiles != 0 && (files != v.readFiles || n != v.dataBytes) {
		return fmt.Errorf("read %d files, %d bytes; an earlier round read %d, %d", files, n, v.readFiles, v.dataBytes)
	}
	v.readFiles, v.dataBytes = files, n
	v.mibs = append(v.mibs, float64(n)/(1<<20)/took)
	v.cpu = append(v.cpu, cpu/(float64(n)/(1<<30)))
	var st unix.Stat_t
	if err := unix.Stat(cacheFile, &st); err != nil {
		return err
	}
	v.fetched = append(v.fetched, st.Blocks*512)
	return nil
}

// readAll reads every regular file under root, in directory order, and
// returns how many and their bytes.
func readAll(root string) (files int, n int64, err error) {
	buf := make([]byte, 1<<20)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		k, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		files, n = files+1, n+k
		return nil
	})
	if errors.Is(err, fs.SkipAll) {
		err = nil
	}
	return files, n, err
}
