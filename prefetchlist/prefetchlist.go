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
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
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

	index    map[string]int // path → position in Entries, built by Add
	unsorted map[int]bool   // entries whose ranges Add appended out of order
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
// first time goes at the end, a known one gets the range added to its
// ranges. n <= 0 marks the whole file. Ranges that come in order are
// merged as they come; out of order, they are merged by Normalize (Encode
// does it), which must run before Entries are read. An empty path, or a
// range whose end overflows, is ignored.
func (l *List) Add(path string, off, n int64) {
	if path == "" || n > 0 && (off < 0 || off > math.MaxInt64-n) {
		return
	}
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
	if n <= 0 {
		l.Entries[i].Ranges = nil
		delete(l.unsorted, i)
		return
	}
	rs := l.Entries[i].Ranges
	switch last := len(rs) - 1; {
	case last < 0 || off > rs[last].End():
		rs = append(rs, Range{off, n})
		if last >= 0 && off < rs[last].Off {
			l.markUnsorted(i)
		}
	case off >= rs[last].Off:
		rs[last].Len = max(rs[last].End(), off+n) - rs[last].Off
	default:
		rs = append(rs, Range{off, n})
		l.markUnsorted(i)
	}
	l.Entries[i].Ranges = rs
}

func (l *List) markUnsorted(i int) {
	if l.unsorted == nil {
		l.unsorted = map[int]bool{}
	}
	l.unsorted[i] = true
}

// Normalize sorts and merges the ranges Add took out of order. Parse and
// Encode call it.
func (l *List) Normalize() {
	for i := range l.unsorted {
		l.Entries[i].Ranges = normalizeRanges(l.Entries[i].Ranges)
	}
	l.unsorted = nil
}

// normalizeRanges sorts rs and merges overlapping and adjacent ranges, in
// place.
func normalizeRanges(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	out := rs[:0]
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && r.Off <= out[k].End() {
			out[k].Len = max(out[k].End(), r.End()) - out[k].Off
			continue
		}
		out = append(out, r)
	}
	return out
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
	l.Normalize()
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
		if err1 != nil || err2 != nil || off < 0 || ln <= 0 || off > math.MaxInt64-ln {
			return e, fmt.Errorf("range %q: want OFFSET+LENGTH, non-negative, length > 0", f)
		}
		e.Ranges = append(e.Ranges, Range{off, ln})
	}
	return e, nil
}

// Encode writes the list in the current format, starting with the
// version line.
func (l *List) Encode() []byte {
	l.Normalize()
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
		if p == "" {
			return fmt.Errorf("%w: entry with an empty path", ErrSyntax)
		}
		*e = Entry{Path: p}
		return nil
	}
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w: entry: want a path or {path, ranges}: %w", ErrSyntax, err)
	}
	if j.Path == "" {
		return fmt.Errorf("%w: entry with an empty path", ErrSyntax)
	}
	if len(j.Ranges) > MaxRanges {
		return fmt.Errorf("%w: %s: more than %d ranges", ErrSyntax, j.Path, MaxRanges)
	}
	out := Entry{Path: j.Path}
	for _, r := range j.Ranges {
		if r[0] < 0 || r[1] <= 0 || r[0] > math.MaxInt64-r[1] {
			return fmt.Errorf("%w: %s: range %d+%d: want offset >= 0, length > 0, no overflow", ErrSyntax, j.Path, r[0], r[1])
		}
		out.Ranges = append(out.Ranges, Range{r[0], r[1]})
	}
	out.Ranges = normalizeRanges(out.Ranges)
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
