package units

import (
	"strconv"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "4096", want: 4096},
		{in: "64K", want: 64 << 10},
		{in: "64k", want: 64 << 10},
		{in: " 8M ", want: 8 << 20},
		{in: "20G", want: 20 << 30},
		{in: "2T", want: 2 << 40},
		{in: "8388607T", want: 8388607 << 40},
		{in: "8388608T", bad: true}, // overflows int64
		{in: "-1", bad: true},
		{in: "", bad: true},
		{in: "M", bad: true},
		{in: "1.5M", bad: true},
		{in: "12Q", bad: true},
	} {
		got, err := ParseBytes(tc.in)
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v", tc.in, got, err)
		}
	}
	var b Bytes
	if err := b.Set("1K"); err != nil || b != 1024 || b.String() != "1024" {
		t.Errorf("Bytes.Set(1K): %d, %v", b, err)
	}
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "64K", "8M", "20G", "2T", "-1", "1.5M", "8388608T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseBytes(%q) = %d", s, n)
		}
		// What it accepts, in bytes, reads back the same.
		if m, err := ParseBytes(strconv.FormatInt(n, 10)); err != nil || m != n {
			t.Fatalf("%q -> %d -> %d, %v", s, n, m, err)
		}
	})
}
