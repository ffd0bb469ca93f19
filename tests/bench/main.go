// Command bench compares erofs-image build with mkfs.erofs on the same
// large tree and prints wall time, image size and peak memory of both, and
// their ratios, from one run each (run it twice if the machine is busy);
// then the same for compressed images at each algorithm mkfs.erofs knows,
// and our image sizes for the algorithms it does not.
//
//	go run ./tests/bench [-src DIR] [-bin bin/erofs-image]
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
)

type run struct {
	wall time.Duration
	rss  int64 // KiB
	size int64
}

func main() {
	src := flag.String("src", "", "tree to build (default: the Go toolchain, else /usr/share)")
	bin := flag.String("bin", "bin/erofs-image", "erofs-image binary")
	flag.Parse()
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
	ref, err := measure(exec.Command(mkfs, "--quiet", filepath.Join(tmp, "ref.img"), src), filepath.Join(tmp, "ref.img"))
	if err != nil {
		return err
	}
	ours, err := measure(exec.Command(bin, "build", "-o", filepath.Join(tmp, "ours.img"), src), filepath.Join(tmp, "ours.img"))
	if err != nil {
		return err
	}
	blobDir := filepath.Join(tmp, "blobs")
	chunked, err := measure(exec.Command(bin, "build", "--blob-dir", blobDir, "-o", filepath.Join(tmp, "chunked.img"), src), filepath.Join(tmp, "chunked.img"))
	if err != nil {
		return err
	}

	fmt.Printf("%-34s %10s %12s %12s\n", "", "wall", "image", "peak RSS")
	row := func(name string, r run) {
		fmt.Printf("%-34s %9.2fs %10.1fMiB %10.1fMiB\n", name, r.wall.Seconds(), float64(r.size)/(1<<20), float64(r.rss)/1024)
	}
	row("mkfs.erofs (uncompressed)", ref)
	row("erofs-image build (self-contained)", ours)
	row("erofs-image build --blob-dir", chunked)
	fmt.Printf("ratio ours/mkfs: time %.2f (target <= 1.0, aim 0.5)  size %.4f (target <= 1.01)  memory %.2f (target <= 1.0)\n",
		ours.wall.Seconds()/ref.wall.Seconds(), float64(ours.size)/float64(ref.size), float64(ours.rss)/float64(ref.rss))
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
	fmt.Printf("\ncompressed, self-contained (mkfs.erofs's image and ours, one run each):\n")
	fmt.Printf("%-22s %10s %12s %10s %12s %12s %12s\n", "-z", "mkfs wall", "mkfs image", "our wall", "our image", "size ratio", "time ratio")
	for i, c := range cases {
		name := c.spec
		var pcArgs []string
		if c.pcluster > 0 {
			name = fmt.Sprintf("%s -C %d", c.spec, c.pcluster)
			pcArgs = []string{fmt.Sprintf("-C%d", c.pcluster)}
		}
		out := filepath.Join(tmp, fmt.Sprintf("z%d-ours.img", i))
		ours, err := measure(exec.Command(bin, append(append([]string{"build", "-z", c.spec}, pcArgs...), "-o", out, src)...), out)
		if err != nil {
			return err
		}
		os.Remove(out)
		if c.lone {
			fmt.Printf("%-22s %10s %12s %9.2fs %10.1fMiB %12s %12s  (%.3f of uncompressed; mkfs.erofs 1.5 lacks %s)\n", name, "-", "-",
				ours.wall.Seconds(), float64(ours.size)/(1<<20), "-", "-", float64(ours.size)/float64(plain.size), c.spec)
			continue
		}
		out = filepath.Join(tmp, fmt.Sprintf("z%d-mkfs.img", i))
		args := append(append([]string{"--quiet", "-z" + c.spec}, pcArgs...), out, src)
		ref, err := measure(exec.Command(mkfs, args...), out)
		if err != nil {
			return err
		}
		os.Remove(out)
		fmt.Printf("%-22s %9.2fs %10.1fMiB %9.2fs %10.1fMiB %12.4f %12.2f  (target: size <= 1.02, time < 1)\n", name,
			ref.wall.Seconds(), float64(ref.size)/(1<<20), ours.wall.Seconds(), float64(ours.size)/(1<<20),
			float64(ours.size)/float64(ref.size), ours.wall.Seconds()/ref.wall.Seconds())
	}
	return nil
}

// measure runs cmd and returns its wall time, peak RSS and the size of
// the file it produced.
func measure(cmd *exec.Cmd, out string) (run, error) {
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return run{}, fmt.Errorf("%v: %w", cmd.Args, err)
	}
	r := run{wall: time.Since(start)}
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
