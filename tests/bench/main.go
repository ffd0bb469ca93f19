// Command bench compares erofs-image build with mkfs.erofs on the same
// large tree and prints wall time, CPU time (user+sys), image size and
// peak memory of both, and their ratios: the medians of several rounds
// that alternate the two tools, so that a busy machine slows both alike.
// Then the same for compressed images at each algorithm mkfs.erofs
// knows, and our image sizes for the algorithms it does not.
//
//	go run ./tests/bench [-src DIR] [-bin bin/erofs-image] [-rounds N]
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/benchstat"
)

type run struct {
	wall time.Duration
	cpu  time.Duration // user+sys
	rss  int64         // KiB
	size int64
}

var rounds int

func main() {
	src := flag.String("src", "", "tree to build (default: the Go toolchain, else /usr/share)")
	bin := flag.String("bin", "bin/erofs-image", "erofs-image binary")
	flag.IntVar(&rounds, "rounds", 5, "alternating rounds of each comparison (medians are printed)")
	flag.Parse()
	if rounds < 1 {
		rounds = 1
	}
	if *src == "" {
		*src = defaultTree()
	}
	if err := bench(*src, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func defaultTree() string {
	for _, d := range []string{"/usr/local/go", "/usr/lib/go", "/usr/share"} {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
	}
	return "/usr"
}

func bench(src, bin string) error {
	mkfs, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		return fmt.Errorf("mkfs.erofs not found (apt-get install erofs-utils): %w", err)
	}
	files, bytes := countTree(src)
	tmp, err := os.MkdirTemp("", "erofs-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Printf("tree %s: %d entries, %.1f MiB\n", src, files, float64(bytes)/(1<<20))

	// Warm the page cache so both tools read from memory.
	if _, err := measure(exec.Command(mkfs, "--quiet", filepath.Join(tmp, "warm.img"), src), ""); err != nil {
		return err
	}
	os.Remove(filepath.Join(tmp, "warm.img"))
	refImg, ourImg := filepath.Join(tmp, "ref.img"), filepath.Join(tmp, "ours.img")
	ref, ours, err := alternate(
		func() *exec.Cmd { return exec.Command(mkfs, "--quiet", refImg, src) }, refImg,
		func() *exec.Cmd { return exec.Command(bin, "build", "-o", ourImg, src) }, ourImg)
	if err != nil {
		return err
	}
	blobDir := filepath.Join(tmp, "blobs")
	chunked, err := measure(exec.Command(bin, "build", "--blob-dir", blobDir, "-o", filepath.Join(tmp, "chunked.img"), src), filepath.Join(tmp, "chunked.img"))
	if err != nil {
		return err
	}

	fmt.Printf("%-34s %10s %10s %12s %12s\n", "", "wall", "CPU", "image", "peak RSS")
	row := func(name string, r run) {
		fmt.Printf("%-34s %9.2fs %9.2fs %10.1fMiB %10.1fMiB\n", name, r.wall.Seconds(), r.cpu.Seconds(), float64(r.size)/(1<<20), float64(r.rss)/1024)
	}
	fmt.Printf("(medians of %d alternating rounds; --blob-dir from one run)\n", rounds)
	row("mkfs.erofs (uncompressed)", ref)
	row("erofs-image build (self-contained)", ours)
	row("erofs-image build --blob-dir", chunked)
	fmt.Printf("ratio ours/mkfs: time %.2f (target <= 1.0, aim 0.5)  CPU %.2f  size %.4f (target <= 1.01)  memory %.2f (target <= 1.0)\n",
		ours.wall.Seconds()/ref.wall.Seconds(), ours.cpu.Seconds()/ref.cpu.Seconds(), float64(ours.size)/float64(ref.size), float64(ours.rss)/float64(ref.rss))
	return benchCompressed(mkfs, bin, src, tmp, ref)
}

// benchCompressed compares compressed self-contained images with
// mkfs.erofs's at the same algorithm, level and pcluster size, and shows
// the algorithms erofs-utils 1.5 lacks against the uncompressed image.
func benchCompressed(mkfs, bin, src, tmp string, plain run) error {
	type cmp struct {
		spec     string // erofs-image build -z, and mkfs.erofs -z unless lone
		pcluster int    // bytes; 0: the default (one block)
		lone     bool   // mkfs.erofs 1.5 cannot build it
	}
	cases := []cmp{
		{spec: "lz4"}, {spec: "lz4hc"}, {spec: "lz4hc", pcluster: 64 << 10},
		{spec: "lzma", lone: true}, {spec: "deflate", lone: true}, {spec: "zstd", lone: true},
	}
	fmt.Printf("\ncompressed, self-contained (medians of %d alternating rounds of mkfs.erofs and ours; wall and CPU user+sys):\n", rounds)
	fmt.Printf("%-20s %9s %8s %11s %9s %8s %11s %7s %7s %7s\n", "-z", "mkfs wall", "CPU", "image", "our wall", "CPU", "image", "size", "time", "CPU")
	for i, c := range cases {
		name := c.spec
		var pcArgs []string
		if c.pcluster > 0 {
			name = fmt.Sprintf("%s -C %d", c.spec, c.pcluster)
			pcArgs = []string{fmt.Sprintf("-C%d", c.pcluster)}
		}
		out := filepath.Join(tmp, fmt.Sprintf("z%d-ours.img", i))
		oursCmd := func() *exec.Cmd {
			return exec.Command(bin, append(append([]string{"build", "-z", c.spec}, pcArgs...), "-o", out, src)...)
		}
		if c.lone {
			// Nothing to alternate with: one run, against the uncompressed image.
			ours, err := measure(oursCmd(), out)
			if err != nil {
				return err
			}
			os.Remove(out)
			fmt.Printf("%-20s %9s %8s %11s %8.2fs %7.2fs %8.1fMiB  (%.3f of uncompressed; mkfs.erofs 1.5 lacks %s; one run)\n", name, "-", "-", "-",
				ours.wall.Seconds(), ours.cpu.Seconds(), float64(ours.size)/(1<<20), float64(ours.size)/float64(plain.size), c.spec)
			continue
		}
		refOut := filepath.Join(tmp, fmt.Sprintf("z%d-mkfs.img", i))
		refCmd := func() *exec.Cmd {
			return exec.Command(mkfs, append(append([]string{"--quiet", "-z" + c.spec}, pcArgs...), refOut, src)...)
		}
		ref, ours, err := alternate(refCmd, refOut, oursCmd, out)
		if err != nil {
			return err
		}
		os.Remove(out)
		os.Remove(refOut)
		fmt.Printf("%-20s %8.2fs %7.2fs %8.1fMiB %8.2fs %7.2fs %8.1fMiB %7.4f %7.2f %7.2f  (target: size <= 1.02, time < 1)\n", name,
			ref.wall.Seconds(), ref.cpu.Seconds(), float64(ref.size)/(1<<20), ours.wall.Seconds(), ours.cpu.Seconds(), float64(ours.size)/(1<<20),
			float64(ours.size)/float64(ref.size), ours.wall.Seconds()/ref.wall.Seconds(), ours.cpu.Seconds()/ref.cpu.Seconds())
	}
	return nil
}

// alternate runs the reference and our command in turn, rounds times,
// and returns the median wall time, CPU time and peak RSS of each (image
// sizes do not vary).
func alternate(refCmd func() *exec.Cmd, refOut string, oursCmd func() *exec.Cmd, oursOut string) (ref, ours run, err error) {
	var refRuns, ourRuns []run
	for range rounds {
		r, err := measure(refCmd(), refOut)
		if err != nil {
			return run{}, run{}, err
		}
		o, err := measure(oursCmd(), oursOut)
		if err != nil {
			return run{}, run{}, err
		}
		refRuns, ourRuns = append(refRuns, r), append(ourRuns, o)
	}
	return medianRun(refRuns), medianRun(ourRuns), nil
}

func medianRun(runs []run) run {
	pick := func(f func(run) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		return benchstat.Median(v)
	}
	return run{
		wall: time.Duration(pick(func(r run) float64 { return float64(r.wall) })),
		cpu:  time.Duration(pick(func(r run) float64 { return float64(r.cpu) })),
		rss:  int64(pick(func(r run) float64 { return float64(r.rss) })),
		size: runs[len(runs)-1].size,
	}
}

// measure runs cmd and returns its wall time, peak RSS and the size of
// the file it produced.
func measure(cmd *exec.Cmd, out string) (run, error) {
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return run{}, fmt.Errorf("%v: %w", cmd.Args, err)
	}
	r := run{wall: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rss = ru.Maxrss
	}
	if out != "" {
		st, err := os.Stat(out)
		if err != nil {
			return run{}, err
		}
		r.size = st.Size()
	}
	return r, nil
}

func countTree(root string) (n int, size int64) {
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		n++
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				size += info.Size()
			}
		}
		return nil
	})
	return n, size
}
