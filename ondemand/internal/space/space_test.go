package space

import (
	"testing"
	"time"
)

func TestOrder(t *testing.T) {
	now := time.Now()
	v := []Victim{
		{Path: "wanted-old", Used: now.Add(-3 * time.Hour), Wanted: true},
		{Path: "new", Used: now},
		{Path: "b-old", Used: now.Add(-time.Hour)},
		{Path: "a-old", Used: now.Add(-time.Hour)},
	}
	Order(v)
	want := []string{"a-old", "b-old", "new", "wanted-old"}
	for i, p := range want {
		if v[i].Path != p {
			t.Fatalf("order %d: %s, want %s (unwanted first, least recently used first, then by path)", i, v[i].Path, p)
		}
	}
}

func TestBelow(t *testing.T) {
	for _, c := range []struct {
		free, total int64
		pct         int
		want        bool
	}{{6, 100, 7, true}, {7, 100, 7, false}, {0, 0, 7, false}, {69, 1000, 7, true}, {70, 1000, 7, false}} {
		if got := Below(c.free, c.total, c.pct); got != c.want {
			t.Errorf("Below(%d, %d, %d) = %v", c.free, c.total, c.pct, got)
		}
	}
}

func TestStatfs(t *testing.T) {
	fs, err := Statfs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if fs.Size <= 0 || fs.Free < 0 || fs.Free > fs.Size || fs.Used < 0 || fs.Used > fs.Size {
		t.Errorf("%+v", fs)
	}
	if _, err := Statfs("/nonexistent/erofsd"); err == nil {
		t.Error("statfs of a missing path succeeded")
	}
}
