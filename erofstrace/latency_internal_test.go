package erofstrace

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// TestHistogramOf checks the conversion of the kernel's per-slot counts
// into cumulative buckets in seconds.
func TestHistogramOf(t *testing.T) {
	bounds := make([]float64, latencyBounds)
	for i := range bounds {
		bounds[i] = float64(int(1000)<<i) / 1e9
	}
	if bounds[0] != 1e-6 || bounds[10] != 1.024e-3 || bounds[latencyBounds-1] != 16.777216 {
		t.Fatalf("bounds %v", bounds)
	}
	// want builds the expected histogram from cumulative counts per
	// bound (missing ones repeat the last).
	want := func(count uint64, sum float64, cum ...uint64) Histogram {
		h := Histogram{Count: count, Sum: sum, Buckets: make([]Bucket, latencyBounds)}
		var c uint64
		for i := range h.Buckets {
			if i < len(cum) {
				c = cum[i]
			}
			h.Buckets[i] = Bucket{UpperBound: bounds[i], Count: c}
		}
		return h
	}
	slots := func(set map[int]uint64) []uint64 {
		s := make([]uint64, 32)
		for i, n := range set {
			s[i] = n
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		sumNs uint64
		slots []uint64
		want  Histogram
	}{
		{"empty", 0, make([]uint64, 32), want(0, 0)},
		{"no slots", 0, nil, want(0, 0)},
		{"first bucket", 2500, slots(map[int]uint64{0: 3}), want(3, 2.5e-6, 3)},
		{"spread", 1_500_000_000, slots(map[int]uint64{0: 1, 3: 2, 10: 4, 24: 1}),
			want(8, 1.5, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8)},
		// Slot 25 is the kernel's overflow slot; later ones are unused
		// but would count as overflow too.
		{"overflow", 40e9, slots(map[int]uint64{2: 1, 25: 2, 31: 1}), want(4, 40, 0, 0, 1)},
		{"short slots", 3000, []uint64{1, 0, 1}, want(2, 3e-6, 1, 1, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := histogramOf(tc.sumNs, tc.slots)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("histogramOf(%d, %v)\n got %+v\nwant %+v", tc.sumNs, tc.slots, got, tc.want)
			}
		})
	}
}

// TestCheckHistogram checks the tests' check: a sum that the buckets do
// not allow is caught.
func TestCheckHistogram(t *testing.T) {
	if err := CheckHistogram(histogramOf(3000+5000, []uint64{0, 0, 1, 1})); err != nil {
		t.Errorf("3 µs and 5 µs: %v", err)
	}
	if err := CheckHistogram(histogramOf(20e9, []uint64{25: 1})); err != nil {
		t.Errorf("20 s: %v", err)
	}
	short := histogramOf(0, nil)
	short.Buckets = short.Buckets[1:]
	for name, h := range map[string]Histogram{
		"sum below the bucket":   histogramOf(1500, []uint64{0, 0, 1}),
		"sum above the bucket":   histogramOf(4001, []uint64{0, 0, 1}),
		"overflow below 16.8 s":  histogramOf(16e9, []uint64{25: 1}),
		"no sum":                 histogramOf(0, []uint64{1}),
		"count below the bucket": {Buckets: histogramOf(1, []uint64{1}).Buckets, Count: 0, Sum: 1e-9},
		"missing bucket":         short,
	} {
		if err := CheckHistogram(h); err == nil {
			t.Errorf("%s: %+v passed", name, h)
		}
	}
}

// TestLatencyUnsupported checks which load and attach errors say the host
// cannot measure, keeping the error they wrap.
func TestLatencyUnsupported(t *testing.T) {
	other := errors.New("verifier says no")
	for _, tc := range []struct {
		err         error
		unsupported bool
	}{
		{unix.EPERM, true},
		{fmt.Errorf("load: %w", ebpf.ErrNotSupported), true},
		{unix.Errno(524), true}, // ENOTSUPP
		{fmt.Errorf("find target: %w", btf.ErrNotFound), true},
		{other, false},
	} {
		err := latencyUnsupported("step", tc.err)
		if errors.Is(err, ErrUnsupported) != tc.unsupported || !errors.Is(err, tc.err) {
			t.Errorf("%v: %v (unsupported %v, want %v)", tc.err, err, errors.Is(err, ErrUnsupported), tc.unsupported)
		}
	}
}
