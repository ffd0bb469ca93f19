// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): state lines (READY=1, STATUS=..., STOPPING=1,
// WATCHDOG=1) sent as datagrams to the unix socket named by
// $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace), and
// the file descriptor store: FDSTORE=1 with FDNAME= and the fds attached
// as SCM_RIGHTS keeps them in the service manager across a restart of
// the service, FDSTOREREMOVE=1 drops them, and a started service gets
// them back through $LISTEN_FDS, $LISTEN_FDNAMES and $LISTEN_PID
// (sd_listen_fds(3)), from fd 3 on. Without $NOTIFY_SOCKET the
// notification calls are no-ops.
package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ListenFDsStart is the first fd a service manager passes (SD_LISTEN_FDS_START).
const ListenFDsStart = 3

// MaxFDName is the longest name systemd accepts for a stored fd.
const MaxFDName = 255

// ErrNoManager is returned by StoreFDs and RemoveFDs when $NOTIFY_SOCKET
// is not set: there is no fd store to put fds in.
var ErrNoManager = errors.New("sdnotify: no service manager ($NOTIFY_SOCKET unset)")

// Notify sends state (one or more "KEY=value" lines) to systemd. It
// returns nil when not running under a notifying service manager.
func Notify(state string) error {
	err := send(state, nil)
	if errors.Is(err, ErrNoManager) {
		return nil
	}
	return err
}

// Available reports whether $NOTIFY_SOCKET names a service manager.
func Available() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// send writes one datagram with fds attached (SCM_RIGHTS).
func send(state string, fds []int) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return ErrNoManager
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	} else if addr[0] != '/' {
		return fmt.Errorf("sdnotify: NOTIFY_SOCKET=%q: want an absolute path or @abstract name", addr)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sdnotify: socket: %w", err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		return fmt.Errorf("sdnotify: sending to %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

// ValidFDName reports whether name can name stored fds: at most 255
// printable ASCII characters without ':' (the $LISTEN_FDNAMES separator).
func ValidFDName(name string) error {
	if len(name) > MaxFDName {
		return fmt.Errorf("sdnotify: fd name of %d bytes, at most %d allowed", len(name), MaxFDName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("sdnotify: fd name %q: byte %#x at %d is not allowed (printable ASCII without ':')", name, c, i)
		}
	}
	return nil
}

// StoreFDs puts fds in the service manager's fd store under name
// (FDSTORE=1, FDNAME=name): the manager keeps its own copies, which a
// restarted service gets back through $LISTEN_FDS. Several fds may share
// a name. The manager accepts them only when the service's
// FileDescriptorStoreMax= is above zero, drops them beyond that limit
// (it logs why; the sender is not told), and drops a stored fd once it
// polls POLLHUP or POLLERR. Without $NOTIFY_SOCKET it returns
// ErrNoManager.
func StoreFDs(name string, fds ...int) error {
	if len(fds) == 0 {
		return errors.New("sdnotify: FDSTORE without fds")
	}
	if err := ValidFDName(name); err != nil {
		return err
	}
	return send("FDSTORE=1\nFDNAME="+name, fds)
}

// RemoveFDs drops every fd stored under name (FDSTOREREMOVE=1).
func RemoveFDs(name string) error {
	if err := ValidFDName(name); err != nil {
		return err
	}
	return send("FDSTOREREMOVE=1\nFDNAME="+name, nil)
}

// ListenFD is one fd passed by the service manager.
type ListenFD struct {
	FD   int
	Name string // from $LISTEN_FDNAMES; "unknown" when the manager gave none
}

// ListenFDs returns the fds the service manager passed to this process:
// $LISTEN_FDS of them from fd 3 on, named by $LISTEN_FDNAMES, if
// $LISTEN_PID is this process. It marks them close-on-exec and, with
// unset, removes the three variables so that children do not take the
// fds for theirs. It returns nil when no fds were passed.
func ListenFDs(unset bool) ([]ListenFD, error) {
	pidStr, nStr, namesStr := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	if unset {
		defer func() {
			os.Unsetenv("LISTEN_PID")
			os.Unsetenv("LISTEN_FDS")
			os.Unsetenv("LISTEN_FDNAMES")
		}()
	}
	if nStr == "" {
		return nil, nil
	}
	if pidStr == "" {
		return nil, errors.New("sdnotify: LISTEN_FDS without LISTEN_PID")
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("sdnotify: LISTEN_PID=%q: not a pid", pidStr)
	}
	if pid != os.Getpid() {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 || n > 1<<20 {
		return nil, fmt.Errorf("sdnotify: LISTEN_FDS=%q: not a count of fds", nStr)
	}
	var names []string
	if namesStr != "" {
		names = strings.Split(namesStr, ":")
		if len(names) != n {
			return nil, fmt.Errorf("sdnotify: LISTEN_FDNAMES has %d names for %d fds", len(names), n)
		}
	}
	out := make([]ListenFD, 0, n)
	for i := 0; i < n; i++ {
		fd := ListenFDsStart + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("sdnotify: LISTEN_FDS=%d but fd %d is not open: %w", n, fd, err)
		}
		unix.CloseOnExec(fd)
		name := "unknown"
		if names != nil {
			name = names[i]
		}
		out = append(out, ListenFD{FD: fd, Name: name})
	}
	return out, nil
}

// WatchdogInterval returns how often systemd expects WATCHDOG=1 (the
// configured WatchdogSec), or 0 when the watchdog is off or meant for
// another process.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}
