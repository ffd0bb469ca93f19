package build

import (
	"cmp"
	"path"
	"slices"
	"strings"

	"github.com/erofsd/erofsd/erofs/internal/disk"
	"github.com/erofsd/erofsd/prefetchlist"
)

// startSet answers, for a chunk of a file being added, whether a prefetch
// list names it and at which rank (the list position of its file), so the
// chunk goes to the front of its blob.
type startSet struct {
	entries map[string]startEntry // by cleaned absolute path
	dirs    bool                  // some whole entry may be a directory
}

type startEntry struct {
	rank   int
	ranges []prefetchlist.Range // nil: the whole file (or every file under a directory)
}

func newStartSet(l *prefetchlist.List) *startSet {
	if l == nil || len(l.Entries) == 0 {
		return nil
	}
	s := &startSet{entries: make(map[string]startEntry, len(l.Entries))}
	for i, e := range l.Entries {
		p := cleanListPath(e.Path)
		if _, ok := s.entries[p]; ok {
			continue
		}
		s.entries[p] = startEntry{rank: i, ranges: e.Ranges}
		if e.Whole() {
			s.dirs = true
		}
	}
	return s
}

func cleanListPath(p string) string { return path.Clean("/" + strings.TrimSpace(p)) }

// file returns the entry covering the file at name (a path as added),
// itself or, for a whole-listed directory, its nearest listed ancestor.
func (s *startSet) file(name string) (startEntry, bool) {
	if s == nil {
		return startEntry{}, false
	}
	p := cleanListPath(name)
	if e, ok := s.entries[p]; ok {
		return e, true
	}
	for s.dirs && p != "/" {
		p = path.Dir(p)
		if e, ok := s.entries[p]; ok && e.ranges == nil {
			return e, true
		}
	}
	return startEntry{}, false
}

// chunk reports whether [off, off+n) of the file at name is listed.
func (s *startSet) chunk(name string, off, n int64) (rank int, ok bool) {
	e, ok := s.file(name)
	if !ok {
		return 0, false
	}
	if e.ranges == nil {
		return e.rank, true
	}
	for _, r := range e.ranges {
		if r.Off < off+n && off < r.End() {
			return e.rank, true
		}
	}
	return 0, false
}

// rank orders a file by its position in the list; unlisted files come
// after every listed one.
func (s *startSet) rank(name string) int {
	if e, ok := s.file(name); ok {
		return e.rank
	}
	return int(^uint(0) >> 1)
}

// ranked is a start-set extent and the list position it is read at.
type ranked struct {
	e    disk.StartExtent
	rank int
}

// unionOverlaps merges extents that overlap on their device (a listed
// pcluster inside a back-segment chunk that is listed whole) into one
// with the better rank: the set's extents must not overlap.
func unionOverlaps(all []ranked) []ranked {
	slices.SortFunc(all, func(a, b ranked) int {
		if c := cmp.Compare(a.e.DeviceID, b.e.DeviceID); c != 0 {
			return c
		}
		if c := cmp.Compare(a.e.BlkAddr, b.e.BlkAddr); c != 0 {
			return c
		}
		return cmp.Compare(a.rank, b.rank)
	})
	out := all[:1]
	for _, r := range all[1:] {
		k := &out[len(out)-1]
		end := uint64(k.e.BlkAddr) + uint64(k.e.Blocks)
		if r.e.DeviceID != k.e.DeviceID || uint64(r.e.BlkAddr) >= end {
			out = append(out, r)
			continue
		}
		k.e.Blocks = uint32(max(end, uint64(r.e.BlkAddr)+uint64(r.e.Blocks)) - uint64(k.e.BlkAddr))
		k.rank = min(k.rank, r.rank)
	}
	return out
}

// encodeStartSet encodes the start set section: each blob's front
// segment, and the start-set chunks deduplicated into back segments,
// ordered by the list position of their first chunk, adjacent extents
// merged.
func encodeStartSet(blobs []*blob) []byte {
	var all []ranked
	for _, bl := range blobs {
		if len(bl.frontChunks) > 0 && bl.frontBlocks > 0 {
			all = append(all, ranked{disk.StartExtent{DeviceID: bl.device, Blocks: bl.frontBlocks}, bl.frontRank()})
		}
		for blk, x := range bl.extraStart {
			all = append(all, ranked{disk.StartExtent{DeviceID: bl.device, BlkAddr: blk + bl.frontBlocks, Blocks: x.blocks}, x.rank})
		}
	}
	if len(all) == 0 {
		return nil
	}
	all = unionOverlaps(all)
	slices.SortStableFunc(all, func(a, b ranked) int {
		if c := cmp.Compare(a.rank, b.rank); c != 0 {
			return c
		}
		if c := cmp.Compare(a.e.DeviceID, b.e.DeviceID); c != 0 {
			return c
		}
		return cmp.Compare(a.e.BlkAddr, b.e.BlkAddr)
	})
	var ext []disk.StartExtent
	for _, r := range all {
		if k := len(ext) - 1; k >= 0 && ext[k].DeviceID == r.e.DeviceID && ext[k].BlkAddr+ext[k].Blocks == r.e.BlkAddr {
			ext[k].Blocks += r.e.Blocks
			continue
		}
		if len(ext) == disk.MaxStartExtents {
			break // the rest is read on demand; the set stays readable
		}
		ext = append(ext, r.e)
	}
	return disk.EncodeSection(disk.StartSetMagic, disk.StartSetVersion, disk.StartSetEntrySize, len(ext),
		func(i int, b []byte) { ext[i].Encode(b) })
}
