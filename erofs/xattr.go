package erofs

import (
	"fmt"
	"slices"
	"strings"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// Xattr is one extended attribute with its full name.
type Xattr struct {
	Name  string
	Value []byte
}

// xattrPrefixes maps a short name index to its prefix. ACL entries carry
// an empty name, so their prefix is the whole name.
var xattrPrefixes = [...]string{
	disk.XattrIndexUser:            "user.",
	disk.XattrIndexPosixACLAccess:  "system.posix_acl_access",
	disk.XattrIndexPosixACLDefault: "system.posix_acl_default",
	disk.XattrIndexTrusted:         "trusted.",
	disk.XattrIndexLustre:          "lustre.",
	disk.XattrIndexSecurity:        "security.",
}

// xattrInfo is the decoded inline xattr area of an inode.
type xattrInfo struct {
	shared []uint32
	attrs  []Xattr // inline entries then shared ones, in disk order
}

// readXattrs decodes the inline and shared xattrs of ino.
func (img *Image) readXattrs(ino *inode) (*xattrInfo, error) {
	xi := &xattrInfo{}
	if ino.xsize == 0 {
		return xi, nil
	}
	area := make([]byte, ino.xsize) // at most 12 + 4*65534 bytes, bounds checked by inode()
	if err := readFull(img.r, area, ino.xattrOff()); err != nil {
		return nil, fmt.Errorf("nid %d xattr area: %w", ino.nid, err)
	}
	h, err := disk.DecodeXattrHeader(area)
	if err != nil {
		return nil, fmt.Errorf("%w: nid %d: %w", ErrCorrupt, ino.nid, err)
	}
	pos := disk.XattrHeaderSize + 4*int(h.SharedCount)
	if pos > len(area) {
		return nil, corruptf("nid %d: %d shared xattr ids exceed the %d-byte xattr area", ino.nid, h.SharedCount, len(area))
	}
	for i := 0; i < int(h.SharedCount); i++ {
		xi.shared = append(xi.shared, le32(area[disk.XattrHeaderSize+4*i:]))
	}
	for pos < len(area) {
		x, n, err := decodeXattr(area[pos:])
		if err != nil {
			return nil, fmt.Errorf("nid %d: inline xattr at byte %d: %w", ino.nid, ino.xattrOff()+int64(pos), err)
		}
		xi.attrs = append(xi.attrs, x)
		pos += n
	}
	for _, id := range xi.shared {
		x, err := img.sharedXattr(id)
		if err != nil {
			return nil, fmt.Errorf("nid %d: %w", ino.nid, err)
		}
		xi.attrs = append(xi.attrs, x)
	}
	return xi, nil
}

// decodeXattr decodes one entry at the start of b and returns its padded
// size. The entry must fit in b.
func decodeXattr(b []byte) (Xattr, int, error) {
	e, err := disk.DecodeXattrEntry(b)
	if err != nil {
		return Xattr{}, 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if e.Size() > len(b) {
		return Xattr{}, 0, corruptf("entry of %d bytes (name %d, value %d) exceeds the %d bytes left", e.Size(), e.NameLen, e.ValueSize, len(b))
	}
	if int(e.NameIndex) >= len(xattrPrefixes) || xattrPrefixes[e.NameIndex] == "" {
		return Xattr{}, 0, corruptf("unknown xattr name index %d", e.NameIndex)
	}
	name := b[disk.XattrEntrySize : disk.XattrEntrySize+int(e.NameLen)]
	if e.NameIndex == disk.XattrIndexPosixACLAccess || e.NameIndex == disk.XattrIndexPosixACLDefault {
		if len(name) != 0 {
			return Xattr{}, 0, corruptf("ACL xattr with a name suffix %q", name)
		}
	} else if len(name) == 0 {
		return Xattr{}, 0, corruptf("xattr with an empty name (index %d)", e.NameIndex)
	}
	if strings.IndexByte(string(name), 0) >= 0 {
		return Xattr{}, 0, corruptf("xattr name %q contains NUL", name)
	}
	vstart := disk.XattrEntrySize + int(e.NameLen)
	value := make([]byte, e.ValueSize)
	copy(value, b[vstart:vstart+int(e.ValueSize)])
	return Xattr{Name: xattrPrefixes[e.NameIndex] + string(name), Value: value}, e.Size(), nil
}

// sharedXattr reads shared xattr id.
func (img *Image) sharedXattr(id uint32) (Xattr, error) {
	off := img.xattrOff + 4*int64(id)
	if img.size >= 0 && off+disk.XattrEntrySize > img.size {
		return Xattr{}, corruptf("shared xattr id %d at byte %d beyond image end %d", id, off, img.size)
	}
	var hb [disk.XattrEntrySize]byte
	if err := readFull(img.r, hb[:], off); err != nil {
		return Xattr{}, fmt.Errorf("shared xattr id %d: %w", id, err)
	}
	e, _ := disk.DecodeXattrEntry(hb[:])
	n := int64(disk.XattrEntrySize + int(e.NameLen) + int(e.ValueSize))
	if img.size >= 0 && off+n > img.size {
		return Xattr{}, corruptf("shared xattr id %d [%d, %d) beyond image end %d", id, off, off+n, img.size)
	}
	b := make([]byte, e.Size())
	if err := readFull(img.r, b[:n], off); err != nil {
		return Xattr{}, fmt.Errorf("shared xattr id %d: %w", id, err)
	}
	x, _, err := decodeXattr(b)
	if err != nil {
		return Xattr{}, fmt.Errorf("shared xattr id %d at byte %d: %w", id, off, err)
	}
	return x, nil
}

// Xattrs returns the extended attributes of name (not following a final
// symbolic link), inline and shared, sorted by name.
func (img *Image) Xattrs(name string) ([]Xattr, error) {
	ino, err := img.resolve("xattrs", name, false)
	if err != nil {
		return nil, err
	}
	xi, err := img.readXattrs(ino)
	if err != nil {
		return nil, pathErr("xattrs", name, err)
	}
	slices.SortStableFunc(xi.attrs, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	return xi.attrs, nil
}
