// Package sdnotify speaks systemd's service notification protocol: state
// lines (READY=1, STATUS=..., STOPPING=1, WATCHDOG=1) sent as datagrams to
// the unix socket named by $NOTIFY_SOCKET (a path, or "@name" for the
// abstract namespace). Without $NOTIFY_SOCKET every call is a no-op.
package sdnotify

import (
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state (one or more "KEY=value" lines) to systemd. It
// returns nil when not running under a notifying service manager.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
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
