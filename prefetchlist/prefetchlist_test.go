package prefetchlist

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Entry
		err  string
	}{
		{name: "paths, the old format", in: "/a\n# comment\n\n  usr/b  \n", want: []Entry{{Path: "/a"}, {Path: "usr/b"}}},
		{name: "header and ranges", in: "# erofsd prefetch list v1\n/a\t0+4096 8192+4096\n/b\n",
			want: []Entry{{Path: "/a", Ranges: []Range{{0, 4096}, {8192, 4096}}}, {Path: "/b"}}},
		{name: "ranges merged and sorted", in: "/a\t8192+4096 0+4096 4096+4096 100+10\n",
			want: []Entry{{Path: "/a", Ranges: []Range{{0, 12288}}}}},
		{name: "repeated path keeps first place", in: "/a\t0+1\n/b\n/a\t10+1\n",
			want: []Entry{{Path: "/a", Ranges: []Range{{0, 1}, {10, 1}}}, {Path: "/b"}}},
		{name: "whole wins over ranges", in: "/a\t0+1\n/a\n/a\t5+1\n", want: []Entry{{Path: "/a"}}},
		{name: "quoted path", in: "\"/a\\tb\"\t0+1\n\"/c d \"\n",
			want: []Entry{{Path: "/a\tb", Ranges: []Range{{0, 1}}}, {Path: "/c d "}}},
		{name: "CRLF", in: "/a\r\n/b\t0+1\r\n", want: []Entry{{Path: "/a"}, {Path: "/b", Ranges: []Range{{0, 1}}}}},
		{name: "later version", in: "# erofsd prefetch list v2\n/a\n", err: "version 2"},
		{name: "bad version", in: "# erofsd prefetch list vX\n", err: "bad version"},
		{name: "bad range", in: "/a\t12\n", err: "OFFSET+LENGTH"},
		{name: "negative offset", in: "/a\t-1+4\n", err: "non-negative"},
		{name: "zero length", in: "/a\t0+0\n", err: "length > 0"},
		{name: "huge range", in: "/a\t1+9223372036854775807\n", err: "OFFSET+LENGTH"},
		{name: "ends overflow", in: "/a\t0+4611686018427387904 4611686018427387904+4611686018427387904\n", err: "OFFSET+LENGTH"},
		{name: "whole int64", in: "/a\t0+9223372036854775807\n", want: []Entry{{Path: "/a", Ranges: []Range{{0, 9223372036854775807}}}}},
		{name: "empty path", in: "\t0+1\n", err: "empty path"},
		{name: "bad quote", in: "\"/a\n", err: "quoted"},
		{name: "junk after quote", in: "\"/a\"x\n", err: "tab after"},
		{name: "NUL", in: "/a\x00b\n", err: "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrSyntax) {
					t.Fatalf("Parse: %v, want an ErrSyntax error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l.Entries, tt.want) {
				t.Fatalf("got %+v, want %+v", l.Entries, tt.want)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	var l List
	l.Add("/usr/bin/x", 4096, 4096)
	l.Add("/etc/passwd", 0, 0)
	l.Add("/usr/bin/x", 0, 4096)
	l.Add("/odd\tname\n", 0, 10)
	l.Add(" spaced ", 0, 0)
	l.Add("#hash", 0, 0)
	l.Add("/usr/bin/x", 100000, 1)
	got, err := Parse(l.Encode())
	if err != nil {
		t.Fatalf("%v\n%s", err, l.Encode())
	}
	if !reflect.DeepEqual(got.Entries, l.Entries) {
		t.Fatalf("round trip: got %+v, want %+v\n%s", got.Entries, l.Entries, l.Encode())
	}
	if want := []Range{{0, 8192}, {100000, 1}}; !reflect.DeepEqual(l.Entries[0].Ranges, want) {
		t.Fatalf("ranges %+v, want %+v", l.Entries[0].Ranges, want)
	}
	if !strings.HasPrefix(string(l.Encode()), "# erofsd prefetch list v1\n") {
		t.Fatalf("no version line:\n%s", l.Encode())
	}
}

func TestLimits(t *testing.T) {
	if _, err := Parse(make([]byte, MaxSize+1)); !errors.Is(err, ErrSyntax) {
		t.Fatalf("oversized list: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("# erofsd prefetch list v1\n/a\t0+4096 8192+4096\n\"/b\\tc\"\t1+1\n"))
	f.Add([]byte("/a\n/b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data)
		if err != nil {
			return
		}
		for _, e := range l.Entries {
			for i, r := range e.Ranges {
				if r.Off < 0 || r.Len <= 0 || i > 0 && e.Ranges[i-1].End() >= r.Off {
					t.Fatalf("ranges not sorted and disjoint: %+v", e.Ranges)
				}
			}
		}
		again, err := Parse(l.Encode())
		if err != nil {
			t.Fatalf("re-parse of encoded list: %v\n%q", err, l.Encode())
		}
		if !reflectEqual(again.Entries, l.Entries) {
			t.Fatalf("round trip changed the list:\n%+v\n%+v", l.Entries, again.Entries)
		}
	})
}

func reflectEqual(a, b []Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Path != b[i].Path || len(a[i].Ranges) != len(b[i].Ranges) {
			return false
		}
		for j := range a[i].Ranges {
			if a[i].Ranges[j] != b[i].Ranges[j] {
				return false
			}
		}
	}
	return true
}

func TestEntryJSON(t *testing.T) {
	in := []Entry{{Path: "/a"}, {Path: "/b", Ranges: []Range{{0, 4096}, {8192, 1}}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `["/a",{"path":"/b","ranges":[[0,4096],[8192,1]]}]`; string(b) != want {
		t.Fatalf("JSON %s, want %s", b, want)
	}
	var out []Entry
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip %+v", out)
	}
	// A list of paths, as erofsd has always stored and sent them.
	if err := json.Unmarshal([]byte(`["/x","/y"]`), &out); err != nil || len(out) != 2 || !out[1].Whole() {
		t.Fatalf("paths: %+v %v", out, err)
	}
	for _, bad := range []string{`[{"path":"/x","ranges":[[-1,1]]}]`, `[{"path":"/x","ranges":[[0,0]]}]`, `[3]`, `[""]`,
		`[{"path":"","ranges":[[0,1]]}]`, `[{"path":"/x","ranges":[[4611686018427387904,4611686018427387904]]}]`} {
		if err := json.Unmarshal([]byte(bad), &out); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestManyRangesLinear: ranges in descending order (a file read
// backwards) cost a sort, not a move of every range per range.
func TestManyRangesLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("/a\t")
	const n = 200000
	for i := n; i > 0; i-- {
		fmt.Fprintf(&b, "%d+1 ", i*10)
	}
	start := time.Now()
	l, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries[0].Ranges) != n || l.Entries[0].Ranges[0].Off != 10 {
		t.Fatalf("%d ranges, first %+v", len(l.Entries[0].Ranges), l.Entries[0].Ranges[0])
	}
	var m List
	for i := n; i > 0; i-- {
		m.Add("/a", int64(i)*10, 1)
	}
	m.Normalize()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("%d descending ranges took %v", n, took)
	}
	if len(m.Entries[0].Ranges) != n {
		t.Fatalf("Add: %d ranges", len(m.Entries[0].Ranges))
	}
}
