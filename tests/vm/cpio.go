package vm

import (
	"fmt"
	"io"
	"path"
	"strings"
)

// cpioWriter writes an archive in the "new ASCII" (newc) cpio format, the
// one the kernel unpacks as initramfs. Every entry is a 110-byte header of
// "070701" and 13 eight-digit hex fields, the NUL-terminated name padded to
// a multiple of 4 bytes (counting the header), then the data padded to a
// multiple of 4. The entry named TRAILER!!! ends the archive.
//
// The kernel does not create missing parent directories, so the writer
// emits them before the first entry below them.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
)

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, dirs: map[string]bool{".": true}}
}

// Dir adds a directory and its missing parents.
func (c *cpioWriter) Dir(name string, perm uint32) error {
	name = cpioName(name)
	if c.dirs[name] {
		return c.err
	}
	c.Dir(path.Dir(name), 0o755)
	c.dirs[name] = true
	c.header(name, cpioDir|perm&0o7777, 2, 0)
	return c.err
}

// File adds a regular file of size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, size int64, r io.Reader) error {
	name = cpioName(name)
	c.Dir(path.Dir(name), 0o755)
	c.header(name, cpioFile|perm&0o7777, 1, size)
	if c.err != nil {
		return c.err
	}
	n, err := io.Copy(c.w, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("cpio: %s: got %d of %d bytes", name, n, size)
	}
	if err != nil {
		c.err = err
		return err
	}
	c.pad(size)
	return c.err
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	name = cpioName(name)
	c.Dir(path.Dir(name), 0o755)
	c.header(name, cpioSymlink|0o777, 1, int64(len(target)))
	c.write(target)
	c.pad(int64(len(target)))
	return c.err
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 1, 0)
	return c.err
}

func (c *cpioWriter) header(name string, mode, nlink uint32, size int64) {
	if c.err == nil && size > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: %d bytes is too large for newc", name, size)
	}
	c.ino++
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with NUL), check.
	c.write(fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, 0, 0, len(name)+1, 0))
	c.write(name + "\x00")
	c.pad(110 + int64(len(name)) + 1)
}

// pad writes the zeros that bring an item of n bytes to a 4-byte boundary.
func (c *cpioWriter) pad(n int64) {
	c.write("\x00\x00\x00"[:(4-n%4)%4])
}

func (c *cpioWriter) write(s string) {
	if c.err == nil {
		_, c.err = io.WriteString(c.w, s)
	}
}

// cpioName turns a guest path into an archive name: relative and clean,
// "." for the root.
func cpioName(p string) string {
	if p = strings.TrimPrefix(path.Clean("/"+p), "/"); p == "" {
		return "."
	}
	return p
}
