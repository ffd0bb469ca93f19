package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// OCI layer whiteout conventions.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// TarOptions control how a tar stream is read.
type TarOptions struct {
	// KeepWhiteouts stores ".wh.*" entries as plain files instead of
	// converting them to overlayfs whiteouts and opaque markers.
	KeepWhiteouts bool
}

// ErrBadTar reports a tar stream that cannot be used.
var ErrBadTar = errors.New("bad tar stream")

// Decompress returns a reader of r's uncompressed content, recognising
// gzip and zstd by their magic numbers; anything else is passed through.
// Close the returned closer when done.
func Decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip: %v", ErrBadTar, err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: zstd: %v", ErrBadTar, err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// AddLayer applies one OCI image layer (a tar stream, plain, gzip or
// zstd) on top of the layers added before, as a container runtime would
// unpack them: later entries replace earlier ones, directories merge,
// ".wh.NAME" deletes NAME and ".wh..wh..opq" hides what lower layers put
// in its directory. The result is one merged image. In blob mode, the
// data each layer adds goes into a blob of its own (chunks already stored
// for a lower layer are referenced there, not stored again).
func (b *Builder) AddLayer(ctx context.Context, r io.Reader) error {
	// What earlier layers added is placed in their blobs first.
	if err := b.zdrain(ctx); err != nil {
		return err
	}
	b.layer++
	b.tree.layer = b.layer
	b.blob = nil // the next chunk starts a new blob
	if err := b.eachEntry(ctx, r, b.applyLayerEntry); err != nil {
		return fmt.Errorf("layer %d: %w", b.layer, err)
	}
	return nil
}

// eachEntry decompresses r and calls fn for each tar entry in order.
func (b *Builder) eachEntry(ctx context.Context, r io.Reader, fn func(context.Context, *tar.Reader, *tar.Header) error) error {
	ur, closeFn, err := Decompress(r)
	if err != nil {
		return err
	}
	defer closeFn()
	tr := tar.NewReader(ur)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadTar, err)
		}
		if err := fn(ctx, tr, hdr); err != nil {
			return err
		}
		b.progress(hdr.Name)
	}
}

func (b *Builder) applyLayerEntry(ctx context.Context, tr *tar.Reader, hdr *tar.Header) error {
	parts, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if len(parts) > 0 {
		base := parts[len(parts)-1]
		switch {
		case base == whiteoutOpaque:
			if d := b.tree.lookup(parts[:len(parts)-1]); d != nil && d.isDir() {
				b.tree.hideLower(d)
			}
			return nil
		case strings.HasPrefix(base, whiteoutMeta):
			return nil
		case strings.HasPrefix(base, whiteoutPrefix):
			target := strings.TrimPrefix(base, whiteoutPrefix)
			if target == "" || target == "." || target == ".." {
				return fmt.Errorf("%q: %w: whiteout of %q", hdr.Name, ErrUnsafePath, target)
			}
			b.tree.remove(append(parts[:len(parts)-1:len(parts)-1], target))
			return nil
		}
	}
	if hdr.Typeflag == tar.TypeLink {
		return b.tree.link(hdr.Name, hdr.Linkname, true)
	}
	n, err := b.tarNode(hdr)
	if err != nil || n == nil {
		return err
	}
	if n.isReg() {
		if err := b.ingest(ctx, hdr.Name, n, fileSource{r: tr}); err != nil {
			return err
		}
	}
	return b.tree.add(hdr.Name, n, true)
}

// AddTar adds the entries of a tar stream (plain, gzip or zstd). OCI
// whiteouts become overlayfs whiteouts (character devices 0:0) and opaque
// markers set trusted.overlay.opaque=y on their directory, so the image
// works as an overlayfs lower layer. Unsafe paths, links that escape the
// root and duplicate entries are refused.
func (b *Builder) AddTar(ctx context.Context, r io.Reader, opts TarOptions) error {
	return b.eachEntry(ctx, r, func(ctx context.Context, tr *tar.Reader, hdr *tar.Header) error {
		return b.addTarEntry(ctx, tr, hdr, opts)
	})
}

func (b *Builder) addTarEntry(ctx context.Context, tr *tar.Reader, hdr *tar.Header, opts TarOptions) error {
	name := hdr.Name
	if _, err := cleanPath(name); err != nil {
		return err
	}
	dir, base := path.Split(strings.TrimSuffix(name, "/"))
	if !opts.KeepWhiteouts && strings.HasPrefix(base, whiteoutPrefix) {
		return b.addWhiteout(hdr, dir, base)
	}
	if hdr.Typeflag == tar.TypeLink {
		return b.tree.link(name, hdr.Linkname, false)
	}
	n, err := b.tarNode(hdr)
	if err != nil {
		return err
	}
	if n == nil {
		return nil // entry type with no file (global header)
	}
	if n.isReg() {
		if err := b.ingest(ctx, name, n, fileSource{r: tr}); err != nil {
			return err
		}
	}
	return b.tree.add(name, n, false)
}

// addWhiteout converts an OCI whiteout entry.
func (b *Builder) addWhiteout(hdr *tar.Header, dir, base string) error {
	switch {
	case base == whiteoutOpaque:
		parts, err := cleanPath(dir)
		if err != nil {
			return err
		}
		d := b.tree.lookup(parts)
		if d == nil {
			// Opaque marker before its directory: imply the directory.
			d = &node{mode: unix.S_IFDIR | 0o755, entries: map[string]*node{}}
			if err := b.tree.add(dir, d, false); err != nil {
				return err
			}
			d.explicit = false
		}
		if !d.isDir() {
			return fmt.Errorf("%q: %w", hdr.Name, ErrNotDir)
		}
		for _, x := range d.xattr {
			if x.name == opaqueXattr {
				return nil
			}
		}
		xs, err := checkXattrs(append(d.xattr, xattr{opaqueXattr, "y"}))
		if err != nil {
			return err
		}
		d.xattr = xs
		d.opaque = true
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		return nil // other AUFS metadata (.wh..wh.plnk, ...) has no overlay meaning
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("%q: %w: whiteout of %q", hdr.Name, ErrUnsafePath, target)
	}
	n := &node{mode: unix.S_IFCHR, rdev: 0, uid: 0, gid: 0, mtime: hdr.ModTime.Unix(), nsec: uint32(hdr.ModTime.Nanosecond())}
	return b.tree.add(path.Join(dir, target), n, false)
}

// tarNode converts a tar header to a node (without data).
func (b *Builder) tarNode(hdr *tar.Header) (*node, error) {
	perm := uint32(hdr.Mode) & 0o7777
	n := &node{
		uid:   uint32(hdr.Uid),
		gid:   uint32(hdr.Gid),
		mtime: hdr.ModTime.Unix(),
		nsec:  uint32(hdr.ModTime.Nanosecond()),
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 0xFFFFFFFF || int64(hdr.Gid) > 0xFFFFFFFF {
		return nil, fmt.Errorf("%q: %w: uid %d gid %d", hdr.Name, ErrBadTar, hdr.Uid, hdr.Gid)
	}
	if b.opts.AllRoot {
		n.uid, n.gid = 0, 0
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if hdr.Size < 0 {
			return nil, fmt.Errorf("%q: %w: negative size", hdr.Name, ErrBadTar)
		}
		n.mode = unix.S_IFREG | perm
		n.size = uint64(hdr.Size)
	case tar.TypeDir:
		n.mode = unix.S_IFDIR | perm
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > 4095 || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return nil, fmt.Errorf("%q: %w: symlink target of %d bytes", hdr.Name, ErrBadName, len(hdr.Linkname))
		}
		n.mode = unix.S_IFLNK | 0o777
		n.link = hdr.Linkname
	case tar.TypeChar, tar.TypeBlock:
		n.mode = unix.S_IFCHR | perm
		if hdr.Typeflag == tar.TypeBlock {
			n.mode = unix.S_IFBLK | perm
		}
		if hdr.Devmajor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor < 0 || hdr.Devminor > 0xfffff {
			return nil, fmt.Errorf("%q: %w: device %d:%d", hdr.Name, ErrBadTar, hdr.Devmajor, hdr.Devminor)
		}
		n.rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		n.mode = unix.S_IFIFO | perm
	case tar.TypeXGlobalHeader:
		return nil, nil
	default:
		return nil, fmt.Errorf("%q: %w: unsupported entry type %q", hdr.Name, ErrBadTar, hdr.Typeflag)
	}
	var xs []xattr
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			xs = append(xs, xattr{name: name, value: v})
		}
	}
	var err error
	if n.xattr, err = checkXattrs(xs); err != nil {
		return nil, fmt.Errorf("%q: %w", hdr.Name, err)
	}
	return n, nil
}
