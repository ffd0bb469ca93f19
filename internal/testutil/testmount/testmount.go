// Package testmount mounts EROFS images file-backed with the running
// kernel for tests that check images against the real filesystem
// driver: FileBacked takes an image and its blob files and returns the
// unmount. It mounts through kmount (the production mount code) and
// refuses a blob count that does not match the image's device table,
// which the kernel would accept and then read zeros for.
package testmount

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/erofsd/erofsd/internal/kmount"
)

// Option adjusts a mount made by [FileBacked].
type Option func(*config)

type config struct {
	attrs int
	data  []string
}

// WithAttrs adds mount attributes such as unix.MOUNT_ATTR_NODEV,
// MOUNT_ATTR_NOSUID or MOUNT_ATTR_NOEXEC. The mount is always read-only.
func WithAttrs(attrs int) Option {
	return func(c *config) { c.attrs |= attrs }
}

// WithData adds comma-free EROFS mount options, such as "acl",
// "nouser_xattr" or "cache_strategy=disabled", after the device= options.
func WithData(options ...string) Option {
	return func(c *config) { c.data = append(c.data, options...) }
}

// FileBacked mounts the EROFS image file image read-only on the
// existing directory target, in file-backed mode. blobs lists the extra
// device files of a multi-device image (for example the --blobdev file of
// a chunk-based image), in device-table order; it may be empty.
//
// The returned function unmounts it. It retries for a short while when the
// mount is busy (an open file or a process with its cwd there), then falls
// back to a lazy unmount (MNT_DETACH), which always succeeds but leaves the
// filesystem alive until its last user goes away; the error then says so.
// Calling it again after success returns nil.
func FileBacked(image string, blobs []string, target string, opts ...Option) (unmount func() error, err error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	img, err := regularFile(image)
	if err != nil {
		return nil, fmt.Errorf("testmount: image: %w", err)
	}
	var devices []string
	for _, b := range blobs {
		abs, err := regularFile(b)
		if err != nil {
			return nil, fmt.Errorf("testmount: blob: %w", err)
		}
		devices = append(devices, abs)
	}
	for _, o := range c.data {
		if o == "" || strings.Contains(o, ",") {
			return nil, fmt.Errorf("testmount: mount option %q must be non-empty and free of commas", o)
		}
	}
	tgt, err := filepath.Abs(target)
	if err != nil {
		return nil, fmt.Errorf("testmount: target %s: %w", target, err)
	}
	if fi, err := os.Stat(tgt); err != nil {
		return nil, fmt.Errorf("testmount: target: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("testmount: target %s is not a directory", tgt)
	}
	extra, err := extraDevices(img)
	if err != nil {
		return nil, err
	}
	if extra != len(blobs) {
		// The kernel accepts a multi-device image mounted without its
		// device= options and then silently reads zeros where the blob
		// data should be, so refuse the mismatch here.
		return nil, fmt.Errorf("testmount: image %s has %d extra device(s) in its device table, %d blob(s) given", img, extra, len(blobs))
	}
	if err := kmount.Mount(kmount.Spec{Source: img, Devices: devices, Options: c.data, Attrs: c.attrs}, tgt); err != nil {
		return nil, err
	}
	var once sync.Once
	var unmountErr error
	return func() error {
		once.Do(func() { unmountErr = kmount.Unmount(tgt) })
		return unmountErr
	}, nil
}

// On-disk superblock facts used by extraDevices.
const (
	sbOffset           = 1024
	sbMagic            = 0xE0F5E1E2
	featureDeviceTable = 0x8 // EROFS_FEATURE_INCOMPAT_DEVICE_TABLE
)

// extraDevices reads the superblock of the EROFS image at path and returns
// the number of extra devices its device table lists.
func extraDevices(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("testmount: image: %w", err)
	}
	defer f.Close()
	sb := make([]byte, 128)
	if _, err := f.ReadAt(sb, sbOffset); err != nil {
		return 0, fmt.Errorf("testmount: read superblock of %s: %w", path, err)
	}
	le := binary.LittleEndian
	if m := le.Uint32(sb[0:]); m != sbMagic {
		return 0, fmt.Errorf("testmount: %s is not an EROFS image (magic %#08x at offset %d)", path, m, sbOffset)
	}
	if le.Uint32(sb[80:])&featureDeviceTable == 0 {
		return 0, nil
	}
	return int(le.Uint16(sb[86:])), nil
}

// regularFile returns the absolute path of p after checking that it is a
// regular file whose name the kernel's option parser can take.
func regularFile(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file (file-backed mounts need one)", abs)
	}
	if strings.ContainsAny(abs, ",") {
		return "", fmt.Errorf("%s contains a comma, which mount options cannot carry", abs)
	}
	return abs, nil
}
