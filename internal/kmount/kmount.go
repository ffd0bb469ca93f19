// Package kmount is erofsd's mount code: it mounts EROFS images with the
// running kernel (Mount: file-backed, or in fscache mode by fsid),
// unmounts them (Unmount: retrying while busy), finds a mount's sysfs
// directory (SysfsDir) and tunes its readahead (SetReadahead). Supported
// says whether this process can make file-backed mounts here.
//
// File-backed mode (CONFIG_EROFS_FS_BACKED_BY_FILE, Linux 6.12+) lets the
// kernel read an image straight from a regular file, without a loop
// device. mount(8) would turn a regular-file source into a loop device
// first, after which every device= option must name a block device as
// well; Mount passes the image file itself. The extra devices of a
// multi-device image (the blobs of a chunk-based image) are device=
// options, in the order of the image's device table.
package kmount

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/erofsd/erofsd/internal/hostcap"
	"golang.org/x/sys/unix"
)

// Unmount timing: how long Unmount retries while the mount is busy before
// detaching it lazily.
const (
	busyRetryFor   = 2 * time.Second
	busyRetryFirst = 10 * time.Millisecond
)

// On-disk superblock facts of minimalImage.
const (
	sbOffset = 1024
	sbMagic  = 0xE0F5E1E2
)

// mountHint explains the usual causes of a mount(2) errno.
func mountHint(err error) string {
	switch {
	case errors.Is(err, unix.EPERM):
		return " (mounting needs CAP_SYS_ADMIN)"
	case errors.Is(err, unix.ENODEV):
		return " (the kernel has no erofs filesystem)"
	case errors.Is(err, unix.ENOTBLK):
		return " (the kernel lacks CONFIG_EROFS_FS_BACKED_BY_FILE: it wants a block device)"
	case errors.Is(err, unix.EINVAL):
		return " (bad image, unknown mount option, or device count not matching the image's device table: see dmesg)"
	}
	return ""
}

// Unmount unmounts target, retrying for up to two seconds while it is busy
// and then detaching it lazily (MNT_DETACH). A lazy unmount is reported as
// an error wrapping unix.EBUSY, although the mount point is gone from the
// namespace afterwards.
func Unmount(target string) error {
	deadline := time.Now().Add(busyRetryFor)
	delay := busyRetryFirst
	for {
		err := unix.Unmount(target, 0)
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("kmount: unmount %s: %w", target, err)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(delay)
		delay = min(delay*2, 200*time.Millisecond)
	}
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("kmount: unmount %s: busy for %v, lazy unmount failed too: %w", target, busyRetryFor, err)
	}
	return fmt.Errorf("kmount: unmount %s: busy for %v, detached lazily: %w", target, busyRetryFor, unix.EBUSY)
}

var (
	supportedOnce sync.Once
	supportedErr  error
)

// Supported reports whether this process can make file-backed EROFS
// mounts: it needs root, erofs in /proc/filesystems, and a trial mount of a
// minimal image must succeed. The returned error says which check failed
// (a *hostcap.Missing: tests skip with it). The result is computed once.
func Supported() error {
	supportedOnce.Do(func() { supportedErr = checkSupported() })
	return supportedErr
}

func checkSupported() error {
	const what = "file-backed EROFS mounts"
	if err := hostcap.Root(what); err != nil {
		return err
	}
	ok, err := kernelHasErofs()
	if err != nil {
		return err
	}
	if !ok {
		return &hostcap.Missing{What: what, Why: "the kernel has no erofs filesystem (not in /proc/filesystems; try modprobe erofs)"}
	}
	dir, err := os.MkdirTemp("", "kmount-probe-")
	if err != nil {
		return fmt.Errorf("kmount: trial mount: %w", err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "probe.erofs")
	if err := os.WriteFile(img, minimalImage(), 0o644); err != nil {
		return fmt.Errorf("kmount: trial mount: write image: %w", err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return fmt.Errorf("kmount: trial mount: %w", err)
	}
	if err := Mount(Spec{Source: img}, mnt); err != nil {
		return hostcap.Missingf(what, "a trial mount failed (Linux 6.12+ with CONFIG_EROFS_FS_BACKED_BY_FILE): %w", err)
	}
	var st unix.Stat_t
	statErr := unix.Stat(mnt, &st)
	if err := Unmount(mnt); err != nil {
		return fmt.Errorf("kmount: trial mount: %w", err)
	}
	if statErr != nil {
		return fmt.Errorf("kmount: trial mount: stat root: %w", statErr)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != probeRootMode {
		return fmt.Errorf("kmount: trial mount: root has mode %#o, want directory %#o", st.Mode, probeRootMode)
	}
	return nil
}

// kernelHasErofs reads /proc/filesystems.
func kernelHasErofs() (bool, error) {
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false, fmt.Errorf("kmount: read /proc/filesystems: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[len(f)-1] == "erofs" {
			return true, nil
		}
	}
	return false, nil
}

// probeRootMode is the root directory mode of minimalImage.
const probeRootMode = 0o755

// minimalImage returns a one-block EROFS image holding only an empty root
// directory, built from the on-disk format: the 128-byte superblock at
// offset 1024, and right after it a 32-byte compact inode for the root
// (nid 36 with meta_blkaddr 0) whose directory data (the "." and ".."
// entries) is stored inline after the inode.
func minimalImage() []byte {
	const (
		blockSize   = 4096
		rootNid     = (sbOffset + 128) / 32 // 36
		direntSize  = 12                    // nid u64, nameoff u16, file_type u8, reserved u8
		ftDirectory = 2
		// i_format: bit 0 = 0 (compact inode), bits 1-3 = 2 (flat inline).
		formatCompactInline = 2 << 1
	)
	img := make([]byte, blockSize)
	le := binary.LittleEndian
	sb := img[sbOffset:]
	le.PutUint32(sb[0:], sbMagic)
	sb[12] = 12 // blkszbits
	le.PutUint16(sb[14:], rootNid)
	le.PutUint64(sb[16:], 1)        // inos
	le.PutUint32(sb[36:], 1)        // blocks
	copy(sb[64:80], "kmount-probe") // volume_name
	// Directory data: two dirents ("." and "..", both pointing at the
	// root), then the names they point into, "." and "..", unterminated.
	dirData := make([]byte, 2*direntSize, 2*direntSize+3)
	for i, nameoff := range []uint16{2 * direntSize, 2*direntSize + 1} {
		d := dirData[i*direntSize:]
		le.PutUint64(d[0:], rootNid)
		le.PutUint16(d[8:], nameoff)
		d[10] = ftDirectory
	}
	dirData = append(dirData, "..."...)
	ino := img[rootNid*32:]
	le.PutUint16(ino[0:], formatCompactInline)
	le.PutUint16(ino[4:], unix.S_IFDIR|probeRootMode)
	le.PutUint16(ino[6:], 2) // nlink
	le.PutUint32(ino[8:], uint32(len(dirData)))
	le.PutUint32(ino[20:], 1) // ino
	copy(ino[32:], dirData)
	return img
}

// fsIocGetFSSysfsPath is FS_IOC_GETFSSYSFSPATH (Linux 6.8+): the mount's
// directory under /sys/fs, "erofs/<name>"; a file-backed EROFS mount's
// backing device info (/sys/class/bdi/<name>) has the same name.
const fsIocGetFSSysfsPath = 0x80811501

// sysfsPath returns the mount's path under /sys/fs ("erofs/<name>").
func sysfsPath(target string) (string, error) {
	f, err := os.Open(target)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var buf [129]byte // struct fs_sysfs_path: u8 len, u8 name[128]
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocGetFSSysfsPath, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return "", fmt.Errorf("sysfs path of the mount at %s: %w", target, errno)
	}
	n := min(int(buf[0]), len(buf)-1)
	rel := string(buf[1 : 1+n])
	name, ok := strings.CutPrefix(rel, "erofs/")
	if !ok || name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return "", fmt.Errorf("mount at %s: unexpected sysfs path %q", target, rel)
	}
	return rel, nil
}

// BDIName returns the name of the backing device info of the EROFS
// filesystem mounted at target (/sys/class/bdi/<name>).
func BDIName(target string) (string, error) {
	rel, err := sysfsPath(target)
	if err != nil {
		return "", err
	}
	// File-backed mounts are named after their bdi, "erofs-<n>"; fscache
	// ones after their fsid, which is no bdi of theirs.
	name := strings.TrimPrefix(rel, "erofs/")
	if !strings.HasPrefix(name, "erofs-") || strings.Contains(name, ",") {
		return "", fmt.Errorf("mount at %s: sysfs path %q names no bdi", target, rel)
	}
	return name, nil
}

// SysfsDir returns the directory of the EROFS filesystem mounted at
// target under /sys/fs ("/sys/fs/erofs/<name>"). It exists as long as
// the filesystem does: after its mount point is unmounted, a bind mount
// or an overlay using it as a layer keeps it alive. Linux 6.8+
// (FS_IOC_GETFSSYSFSPATH).
func SysfsDir(target string) (string, error) {
	rel, err := sysfsPath(target)
	if err != nil {
		return "", err
	}
	return filepath.Join("/sys/fs", rel), nil
}

// SetReadahead sets the readahead of the EROFS filesystem mounted at
// target to kb KiB. EROFS reads its blobs in pieces of this size (128 KiB
// by default): for erofsd, whose front ends answer every read of data
// not yet fetched, larger reads mean fewer round trips.
func SetReadahead(target string, kb int) error {
	name, err := BDIName(target)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join("/sys/class/bdi", name, "read_ahead_kb"), []byte(strconv.Itoa(kb)), 0)
}
