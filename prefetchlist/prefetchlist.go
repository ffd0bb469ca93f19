// Package prefetchlist reads and writes erofsd prefetch lists: the files
// of an image, and optionally byte ranges of them, that a workload reads
// first, in the order it first reads them.
//
// The format is text, one file a line:
//
//	# erofsd prefetch list v1
//	/usr/bin/python3.11	0+1048576 4194304+65536
//	/etc/ld.so.cache
//
// A line is a path in the image, then optionally a tab and
// space-separated OFFSET+LENGTH byte ranges of that file; a path alone
// stands for the whole file (a directory for the files under it). A path
// that holds a tab, a newline, a leading quote or '#', or leading or
// trailing spaces is written Go-quoted. Blank lines and lines starting
// with '#' are comments, except a first line "# erofsd prefetch list vN",
// which says the format version: files of a later version are refused
// rather than misread. Files without it (a path a line, as erofsd has
// always read them) are version 1.
package prefetchlist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Version is the format version this package writes.
const Version = 1

const header = "# erofsd prefetch list v"

// Limits on what Parse accepts: a list is a hint, never a reason to
// allocate without bound.
const (
	MaxSize    = 16 << 20 // bytes of list text
	MaxEntries = 1 << 20
	MaxRanges  = 1 << 20 // ranges in all entries
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("prefetch list")

// Range is a byte range of a file: Len bytes from Off.
type Range struct {
	Off, Len int64
}

// End is the offset just past the range.
func (r Range) End() int64 { return r.Off + r.Len }

// Entry is one file of a list: its path in the image and, when Ranges is
// empty, all of it.
type Entry struct {
	Path   string
	Ranges []Range
}

// Whole reports whether the entry stands for the whole file.
func (e Entry) Whole() bool { return len(e.Ranges) == 0 }

// List is a prefetch list in first-access order. The zero List is empty
// and ready to use.
type List struct {
	Entries []Entry

	index map[string]int // path → position in Entries, built by Add
}

// Paths returns the entries' paths in order.
func (l *List) Paths() []string {
	out := make([]string, len(l.Entries))
	for i, e := range l.Entries {
		out[i] = e.Path
	}
	return out
}

// Add records that [off, off+n) of path was read: a path seen for the
// first time goes at the end, a known one gets the range merged into its
// ranges. n <= 0 with off 0 marks the whole file.
func (l *List) Add(path string, off, n int64) {
	if l.index == nil {
		l.index = make(map[string]int, len(l.Entries))
		for i, e := range l.Entries {
			if _, ok := l.index[e.Path]; !ok {
				l.index[e.Path] = i
			}
		}
	}
	i, ok := l.index[path]
	if !ok {
		i = len(l.Entries)
		l.index[path] = i
		l.Entries = append(l.Entries, Entry{Path: path})
		if n <= 0 {
			return
		}
	} else if l.Entries[i].Whole() {
		return // already the whole file
	}
	if n <= 0 || off < 0 {
		l.Entries[i].Ranges = nil
		return
	}
	l.Entries[i].Ranges = mergeRange(l.Entries[i].Ranges, Range{off, n})
}

// mergeRange inserts r into sorted, disjoint, non-adjacent rs.
func mergeRange(rs []Range, r Range) []Range {
	i, _ := slices.BinarySearchFunc(rs, r.Off, func(x Range, off int64) int {
		if x.End() < off {
			return -1
		}
		return 1
	})
	j := i
	for j < len(rs) && rs[j].Off <= r.End() {
		off, end := min(r.Off, rs[j].Off), max(r.End(), rs[j].End())
		r = Range{off, end - off}
		j++
	}
	return slices.Replace(rs, i, j, r)
}

// Parse reads a list. Ranges of an entry are sorted and merged; a path
// listed twice keeps its first position, with the ranges of both.
func Parse(data []byte) (*List, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrSyntax, len(data), MaxSize)
	}
	l := &List{}
	ranges := 0
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if n == 0 && strings.HasPrefix(line, header) {
			v, err := strconv.Atoi(strings.TrimSpace(line[len(header):]))
			if err != nil || v < 1 {
				return nil, fmt.Errorf("%w: line 1: bad version %q", ErrSyntax, line[len(header):])
			}
			if v > Version {
				return nil, fmt.Errorf("%w: version %d, this erofsd reads up to %d", ErrSyntax, v, Version)
			}
			continue
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		e, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrSyntax, n+1, err)
		}
		if ranges += len(e.Ranges); ranges > MaxRanges {
			return nil, fmt.Errorf("%w: more than %d ranges", ErrSyntax, MaxRanges)
		}
		if len(l.Entries) >= MaxEntries {
			return nil, fmt.Errorf("%w: more than %d entries", ErrSyntax, MaxEntries)
		}
		if e.Whole() {
			l.Add(e.Path, 0, 0)
		}
		for _, r := range e.Ranges {
			l.Add(e.Path, r.Off, r.Len)
		}
	}
	return l, nil
}

func parseLine(line string) (Entry, error) {
	var e Entry
	rest := ""
	if s := strings.TrimLeft(line, " "); strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return e, fmt.Errorf("bad quoted path: %w", err)
		}
		if e.Path, err = strconv.Unquote(q); err != nil {
			return e, fmt.Errorf("bad quoted path: %w", err)
		}
		rest = s[len(q):]
		if rest != "" && rest[0] != '\t' && strings.TrimSpace(rest) != "" {
			return e, fmt.Errorf("want a tab after the quoted path")
		}
	} else {
		p, r, _ := strings.Cut(line, "\t")
		e.Path, rest = strings.TrimSpace(p), r
	}
	if e.Path == "" {
		return e, fmt.Errorf("empty path")
	}
	if strings.ContainsRune(e.Path, 0) {
		return e, fmt.Errorf("path holds a NUL byte")
	}
	for _, f := range strings.Fields(rest) {
		o, n, ok := strings.Cut(f, "+")
		if !ok {
			return e, fmt.Errorf("range %q: want OFFSET+LENGTH", f)
		}
		off, err1 := strconv.ParseInt(o, 10, 64)
		ln, err2 := strconv.ParseInt(n, 10, 64)
		if err1 != nil || err2 != nil || off < 0 || ln <= 0 || off > (1<<62) || ln > (1<<62) {
			return e, fmt.Errorf("range %q: want OFFSET+LENGTH, non-negative, length > 0", f)
		}
		e.Ranges = append(e.Ranges, Range{off, ln})
	}
	return e, nil
}

// Encode writes the list in the current format, starting with the
// version line.
func (l *List) Encode() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%d\n", header, Version)
	for _, e := range l.Entries {
		b.WriteString(quotePath(e.Path))
		for i, r := range e.Ranges {
			if i == 0 {
				b.WriteByte('\t')
			} else {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%d+%d", r.Off, r.Len)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func quotePath(p string) string {
	if p == "" || strings.ContainsAny(p, "\t\n\r") || p[0] == '"' || p[0] == '#' ||
		strings.TrimSpace(p) != p || !strconv.CanBackquote(p) && strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return strconv.Quote(p)
	}
	return p
}

// ReadFile reads and parses the list in the named file, refusing one
// larger than MaxSize before reading it whole.
func ReadFile(name string) (*List, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("prefetch list: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("prefetch list %s: %w", name, err)
	}
	l, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// MarshalJSON encodes a whole-file entry as its path, others as
// {"path": P, "ranges": [[OFF, LEN], ...]}, so that lists of paths keep
// the JSON they always had.
func (e Entry) MarshalJSON() ([]byte, error) {
	if e.Whole() {
		return json.Marshal(e.Path)
	}
	rs := make([][2]int64, len(e.Ranges))
	for i, r := range e.Ranges {
		rs[i] = [2]int64{r.Off, r.Len}
	}
	return json.Marshal(entryJSON{Path: e.Path, Ranges: rs})
}

type entryJSON struct {
	Path   string     `json:"path"`
	Ranges [][2]int64 `json:"ranges,omitempty"`
}

// UnmarshalJSON decodes either form MarshalJSON writes. Ranges must be
// valid (offset >= 0, length > 0); they are sorted and merged.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var p string
	if err := json.Unmarshal(b, &p); err == nil {
		*e = Entry{Path: p}
		return nil
	}
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w: entry: want a path or {path, ranges}: %w", ErrSyntax, err)
	}
	out := Entry{Path: j.Path}
	for _, r := range j.Ranges {
		if r[0] < 0 || r[1] <= 0 || r[0] > 1<<62 || r[1] > 1<<62 {
			return fmt.Errorf("%w: %s: range %d+%d: want offset >= 0, length > 0", ErrSyntax, j.Path, r[0], r[1])
		}
		out.Ranges = mergeRange(out.Ranges, Range{r[0], r[1]})
	}
	*e = out
	return nil
}

// Files returns whole-file entries for paths.
func Files(paths ...string) []Entry {
	out := make([]Entry, len(paths))
	for i, p := range paths {
		out[i] = Entry{Path: p}
	}
	return out
}
