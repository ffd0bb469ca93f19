package erofstrace

import (
	"fmt"
	"math"
)

// SetLatencyNoStacked makes OpenLatency leave calls on overlayfs files
// untimed, as where the kernel has no mm_filemap_get_pages tracepoint,
// so that tests cover that mode.
func SetLatencyNoStacked(o *LatencyOptions) { o.noStacked = true }

// CheckHistogram checks that h is a well-formed snapshot: the bounds of
// the kernel's buckets, cumulative counts no greater than Count, and a sum
// its buckets allow (each operation counted in bucket i took more than
// bound i-1 and at most bound i), which checks the kernel's choice of
// bucket against the durations it summed.
func CheckHistogram(h Histogram) error {
	if len(h.Buckets) != latencyBounds {
		return fmt.Errorf("%d buckets, want %d", len(h.Buckets), latencyBounds)
	}
	var prev Bucket
	var lo, hi float64 // bounds of the sum
	for i, b := range h.Buckets {
		if want := float64(int64(1000)<<i) / 1e9; b.UpperBound != want {
			return fmt.Errorf("bucket %d: bound %g, want %g", i, b.UpperBound, want)
		}
		if b.Count < prev.Count {
			return fmt.Errorf("bucket %d: count %d below the previous %d", i, b.Count, prev.Count)
		}
		n := float64(b.Count - prev.Count)
		lo += n * prev.UpperBound
		hi += n * b.UpperBound
		prev = b
	}
	if prev.Count > h.Count {
		return fmt.Errorf("last bucket %d above the count %d", prev.Count, h.Count)
	}
	lo += float64(h.Count-prev.Count) * prev.UpperBound
	if h.Count > prev.Count {
		hi = math.Inf(1)
	}
	// The sum is of nanoseconds, exact; the bounds are sums of floats.
	const slack = 1e-9
	if h.Sum < lo*(1-slack) || h.Sum > hi*(1+slack) {
		return fmt.Errorf("sum %gs outside [%g, %g] that the buckets allow", h.Sum, lo, hi)
	}
	if h.Count > 0 && h.Sum <= 0 {
		return fmt.Errorf("sum %g of %d operations", h.Sum, h.Count)
	}
	return nil
}
