package cachefiles

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/erofsd/erofsd/internal/hostcap"
	abi "github.com/erofsd/erofsd/ondemand/internal/cachefiles"
	"golang.org/x/sys/unix"
)

// DevicePath is the cachefiles control device.
const DevicePath = "/dev/cachefiles"

// Errors that explain why the kernel cannot be served.
var (
	ErrNoDevice    = errors.New("no /dev/cachefiles: load the cachefiles module (modprobe cachefiles) or use a kernel with CONFIG_CACHEFILES")
	ErrNoOnDemand  = errors.New("the kernel's cachefiles lacks on-demand mode: it needs CONFIG_CACHEFILES_ONDEMAND=y (and CONFIG_EROFS_FS_ONDEMAND=y)")
	ErrCacheBusy   = errors.New("/dev/cachefiles is already open: another daemon (cachefilesd, erofsd, nydusd) owns the cache")
	ErrNotPermited = errors.New("opening /dev/cachefiles needs CAP_SYS_ADMIN (run as root)")
)

// Open opens /dev/cachefiles, binds an on-demand cache in dir (created if
// missing; it must be on a filesystem with user xattrs, such as ext4 or
// xfs) and returns a Server for it. tag names the cache (default
// "erofsd").
func Open(dir, tag string, res Resolver, cfg Config) (*Server, error) {
	if tag == "" {
		tag = "erofsd"
	}
	if strings.ContainsAny(dir, "\n\x00") || strings.ContainsAny(tag, " \n\x00") {
		return nil, fmt.Errorf("bad cache dir %q or tag %q", dir, tag)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	fd, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO):
		return nil, &hostcap.Missing{What: "cachefiles on-demand mode", Why: ErrNoDevice.Error(), Err: ErrNoDevice}
	case errors.Is(err, unix.EBUSY):
		return nil, ErrCacheBusy
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return nil, &hostcap.Missing{What: "cachefiles on-demand mode", Why: ErrNotPermited.Error(), Err: ErrNotPermited}
	case err != nil:
		return nil, fmt.Errorf("opening %s: %w", DevicePath, err)
	}
	d, err := newDevice(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := cfg.Limits.Validate(); err != nil {
		d.closeFDs()
		return nil, err
	}
	for _, cmd := range append([]string{"dir " + dir, "tag " + tag}, cfg.Limits.commands()...) {
		if err := d.command(cmd); err != nil {
			d.closeFDs()
			return nil, fmt.Errorf("cachefiles %q: %w", cmd, err)
		}
	}
	if err := d.command("bind ondemand"); err != nil {
		d.closeFDs()
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("%w (bind ondemand: %v)", ErrNoOnDemand, err)
		}
		return nil, fmt.Errorf("cachefiles bind ondemand in %s: %w", dir, err)
	}
	cfg.CacheDir = dir
	return serveDevice(d, res, cfg)
}

// serveDevice makes the server of a bound device, with its culler when
// the cache directory is known.
func serveDevice(d *device, res Resolver, cfg Config) (*Server, error) {
	s := newServer(d, res, cfg)
	s.dev = d
	if cfg.CacheDir != "" {
		t, err := newCwdThread(d.command)
		if err != nil {
			d.closeFDs()
			return nil, fmt.Errorf("cachefiles culling: %w", err)
		}
		s.cwd = t
		s.cull = newCuller(cfg.CacheDir, cfg, t, &s.Stats)
	}
	return s, nil
}

// Resume serves a cache bound by an earlier daemon, through its
// /dev/cachefiles fd kept by a supervisor: it writes "restore", which
// re-delivers the requests the old daemon had not answered and reopens
// the objects it had open (Linux 6.8, 6.1.95+).
func Resume(fd int, res Resolver, cfg Config) (*Server, error) {
	d, err := newDevice(fd)
	if err != nil {
		return nil, err
	}
	if err := d.command("restore"); err != nil {
		d.closeFDs()
		return nil, fmt.Errorf("cachefiles restore: %w (the kernel needs the on-demand failover of Linux 6.8 / 6.1.95)", err)
	}
	return serveDevice(d, res, cfg)
}

// FD returns the /dev/cachefiles fd, for handing to a supervisor.
func (s *Server) FD() int {
	if s.dev == nil {
		return -1
	}
	return s.dev.fd
}

// device is /dev/cachefiles plus an eventfd that wakes the poll loop.
type device struct {
	fd     int
	wakeFD int
}

func newDevice(fd int) (*device, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &device{fd: fd, wakeFD: efd}, nil
}

func (d *device) closeFDs() {
	unix.Close(d.fd)
	unix.Close(d.wakeFD)
}

func (d *device) wait() error {
	fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}, {Fd: int32(d.wakeFD), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if fds[1].Revents != 0 {
			var b [8]byte
			unix.Read(d.wakeFD, b[:])
		}
		return err
	}
}

func (d *device) wake() {
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	unix.Write(d.wakeFD, one)
}

func (d *device) read(buf []byte) (int, error) {
	// read(2) on the device returns exactly one message, or 0 when none
	// is pending; it never blocks.
	n, err := unix.Read(d.fd, buf)
	if n < 0 {
		n = 0
	}
	return n, err
}

func (d *device) command(cmd string) error {
	_, err := unix.Write(d.fd, []byte(cmd))
	return err
}

func (d *device) object(fd int32) (objectIO, error) {
	if fd < 0 {
		return nil, fmt.Errorf("OPEN carries no fd (%d)", fd)
	}
	// The kernel installs the anonymous fd without O_CLOEXEC; children
	// would otherwise inherit it and pin the object.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("anonymous fd %d: %w", fd, err)
	}
	return anonFD(fd), nil
}

// anonFD is the write-only anonymous fd of one cache object.
type anonFD int

func (a anonFD) pwrite(p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pwrite(int(a), p, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing %d bytes at %d into the cache: %w", len(p), off, err)
		}
		if n <= 0 {
			return fmt.Errorf("writing %d bytes at %d into the cache: short write", len(p), off)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (a anonFD) complete(msgID uint32) error {
	return unix.IoctlSetInt(int(a), abi.IocReadComplete, int(msgID))
}

func (a anonFD) close() error { return unix.Close(int(a)) }

// Release closes the device, which unbinds the cache. Call after Serve
// returned.
func (s *Server) Release() error {
	if s.dev == nil {
		return nil
	}
	if s.cwd != nil {
		s.cwd.stop()
	}
	s.dev.closeFDs()
	s.dev = nil
	return nil
}
