package build

import (
	"fmt"
	"slices"
	"strings"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// xattr is one extended attribute with its full name.
type xattr struct {
	name  string
	value string
}

// xattrPrefixes maps the short prefixes Linux 6.1 understands to their
// name indexes. POSIX ACLs are whole names with an empty suffix.
var xattrPrefixes = []struct {
	prefix string
	index  uint8
	exact  bool
}{
	{"system.posix_acl_access", disk.XattrIndexPosixACLAccess, true},
	{"system.posix_acl_default", disk.XattrIndexPosixACLDefault, true},
	{"user.", disk.XattrIndexUser, false},
	{"trusted.", disk.XattrIndexTrusted, false},
	{"security.", disk.XattrIndexSecurity, false},
}

// splitXattrName returns the name index and the stored suffix of name.
func splitXattrName(name string) (uint8, string, error) {
	for _, p := range xattrPrefixes {
		if p.exact {
			if name == p.prefix {
				return p.index, "", nil
			}
			continue
		}
		if rest, ok := strings.CutPrefix(name, p.prefix); ok {
			if rest == "" {
				return 0, "", fmt.Errorf("%w: %q has an empty name", ErrBadXattr, name)
			}
			if len(rest) > 255 {
				return 0, "", fmt.Errorf("%w: %q: name longer than 255 bytes", ErrBadXattr, name)
			}
			return p.index, rest, nil
		}
	}
	return 0, "", fmt.Errorf("%w: %q (only user., trusted., security. and POSIX ACLs can be stored)", ErrBadXattr, name)
}

// checkXattrs validates and sorts a list of xattrs.
func checkXattrs(xs []xattr) ([]xattr, error) {
	for _, x := range xs {
		if _, _, err := splitXattrName(x.name); err != nil {
			return nil, err
		}
		if len(x.value) > 0xFFFF {
			return nil, fmt.Errorf("%w: %q: value of %d bytes exceeds 65535", ErrBadXattr, x.name, len(x.value))
		}
	}
	slices.SortFunc(xs, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(xs); i++ {
		if xs[i].name == xs[i-1].name {
			return nil, fmt.Errorf("%w: %q given twice", ErrBadXattr, xs[i].name)
		}
	}
	return xs, nil
}

// xattrEntrySize is the padded on-disk size of one entry.
func xattrEntrySize(x xattr) int {
	_, suffix, _ := splitXattrName(x.name)
	e := disk.XattrEntry{NameLen: uint8(len(suffix)), ValueSize: uint16(len(x.value))}
	return e.Size()
}

// appendXattrEntry appends the encoded, padded entry for x to b.
func appendXattrEntry(b []byte, x xattr) []byte {
	idx, suffix, _ := splitXattrName(x.name)
	e := disk.XattrEntry{NameLen: uint8(len(suffix)), NameIndex: idx, ValueSize: uint16(len(x.value))}
	start := len(b)
	b = append(b, make([]byte, e.Size())...)
	e.Encode(b[start:])
	n := copy(b[start+disk.XattrEntrySize:], suffix)
	copy(b[start+disk.XattrEntrySize+n:], x.value)
	return b
}

// sharedXattrs collects the xattrs used by two or more inodes into the
// shared area, so each of those inodes stores a 4-byte id instead.
type sharedXattrs struct {
	ids  map[xattr]uint32 // entry -> id (byte offset / 4 in the area)
	area []byte
}

func buildSharedXattrs(nodes []*node) *sharedXattrs {
	count := map[xattr]int{}
	for _, n := range nodes {
		for _, x := range n.xattr {
			count[x]++
		}
	}
	var shared []xattr
	for x, c := range count {
		if c >= 2 {
			shared = append(shared, x)
		}
	}
	slices.SortFunc(shared, func(a, b xattr) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return strings.Compare(a.value, b.value)
	})
	s := &sharedXattrs{ids: make(map[xattr]uint32, len(shared))}
	for _, x := range shared {
		s.ids[x] = uint32(len(s.area) / disk.XattrAlign)
		s.area = appendXattrEntry(s.area, x)
	}
	return s
}

// encodeIBody builds an inode's inline xattr area: header, shared ids,
// then inline entries. It returns nil for an inode without xattrs.
func (s *sharedXattrs) encodeIBody(xs []xattr) ([]byte, error) {
	if len(xs) == 0 {
		return nil, nil
	}
	var ids []uint32
	var inline []xattr
	for _, x := range xs {
		if id, ok := s.ids[x]; ok && len(ids) < 255 {
			ids = append(ids, id)
		} else {
			inline = append(inline, x)
		}
	}
	b := make([]byte, disk.XattrHeaderSize, disk.XattrHeaderSize+4*len(ids))
	h := disk.XattrHeader{SharedCount: uint8(len(ids))}
	h.Encode(b)
	for _, id := range ids {
		b = append(b, byte(id), byte(id>>8), byte(id>>16), byte(id>>24))
	}
	for _, x := range inline {
		b = appendXattrEntry(b, x)
	}
	if len(b) > disk.XattrIBodySize(0xFFFF) {
		return nil, fmt.Errorf("%w: inline xattrs take %d bytes", ErrTooLarge, len(b))
	}
	return b, nil
}
