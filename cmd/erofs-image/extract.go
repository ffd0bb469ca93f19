package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/erofsd/erofsd/erofs"
	"golang.org/x/sys/unix"
)

func cmdExtract(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	flags := newFlagSet("extract", stderr)
	blobDir := flags.String("blob-dir", "", "`dir` holding the image's blobs (named by digest)")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: erofs-image extract [--blob-dir DIR] IMAGE DEST\n\nDEST must be missing or empty. File data in blobs is verified against the\nimage's chunk digest table; an image with blobs but no valid table is refused.\n\nflags:")
		flags.PrintDefaults()
	}
	pos, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		flags.Usage()
		return fmt.Errorf("%w: extract needs IMAGE and DEST", errUsage)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	// Every blob chunk is checked against the image's chunk digest table
	// before its bytes are written; a blob-backed image without a valid
	// table is refused by Open.
	opts := []erofs.Option{erofs.WithVerifiedBlobs()}
	if *blobDir != "" {
		opts = append(opts, erofs.WithBlobs(erofs.DirBlobs(*blobDir)))
	}
	img, err := erofs.Open(f, opts...)
	if err != nil {
		return fmt.Errorf("%s: not extracting: %w", pos[0], err)
	}
	defer img.Close()
	n, err := extract(ctx, img, pos[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "extracted %d entries to %s\n", n, pos[1])
	return nil
}

// extractor writes an image's tree below a directory through an os.Root,
// so no name or symlink in the image can make it write outside DEST.
type extractor struct {
	img     *erofs.Image
	root    *os.Root
	asRoot  bool
	links   map[uint64]string // nid -> first extracted path, for hard links
	dirNids map[uint64]bool   // directories seen: a corrupt image may loop
	dirs    []dirMeta         // directory attributes, applied after their contents
	buf     []byte
}

type dirMeta struct {
	name string
	st   *erofs.Stat
}

func extract(ctx context.Context, img *erofs.Image, dest string) (int, error) {
	if err := os.Mkdir(dest, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return 0, err
	}
	if ents, err := os.ReadDir(dest); err != nil {
		return 0, err
	} else if len(ents) > 0 {
		return 0, fmt.Errorf("%s: destination is not empty", dest)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	x := &extractor{img: img, root: root, asRoot: os.Geteuid() == 0, links: map[uint64]string{},
		dirNids: map[uint64]bool{}, buf: make([]byte, 1<<20)}
	count := 0
	err = fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		count++
		if err := x.entry(p, d); err != nil {
			return fmt.Errorf("extracting %s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return count, err
	}
	// Directories last, deepest first, so adding entries does not
	// change their mtime and read-only modes do not block their contents.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		if err := x.finish(x.dirs[i].name, x.dirs[i].st); err != nil {
			return count, fmt.Errorf("extracting %s: %w", x.dirs[i].name, err)
		}
	}
	return count, nil
}

func (x *extractor) entry(p string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	st := info.Sys().(*erofs.Stat)
	if p != "." && (strings.Contains(d.Name(), "/") || d.Name() == ".." || d.Name() == ".") {
		return fmt.Errorf("unsafe name %q in image", d.Name())
	}
	if !d.IsDir() && st.Nlink > 1 {
		if first, ok := x.links[st.Nid]; ok {
			return x.root.Link(first, p)
		}
		x.links[st.Nid] = p
	}
	switch t := d.Type(); {
	case t.IsDir():
		if x.dirNids[st.Nid] {
			return fmt.Errorf("directory nid %d reached twice (a directory loop: run erofs-image check)", st.Nid)
		}
		x.dirNids[st.Nid] = true
		if p != "." {
			if err := x.root.Mkdir(p, 0o700); err != nil {
				return err
			}
		}
		x.dirs = append(x.dirs, dirMeta{p, st})
		return nil
	case t.IsRegular():
		if err := x.copyFile(p); err != nil {
			return err
		}
	case t&fs.ModeSymlink != 0:
		target, err := x.img.ReadLink(p)
		if err != nil {
			return err
		}
		if err := x.root.Symlink(target, p); err != nil {
			return err
		}
	default:
		if err := x.mknod(p, st); err != nil {
			return err
		}
	}
	return x.finish(p, st)
}

func (x *extractor) copyFile(p string) error {
	src, err := x.img.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := x.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, src, x.buf); err != nil {
		dst.Close()
		// Leave no file that looks extracted but is incomplete.
		if rerr := x.root.Remove(p); rerr != nil {
			return errors.Join(err, fmt.Errorf("removing the partial file: %w", rerr))
		}
		return err
	}
	return dst.Close()
}

// parentFD opens the directory holding p inside the root and returns its
// fd and p's last component, for the *at syscalls os.Root lacks.
func (x *extractor) parent(p string) (*os.File, string, error) {
	dir, base := path.Split(p)
	if dir == "" {
		dir = "."
	}
	f, err := x.root.Open(dir)
	if err != nil {
		return nil, "", err
	}
	return f, base, nil
}

func (x *extractor) mknod(p string, st *erofs.Stat) error {
	dir, base, err := x.parent(p)
	if err != nil {
		return err
	}
	defer dir.Close()
	mode := uint32(st.RawMode)&unix.S_IFMT | 0o600
	return unix.Mknodat(int(dir.Fd()), base, mode, int(st.Rdev))
}

// finish applies ownership, mode, xattrs and times. Symlinks get owner,
// xattrs where the kernel allows and times; no mode.
func (x *extractor) finish(p string, st *erofs.Stat) error {
	dir, base, err := x.parent(p)
	if err != nil {
		return err
	}
	defer dir.Close()
	dfd := int(dir.Fd())
	if p == "." {
		base = "."
	}
	isLink := st.Mode&fs.ModeSymlink != 0
	if x.asRoot {
		if err := unix.Fchownat(dfd, base, int(st.UID), int(st.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	xs, err := x.img.Xattrs(p)
	if err != nil {
		return err
	}
	for _, xa := range xs {
		if !x.asRoot && !strings.HasPrefix(xa.Name, "user.") {
			continue
		}
		if isLink && strings.HasPrefix(xa.Name, "user.") {
			continue // the kernel refuses user.* on symlinks
		}
		// /proc/self/fd/N/base names base relative to the opened parent
		// directory, so the path never leaves the root.
		target := fmt.Sprintf("/proc/self/fd/%d/%s", dfd, base)
		if err := unix.Lsetxattr(target, xa.Name, xa.Value, 0); err != nil {
			return fmt.Errorf("setting xattr %s: %w", xa.Name, err)
		}
	}
	if !isLink {
		// After chown: chown clears setuid and setgid.
		perm := uint32(st.RawMode) & 0o7777
		if err := unix.Fchmodat(dfd, base, perm, 0); err != nil {
			return err
		}
	}
	// EROFS keeps one timestamp: use it for atime and mtime.
	mt := unix.Timespec{Sec: st.Mtime.Unix(), Nsec: int64(st.Mtime.Nanosecond())}
	ts := []unix.Timespec{mt, mt}
	return unix.UtimesNanoAt(dfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}
