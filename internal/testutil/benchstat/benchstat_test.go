package benchstat

import "testing"

func TestMedianRounds(t *testing.T) {
	for _, tc := range []struct {
		v    []float64
		med  float64
		text string
	}{
		{[]float64{3, 1, 2}, 2, "(3, 1, 2)"},
		{[]float64{4, 1, 3, 2}, 3, "(4, 1, 3, 2)"},
		{[]float64{7}, 7, "(7)"},
	} {
		if m := Median(tc.v); m != tc.med {
			t.Errorf("Median(%v) = %v, want %v", tc.v, m, tc.med)
		}
		if s := Rounds(tc.v, "%.0f"); s != tc.text {
			t.Errorf("Rounds(%v) = %q, want %q", tc.v, s, tc.text)
		}
	}
	start := CPUSeconds()
	for i := 0; CPUSeconds()-start < 0.01 && i < 1e9; i++ {
	}
	if CPUSeconds() <= start {
		t.Error("CPUSeconds does not grow while this process spins")
	}
}
