package erofs

import "sort"

// spanSet is a set of disjoint, sorted, non-adjacent byte ranges. Check
// uses it to read each physical range of a device at most once, so that
// data shared (or maliciously overlapped) by many files costs one read.
type spanSet struct {
	s []span
}

type span struct{ start, end int64 }

// missing returns the parts of [start, end) not in the set.
func (ss *spanSet) missing(start, end int64) []span {
	var out []span
	i := sort.Search(len(ss.s), func(i int) bool { return ss.s[i].end > start })
	for ; i < len(ss.s) && start < end; i++ {
		sp := ss.s[i]
		if sp.start >= end {
			break
		}
		if sp.start > start {
			out = append(out, span{start, sp.start})
		}
		start = max(start, sp.end)
	}
	if start < end {
		out = append(out, span{start, end})
	}
	return out
}

// add inserts [start, end), merging with overlapping or adjacent spans.
func (ss *spanSet) add(start, end int64) {
	if start >= end {
		return
	}
	i := sort.Search(len(ss.s), func(i int) bool { return ss.s[i].end >= start })
	j := i
	for j < len(ss.s) && ss.s[j].start <= end {
		start = min(start, ss.s[j].start)
		end = max(end, ss.s[j].end)
		j++
	}
	if i == j {
		ss.s = append(ss.s, span{})
		copy(ss.s[i+1:], ss.s[i:])
		ss.s[i] = span{start, end}
		return
	}
	ss.s[i] = span{start, end}
	ss.s = append(ss.s[:i+1], ss.s[j:]...)
}
