package kmount

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Spec describes an EROFS mount as erofsd makes it.
type Spec struct {
	// Source is the image file of a file-backed mount; empty in fscache
	// mode, where the kernel asks for the image by FSID.
	Source string
	// FSID and DomainID select fscache (cachefiles on-demand) mode.
	FSID     string
	DomainID string
	// Devices are the device= values in device table order: blob files
	// for a file-backed mount, cache object names in fscache mode (they
	// replace the device tags as the blobs' cookie keys).
	Devices []string
	// Options are further EROFS options: "acl", "nouser_xattr",
	// "cache_strategy=disabled" (a flag, or key=value).
	Options []string
	// Attrs are MOUNT_ATTR_* flags for the mount (MOUNT_ATTR_RDONLY is
	// always set), such as unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID.
	Attrs int
}

// Mount mounts spec read-only on the directory target. It uses the mount
// API of Linux 5.2 (fsopen, fsconfig, fsmount, move_mount): each option
// is passed on its own, so a mount has no limit on its device= options
// (mount(2) takes one page of them, about 40 blob names), and the
// kernel's own explanation of a refusal is part of the error, which wraps
// the errno.
func Mount(spec Spec, target string) error {
	fd, err := unix.Fsopen("erofs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("kmount: fsopen erofs: %w%s", err, mountHint(err))
	}
	defer unix.Close(fd)
	fail := func(what string, err error) error {
		if msg := kernelLog(fd); msg != "" {
			return fmt.Errorf("kmount: %s: %w (kernel: %s)%s", what, err, msg, mountHint(err))
		}
		return fmt.Errorf("kmount: %s: %w%s", what, err, mountHint(err))
	}
	set := func(key, value string) error {
		if err := unix.FsconfigSetString(fd, key, value); err != nil {
			return fail(fmt.Sprintf("option %s=%s", key, value), err)
		}
		return nil
	}
	if spec.Source != "" {
		if err := set("source", spec.Source); err != nil {
			return err
		}
	}
	if spec.FSID != "" {
		if err := set("fsid", spec.FSID); err != nil {
			return err
		}
	}
	if spec.DomainID != "" {
		if err := set("domain_id", spec.DomainID); err != nil {
			return err
		}
	}
	for _, d := range spec.Devices {
		if d == "" {
			return errors.New("kmount: empty device")
		}
		if err := set("device", d); err != nil {
			return err
		}
	}
	for _, o := range spec.Options {
		if k, v, ok := strings.Cut(o, "="); ok {
			if err := set(k, v); err != nil {
				return err
			}
		} else if err := unix.FsconfigSetFlag(fd, o); err != nil {
			return fail("option "+o, err)
		}
	}
	if err := unix.FsconfigSetFlag(fd, "ro"); err != nil {
		return fail("option ro", err)
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fail(describe(spec), err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, spec.Attrs|unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		return fail("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("kmount: mounting on %s: %w", target, err)
	}
	return nil
}

// describe names a mount in errors.
func describe(spec Spec) string {
	if spec.FSID != "" {
		s := "erofs fsid=" + spec.FSID
		if spec.DomainID != "" {
			s += " domain_id=" + spec.DomainID
		}
		return fmt.Sprintf("%s (%d devices)", s, len(spec.Devices))
	}
	return fmt.Sprintf("erofs %s (%d devices)", spec.Source, len(spec.Devices))
}

// kernelLog reads the messages the kernel left on an fs context ("e erofs:
// ..." lines), joined.
func kernelLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		m := string(bytes.TrimSpace(buf[:n]))
		if len(m) > 2 && m[1] == ' ' {
			m = m[2:] // the "e "/"w "/"i " severity prefix
		}
		msgs = append(msgs, m)
	}
	return strings.Join(msgs, "; ")
}
