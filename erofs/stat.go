package erofs

import (
	"io/fs"
	"time"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// Stat is the raw inode information returned by FileInfo.Sys.
type Stat struct {
	Nid     uint64
	Mode    fs.FileMode
	RawMode uint16 // S_IF* type and permission bits as on disk
	UID     uint32
	GID     uint32
	Nlink   uint32
	Size    int64
	// Mtime is exact for extended inodes (their own mtime and nsec);
	// compact inodes get the superblock build time, as Linux 6.1 does.
	Mtime      time.Time
	Rdev       uint64 // device number in unix.Mkdev form, for device nodes
	Layout     int    // data layout (disk.Layout*)
	Extended   bool   // 64-byte inode
	XattrCount int    // raw i_xattr_icount (0: no xattrs); see Image.Xattrs
}

func (img *Image) stat(ino *inode) Stat {
	d := &ino.d
	st := Stat{
		Nid:        ino.nid,
		Mode:       fileMode(d.Mode),
		RawMode:    d.Mode,
		UID:        d.UID,
		GID:        d.GID,
		Nlink:      d.Nlink,
		Size:       ino.size,
		Layout:     ino.layout(),
		Extended:   d.Extended(),
		XattrCount: int(d.XattrICount),
	}
	if st.Extended {
		st.Mtime = unixTime(d.Mtime, d.MtimeNsec)
	} else {
		st.Mtime = unixTime(img.sb.BuildTime, img.sb.BuildTimeNsec)
	}
	if t := ino.typ(); t == sIFCHR || t == sIFBLK {
		st.Rdev = mkdev(disk.DecodeRdev(d.U))
	}
	return st
}

// mkdev builds a Linux dev_t like unix.Mkdev.
func mkdev(major, minor uint32) uint64 {
	ma, mi := uint64(major), uint64(minor)
	return (ma&0x00000fff)<<8 | (ma&0xfffff000)<<32 | mi&0x000000ff | (mi&0xffffff00)<<12
}

// fileInfo implements fs.FileInfo.
type fileInfo struct {
	name string
	st   Stat
}

func (img *Image) fileInfo(name string, ino *inode) *fileInfo {
	return &fileInfo{name: name, st: img.stat(ino)}
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.st.Size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.st.Mode }
func (fi *fileInfo) ModTime() time.Time { return fi.st.Mtime }
func (fi *fileInfo) IsDir() bool        { return fi.st.Mode.IsDir() }
func (fi *fileInfo) Sys() any           { st := fi.st; return &st }

// dirEntry implements fs.DirEntry from a directory entry.
type dirEntry struct {
	img   *Image
	name  string
	nid   uint64
	ftype uint8
}

func (de *dirEntry) Name() string { return de.name }
func (de *dirEntry) IsDir() bool  { return de.Type().IsDir() }

func (de *dirEntry) Type() fs.FileMode {
	if de.ftype == disk.FTUnknown {
		if ino, err := de.img.inode(de.nid); err == nil {
			return fileMode(ino.d.Mode).Type()
		}
	}
	return modeOfFtype(de.ftype)
}

// Info returns the entry's inode's FileInfo. An entry whose type is not
// its inode's is corrupt: a walker going by the entry's type would treat
// the inode as what it is not.
func (de *dirEntry) Info() (fs.FileInfo, error) {
	ino, err := de.img.inode(de.nid)
	if err != nil {
		return nil, pathErr("stat", de.name, err)
	}
	fi := de.img.fileInfo(de.name, ino)
	if de.ftype != disk.FTUnknown && modeOfFtype(de.ftype) != fi.Mode().Type() {
		return nil, pathErr("stat", de.name, corruptf("directory entry says %s, nid %d is a %s", typeName(modeOfFtype(de.ftype)), de.nid, typeName(fi.Mode())))
	}
	return fi, nil
}

func (de *dirEntry) String() string { return fs.FormatDirEntry(de) }

// typeName names the file type of m.
func typeName(m fs.FileMode) string {
	switch t := m.Type(); {
	case t == 0:
		return "regular file"
	case t&fs.ModeDir != 0:
		return "directory"
	case t&fs.ModeSymlink != 0:
		return "symlink"
	case t&fs.ModeCharDevice != 0:
		return "character device"
	case t&fs.ModeDevice != 0:
		return "block device"
	case t&fs.ModeNamedPipe != 0:
		return "fifo"
	case t&fs.ModeSocket != 0:
		return "socket"
	}
	return m.Type().String()
}
