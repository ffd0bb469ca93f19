package zcodec

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestMkfsReference compares our LZ4 encoders with mkfs.erofs on a real
// tree. It is opt-in, as it needs a tree and mkfs.erofs's figures for it:
//
//	ZCODEC_REF_TREE=dir
//	ZCODEC_REF_LZ4=bytes     sum of dump.erofs "On-disk size" over the
//	ZCODEC_REF_LZ4HC=bytes   files of mkfs.erofs -zlz4 / -zlz4hc[,LEVEL] images
//	ZCODEC_REF_LEVEL=n       the LZ4HC level (default 9)
//	ZCODEC_REF_PCLUSTER=n    the images' -C (default 4096)
//
// Each file is cut into pclusters as mkfs.erofs 1.5 does it
// (vle_compress_one): a tail of at most a block, or a pcluster that saves
// no block, is stored raw in one block, and a file that saves nothing
// overall is stored uncompressed. Our total may exceed mkfs.erofs's by at
// most 2%.
func TestMkfsReference(t *testing.T) {
	tree := os.Getenv("ZCODEC_REF_TREE")
	if tree == "" {
		t.Skip("ZCODEC_REF_TREE not set")
	}
	var files [][]byte
	var total int64
	err := filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		files = append(files, b)
		total += int64(len(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pcluster, level := 4096, -1
	if v := os.Getenv("ZCODEC_REF_PCLUSTER"); v != "" {
		if pcluster, err = strconv.Atoi(v); err != nil || pcluster%4096 != 0 || pcluster <= 0 {
			t.Fatalf("ZCODEC_REF_PCLUSTER=%q", v)
		}
	}
	if v := os.Getenv("ZCODEC_REF_LEVEL"); v != "" {
		if level, err = strconv.Atoi(v); err != nil {
			t.Fatalf("ZCODEC_REF_LEVEL=%q", v)
		}
	}
	for _, c := range []struct {
		name, env string
		hc        bool
	}{{"lz4", "ZCODEC_REF_LZ4", false}, {"lz4hc", "ZCODEC_REF_LZ4HC", true}} {
		ref, err := strconv.ParseInt(os.Getenv(c.env), 10, 64)
		if err != nil {
			t.Logf("%s: no reference (%s)", c.name, c.env)
			continue
		}
		lv := -1
		if c.hc {
			lv = level
		}
		enc, err := NewEncoder(LZ4, c.hc, lv)
		if err != nil {
			t.Fatal(err)
		}
		start, cpu0 := time.Now(), cpuTime()
		var ours int64
		for _, f := range files {
			ours += mkfsOnDisk(t, enc, f, pcluster, false)
		}
		el, cpu := time.Since(start), cpuTime()-cpu0
		// Then again, checking that every stream decodes.
		for _, f := range files {
			mkfsOnDisk(t, enc, f, pcluster, true)
		}
		t.Logf("%s: %d files, %d bytes: ours %d, mkfs.erofs %d (%+.2f%%), %v, CPU %v (%.0f MB/s)",
			c.name, len(files), total, ours, ref, 100*float64(ours-ref)/float64(ref),
			el.Round(time.Millisecond), cpu.Round(time.Millisecond), float64(total)/cpu.Seconds()/1e6)
		if float64(ours) > 1.02*float64(ref) {
			t.Errorf("%s: %d bytes, more than 2%% above mkfs.erofs's %d", c.name, ours, ref)
		}
	}
}

// mkfsOnDisk is the size a file takes with pclusters of up to pcluster
// bytes laid out the way mkfs.erofs 1.5 lays them out (4 KiB blocks).
func mkfsOnDisk(t *testing.T, enc Encoder, f []byte, pcluster int, verify bool) int64 {
	const blk = 4096
	dst := make([]byte, pcluster)
	var blocks int64
	for pos := 0; pos < len(f); {
		rest := len(f) - pos
		if rest <= blk {
			blocks++
			break
		}
		consumed, n, err := enc.EncodeDestSize(dst, f[pos:pos+min(rest, 2<<20)])
		if err != nil {
			t.Fatal(err)
		}
		if verify && consumed > 0 {
			out := make([]byte, consumed)
			if err := lz4DecodeBlock(out, dst[:n]); err != nil || !bytes.Equal(out, f[pos:pos+consumed]) {
				t.Fatalf("pcluster at %d does not decode (%v)", pos, err)
			}
		}
		used := (n + blk - 1) / blk
		if consumed <= used*blk {
			used, consumed = 1, blk // saves no block: a raw block
		}
		blocks += int64(used)
		pos += consumed
	}
	if on := blocks * blk; on < int64(len(f)) {
		return on
	}
	return int64(len(f))
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
