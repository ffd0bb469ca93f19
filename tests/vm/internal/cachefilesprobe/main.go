// Command cachefilesprobe checks, inside a test guest, that the kernel's
// cachefiles on-demand mode serves an EROFS image: it binds /dev/cachefiles
// to a cache directory, mounts the image in fscache mode, answers the
// kernel's OPEN, READ and CLOSE requests from the image, and prints the
// SHA-256 of one file of the mount, read through the kernel, then counts of
// the requests it served.
//
// It validates the VM test bed (tests/vm) with the real protocol and is
// kept minimal on purpose: one image, one mount, no restarts.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The /dev/cachefiles protocol (include/uapi/linux/cachefiles.h).
const (
	opOpen  = 0
	opClose = 1
	opRead  = 2

	headerSize  = 16   // msg_id, opcode, len, object_id: u32 each
	openSize    = 16   // volume_key_size, cookie_key_size, fd, flags: u32 each
	readSize    = 16   // off, len: u64 each
	maxMsgSize  = 1024 // CACHEFILES_MSG_MAX_SIZE
	readDoneReq = 0x40049801

	block = 4096 // the cache file is written with direct I/O
)

func main() {
	image := flag.String("image", "/dev/vdb", "EROFS image (file or block device)")
	cacheDir := flag.String("cache", "/cache/fscache", "cachefiles cache directory")
	fsid := flag.String("fsid", "probe", "fsid of the mount and cookie key of the image")
	mnt := flag.String("mnt", "/mnt", "mount point")
	file := flag.String("read", "", "file of the image to hash, relative to its root")
	timeout := flag.Duration("timeout", time.Minute, "give up after this long")
	flag.Parse()
	if err := run(*image, *cacheDir, *fsid, *mnt, *file, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "cachefilesprobe:", err)
		os.Exit(1)
	}
}

func run(image, cacheDir, fsid, mnt, file string, timeout time.Duration) error {
	img, err := os.Open(image)
	if err != nil {
		return err
	}
	size, err := img.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	for _, d := range []string{cacheDir, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	dev, err := unix.Open("/dev/cachefiles", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/cachefiles: %w", err)
	}
	defer unix.Close(dev)
	// The buffer pwrite copies from must be page-aligned: mmap is.
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	s := &server{dev: dev, img: img, size: size, fsid: fsid, buf: buf, fds: map[uint32]int{}}
	for _, cmd := range []string{"dir " + cacheDir, "tag probe", "bind ondemand"} {
		if err := s.command(cmd); err != nil {
			return err
		}
	}

	// The mount and the reads block until this goroutine serves them.
	type result struct {
		sum []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := mountAndHash(fsid, mnt, file)
		done <- result{sum, err}
	}()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case r := <-done:
			if r.err != nil {
				return r.err
			}
			fmt.Printf("sha256 %x %s\n", r.sum, file)
			fmt.Printf("requests open=%d read=%d close=%d bytes=%d\n", s.opens, s.reads, s.closes, s.written)
			return nil
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		if err := s.serve(100 * time.Millisecond); err != nil {
			return err
		}
	}
}

// mountAndHash mounts the image in fscache mode, hashes file and unmounts.
func mountAndHash(fsid, mnt, file string) ([]byte, error) {
	if err := unix.Mount("none", mnt, "erofs", 0, "fsid="+fsid); err != nil {
		return nil, fmt.Errorf("mount fsid=%s: %w", fsid, err)
	}
	h := sha256.New()
	f, err := os.Open(filepath.Join(mnt, file))
	if err == nil {
		_, err = io.Copy(h, f)
		f.Close()
	}
	if uerr := unix.Unmount(mnt, 0); err == nil && uerr != nil {
		err = fmt.Errorf("umount: %w", uerr)
	}
	return h.Sum(nil), err
}

type server struct {
	dev  int
	img  *os.File
	size int64
	fsid string
	buf  []byte
	fds  map[uint32]int // object_id -> anonymous fd
	msg  [maxMsgSize]byte

	opens, reads, closes int
	written              int64
}

// command writes one command to /dev/cachefiles.
func (s *server) command(cmd string) error {
	if _, err := unix.Write(s.dev, []byte(cmd)); err != nil {
		return fmt.Errorf("cachefiles %q: %w", cmd, err)
	}
	return nil
}

// serve waits up to timeout for requests and handles all pending ones.
// read() returns one message per call and 0 when none is left.
func (s *server) serve(timeout time.Duration) error {
	pfd := []unix.PollFd{{Fd: int32(s.dev), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, int(timeout.Milliseconds())); err != nil && err != unix.EINTR {
		return fmt.Errorf("poll: %w", err)
	}
	for {
		n, err := unix.Read(s.dev, s.msg[:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("read /dev/cachefiles: %w", err)
		case n == 0:
			return nil
		}
		if err := s.handle(s.msg[:n]); err != nil {
			return err
		}
	}
}

func (s *server) handle(msg []byte) error {
	le := binary.LittleEndian
	if len(msg) < headerSize {
		return fmt.Errorf("message of %d bytes, shorter than its header", len(msg))
	}
	id, op, size, obj := le.Uint32(msg), le.Uint32(msg[4:]), le.Uint32(msg[8:]), le.Uint32(msg[12:])
	if int(size) != len(msg) {
		return fmt.Errorf("message %d: len field %d, read %d bytes", id, size, len(msg))
	}
	p := msg[headerSize:]
	switch op {
	case opOpen:
		return s.open(id, obj, p)
	case opRead:
		return s.read(id, obj, p)
	case opClose:
		s.closes++
		if fd, ok := s.fds[obj]; ok {
			unix.Close(fd)
			delete(s.fds, obj)
		}
		return nil
	}
	return fmt.Errorf("message %d: unknown opcode %d", id, op)
}

// open answers OPEN: the kernel has installed an anonymous fd for the
// object in this process; copen tells it the object's size.
func (s *server) open(id, obj uint32, p []byte) error {
	le := binary.LittleEndian
	if len(p) < openSize {
		return fmt.Errorf("OPEN %d: payload of %d bytes", id, len(p))
	}
	vks, cks, fd := le.Uint32(p), le.Uint32(p[4:]), int(le.Uint32(p[8:]))
	// Not inherited by children: a leaked fd would pin the object.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("OPEN %d: fd %d: %w", id, fd, err)
	}
	keys := p[openSize:]
	if uint64(vks)+uint64(cks) != uint64(len(keys)) || vks == 0 {
		unix.Close(fd)
		return fmt.Errorf("OPEN %d: key sizes %d+%d for %d bytes", id, vks, cks, len(keys))
	}
	volume := string(bytes.TrimSuffix(keys[:vks], []byte{0}))
	cookie := string(keys[vks:])
	s.opens++
	if volume != "erofs,"+s.fsid || cookie != s.fsid {
		// Refuse before closing the fd: a closed fd fails the OPEN with EBADFD.
		err := s.command(fmt.Sprintf("copen %d,%d", id, -int(unix.ENOENT)))
		unix.Close(fd)
		return errors.Join(fmt.Errorf("OPEN %d: unexpected volume %q cookie %q", id, volume, cookie), err)
	}
	s.fds[obj] = fd
	return s.command(fmt.Sprintf("copen %d,%d", id, s.size))
}

// read answers READ: it writes the requested range, widened to whole
// blocks and zero-padded past the end of the image, into the cache file
// through the object's fd, then completes the request. A request completed
// without its data fails the reader with EIO, so completion is
// unconditional.
func (s *server) read(id, obj uint32, p []byte) error {
	if len(p) != readSize {
		return fmt.Errorf("READ %d: payload of %d bytes", id, len(p))
	}
	off, n := binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
	fd, ok := s.fds[obj]
	if !ok {
		return fmt.Errorf("READ %d: unknown object %d", id, obj)
	}
	s.reads++
	err := s.fill(fd, off, n)
	if cerr := unix.IoctlSetInt(fd, readDoneReq, int(id)); cerr != nil {
		err = errors.Join(err, fmt.Errorf("READ %d: complete: %w", id, cerr))
	}
	return err
}

func (s *server) fill(fd int, off, n uint64) error {
	end := (uint64(s.size) + block - 1) &^ (block - 1)
	if off < end && n < end-off {
		end = (off + n + block - 1) &^ (block - 1)
	}
	for pos := off &^ (block - 1); pos < end; {
		chunk := s.buf[:min(uint64(len(s.buf)), end-pos)]
		k, err := s.img.ReadAt(chunk, int64(pos))
		if err != nil && err != io.EOF {
			return fmt.Errorf("read image at %d: %w", pos, err)
		}
		clear(chunk[k:])
		w, err := unix.Pwrite(fd, chunk, int64(pos))
		if err != nil {
			return fmt.Errorf("pwrite %d bytes at %d: %w", len(chunk), pos, err)
		}
		if w != len(chunk) {
			return fmt.Errorf("pwrite at %d: wrote %d of %d bytes", pos, w, len(chunk))
		}
		s.written += int64(w)
		pos += uint64(w)
	}
	return nil
}
