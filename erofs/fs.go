package erofs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// maxSymlinks is the number of symbolic links one lookup may follow
// (Linux's MAXSYMLINKS).
const maxSymlinks = 40

// maxSymlinkSize is the longest target Linux returns (PATH_MAX - 1).
const maxSymlinkSize = 4095

// maxReadFile bounds ReadFile's single allocation.
const maxReadFile = 4 << 30

var (
	errNotDir = errors.New("not a directory")
	errIsDir  = errors.New("is a directory")
	errLoop   = errors.New("too many levels of symbolic links")
)

var (
	_ fs.FS         = (*Image)(nil)
	_ fs.ReadDirFS  = (*Image)(nil)
	_ fs.ReadFileFS = (*Image)(nil)
	_ fs.StatFS     = (*Image)(nil)
	_ fs.ReadLinkFS = (*Image)(nil)
)

func pathErr(op, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

func baseName(name string) string {
	if name == "." {
		return "."
	}
	return path.Base(name)
}

// validPath is fs.ValidPath without its UTF-8 requirement: EROFS names are
// bytes, and a file whose name is not UTF-8 must stay reachable through
// the names ReadDir returns. Paths are still unrooted, slash-separated and
// free of empty, "." and ".." elements ("." alone names the root).
func validPath(name string) bool {
	if name == "." {
		return true
	}
	for {
		i := strings.IndexByte(name, '/')
		elem := name
		if i >= 0 {
			elem = name[:i]
		}
		if elem == "" || elem == "." || elem == ".." {
			return false
		}
		if i < 0 {
			return true
		}
		name = name[i+1:]
	}
}

// resolve looks name up from the root. Symbolic links in intermediate
// elements are always followed, a final one only if follow is set. Link
// targets are interpreted inside the image: "/" is the image root and ".."
// never leaves it.
func (img *Image) resolve(op, name string, follow bool) (*inode, error) {
	if err := img.checkOpen(); err != nil {
		return nil, pathErr(op, name, err)
	}
	if !validPath(name) {
		return nil, pathErr(op, name, fs.ErrInvalid)
	}
	var pending []string // remaining elements, last one next
	if name != "." {
		parts := strings.Split(name, "/")
		for i := len(parts) - 1; i >= 0; i-- {
			pending = append(pending, parts[i])
		}
	}
	stack := []*inode{img.root}
	links := 0
	for len(pending) > 0 {
		elem := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		top := stack[len(stack)-1]
		if !top.isDir() {
			return nil, pathErr(op, name, errNotDir)
		}
		switch elem {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		de, ok, err := img.lookup(top, elem)
		if err != nil {
			return nil, pathErr(op, name, err)
		}
		if !ok {
			return nil, pathErr(op, name, fs.ErrNotExist)
		}
		ino, err := img.inode(de.nid)
		if err != nil {
			return nil, pathErr(op, name, fmt.Errorf("entry %q: %w", elem, err))
		}
		if ino.isSymlink() && (follow || len(pending) > 0) {
			if links++; links > maxSymlinks {
				return nil, pathErr(op, name, errLoop)
			}
			target, err := img.readlink(ino)
			if err != nil {
				return nil, pathErr(op, name, err)
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			parts := strings.Split(target, "/")
			for i := len(parts) - 1; i >= 0; i-- {
				pending = append(pending, parts[i])
			}
			continue
		}
		stack = append(stack, ino)
	}
	return stack[len(stack)-1], nil
}

// readlink returns a symlink's target.
func (img *Image) readlink(ino *inode) (string, error) {
	if ino.size == 0 || ino.size > maxSymlinkSize {
		return "", corruptf("symlink nid %d: target length %d", ino.nid, ino.size)
	}
	b := make([]byte, ino.size)
	if _, err := img.readData(ino, b, 0); err != nil {
		return "", fmt.Errorf("symlink nid %d: %w", ino.nid, err)
	}
	return string(b), nil
}

// Open opens the named file, following symbolic links. Directories
// implement fs.ReadDirFile; other files implement io.ReaderAt and
// io.Seeker. Device nodes, FIFOs and sockets read as empty files.
func (img *Image) Open(name string) (fs.File, error) {
	ino, err := img.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	if ino.isDir() {
		return &dirFile{img: img, ino: ino, name: name}, nil
	}
	return &file{img: img, ino: ino, name: name}, nil
}

// Stat describes the named file, following symbolic links.
func (img *Image) Stat(name string) (fs.FileInfo, error) {
	ino, err := img.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	return img.fileInfo(baseName(name), ino), nil
}

// Lstat describes the named file without following a final symbolic link.
func (img *Image) Lstat(name string) (fs.FileInfo, error) {
	ino, err := img.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return img.fileInfo(baseName(name), ino), nil
}

// ReadLink returns the target of the named symbolic link.
func (img *Image) ReadLink(name string) (string, error) {
	ino, err := img.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if !ino.isSymlink() {
		return "", pathErr("readlink", name, fs.ErrInvalid)
	}
	target, err := img.readlink(ino)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	return target, nil
}

// ReadDir returns the entries of the named directory sorted by name,
// without "." and "..".
func (img *Image) ReadDir(name string) ([]fs.DirEntry, error) {
	ino, err := img.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !ino.isDir() {
		return nil, pathErr("readdir", name, errNotDir)
	}
	var out []fs.DirEntry
	it := img.newDirIter(ino)
	for {
		ents, err := it.next()
		if err != nil {
			return out, pathErr("readdir", name, err)
		}
		if ents == nil {
			return out, nil
		}
		out = appendEntries(img, out, ents)
	}
}

func appendEntries(img *Image, out []fs.DirEntry, ents []dirent) []fs.DirEntry {
	for _, e := range ents {
		if isDotOrDotDot(e.name) {
			continue
		}
		out = append(out, &dirEntry{img: img, name: string(e.name), nid: e.nid, ftype: e.ftype})
	}
	return out
}

// ReadFile returns the contents of the named file, following symbolic
// links. Files larger than 4 GiB fail with ErrTooLarge.
func (img *Image) ReadFile(name string) ([]byte, error) {
	ino, err := img.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	if ino.isDir() {
		return nil, pathErr("read", name, errIsDir)
	}
	if ino.isSpecial() {
		return []byte{}, nil
	}
	if ino.size > maxReadFile {
		return nil, pathErr("read", name, fmt.Errorf("%w: %d bytes", ErrTooLarge, ino.size))
	}
	if err := img.validateData(ino); err != nil {
		return nil, pathErr("read", name, err)
	}
	if ino.compressed() {
		b, err := img.readAllCompressed(ino)
		if err != nil {
			return nil, pathErr("read", name, err)
		}
		return b, nil
	}
	b := make([]byte, ino.size)
	if _, err := img.readData(ino, b, 0); err != nil && ino.size > 0 {
		return nil, pathErr("read", name, err)
	}
	return b, nil
}

// validateData cheaply checks, before a buffer of i_size bytes is
// allocated, that a file's data mapping is plausible: flat data must lie
// inside its device, a chunk array or compressed index inside the image.
func (img *Image) validateData(ino *inode) error {
	switch ino.layout() {
	case disk.LayoutFlatPlain, disk.LayoutFlatInline:
		exts, err := img.flatExtents(ino)
		if err != nil {
			return err
		}
		for _, e := range exts {
			if lim := img.devLimit(e.dev); lim >= 0 && e.pstart+e.llen > lim {
				return corruptf("nid %d: data [%d, %d) beyond device %d end %d", ino.nid, e.pstart, e.pstart+e.llen, e.dev, lim)
			}
		}
		return nil
	case disk.LayoutChunkBased:
		_, err := img.chunkLayout(ino)
		return err
	default:
		return img.validateCompressed(ino)
	}
}
