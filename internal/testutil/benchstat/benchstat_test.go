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

func TestParseMachineCPU(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want float64
		ok   bool
	}{
		// user nice system idle iowait irq softirq steal: idle, iowait and steal left out.
		{"cpu  100 20 300 9000 500 6 7 800 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", 4.33, true},
		{"cpu  1 2 3\n", 0, false},
		{"intr 1 2 3 4 5 6 7 8\n", 0, false},
		{"cpu  1 2 x 4 5 6 7 8\n", 0, false},
	} {
		got, err := parseMachineCPU(tc.stat)
		if (err == nil) != tc.ok || (tc.ok && (got < tc.want-1e-9 || got > tc.want+1e-9)) {
			t.Errorf("parseMachineCPU(%q) = %v, %v; want %v (ok %v)", tc.stat, got, err, tc.want, tc.ok)
		}
	}
	if s, err := MachineCPUSeconds(); err != nil || s <= 0 {
		t.Errorf("MachineCPUSeconds() = %v, %v", s, err)
	}
	if s := SHA256SecondsPerGiB(); s <= 0 {
		t.Errorf("SHA256SecondsPerGiB() = %v", s)
	}
}
