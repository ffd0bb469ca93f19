package fanotify

import (
	"math/rand/v2"
	"testing"

	"github.com/erofsd/erofsd/ondemand"
)

// TestMissingCount: the count of blocks not present, which makes
// completeness a comparison instead of a scan of the map per fill, stays
// what a scan finds through overlapping fills and a partial last block.
func TestMissingCount(t *testing.T) {
	scan := func(w *Watch) int64 {
		var n int64
		for b := range w.size / ondemand.BlockSize {
			if w.present[b/8]&(1<<(b%8)) == 0 {
				n++
			}
		}
		return n
	}
	for _, size := range []int64{ondemand.BlockSize, 3*ondemand.BlockSize + 100, 8 * ondemand.BlockSize, 1000 * ondemand.BlockSize} {
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		blocks := (size + ondemand.BlockSize - 1) / ondemand.BlockSize
		w := &Watch{size: size, present: make([]byte, (blocks+7)/8), missing: size / ondemand.BlockSize}
		for i := 0; !w.completeLocked(); i++ {
			if i == 10*int(blocks) {
				t.Fatalf("size %d: never complete, %d missing, a scan finds %d", size, w.missing, scan(w))
			}
			off := rng.Int64N(size)
			n := 1 + rng.Int64N(min(size-off, 8*ondemand.BlockSize))
			if err := w.markPresent(off, n); err != nil {
				t.Fatal(err)
			}
			if got, want := w.missing, scan(w); got != want {
				t.Fatalf("size %d: after marking [%d, +%d) missing is %d, a scan finds %d", size, off, n, got, want)
			}
		}
		if scan(w) != 0 {
			t.Fatalf("size %d: complete with %d blocks missing", size, scan(w))
		}
	}
}
