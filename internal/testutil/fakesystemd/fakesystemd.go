// Package fakesystemd plays the part of systemd that erofsd talks to, for
// tests and benchmarks on machines without systemd as PID 1: a notify
// socket that records state lines and keeps an fd store (FDSTORE=1,
// FDSTOREREMOVE=1 with FDNAME=, fds as SCM_RIGHTS), and starting a
// service with the stored fds passed the way systemd passes them
// ($LISTEN_FDS from fd 3, $LISTEN_FDNAMES, $LISTEN_PID).
package fakesystemd

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// StoredFD is one entry of the fd store.
type StoredFD struct {
	Name string
	FD   int
}

// Manager is the fake service manager.
type Manager struct {
	Path string // the socket, for $NOTIFY_SOCKET

	conn *net.UnixConn
	mu   sync.Mutex
	fds  []StoredFD
	done chan struct{}
}

// Listen creates the notify socket in dir.
func Listen(dir string) (*Manager, error) {
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	m := &Manager{Path: path, conn: conn, done: make(chan struct{})}
	go m.loop()
	return m, nil
}

func (m *Manager) loop() {
	defer close(m.done)
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(253*4))
	for {
		n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var fds []int
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range msgs {
				if got, err := unix.ParseUnixRights(&cm); err == nil {
					fds = append(fds, got...)
				}
			}
		}
		m.handle(string(buf[:n]), fds)
	}
}

func (m *Manager) handle(msg string, fds []int) {
	fields := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		k, v, _ := strings.Cut(line, "=")
		fields[k] = v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case fields["FDSTORE"] == "1":
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			m.fds = append(m.fds, StoredFD{Name: fields["FDNAME"], FD: fd})
		}
		fds = nil
	case fields["FDSTOREREMOVE"] == "1":
		m.fds = slices.DeleteFunc(m.fds, func(s StoredFD) bool {
			if s.Name == fields["FDNAME"] {
				unix.Close(s.FD)
				return true
			}
			return false
		})
	}
	for _, fd := range fds {
		unix.Close(fd) // fds with a message that takes none
	}
}

// Store returns the fd store's entries in the order they were stored.
func (m *Manager) Store() []StoredFD {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.fds)
}

// Command returns a command that starts name with args as systemd starts
// a service with a non-empty fd store: the stored fds as fds 3, 4, ...,
// $LISTEN_FDS, $LISTEN_FDNAMES, and $LISTEN_PID set to the service's own
// pid (a shell sets it and execs the service, which keeps the pid), and
// $NOTIFY_SOCKET. The caller may add to Env and set Stdout/Stderr.
func (m *Manager) Command(name string, args ...string) *exec.Cmd {
	store := m.Store()
	names := make([]string, len(store))
	files := make([]*os.File, len(store))
	for i, s := range store {
		names[i] = s.Name
		// A dup: the os.File may be closed (or collected) after the
		// start, while the store keeps its own fd.
		dup, err := unix.FcntlInt(uintptr(s.FD), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			dup = -1 // the start fails: exec cannot pass a closed fd
		}
		files[i] = os.NewFile(uintptr(dup), s.Name)
	}
	script := `exec "$0" "$@"`
	if len(store) > 0 {
		script = `LISTEN_PID=$$ exec "$0" "$@"`
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, name}, args...)...)
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+m.Path)
	if len(store) > 0 {
		cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(store)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	return cmd
}

// Close closes the socket and every stored fd.
func (m *Manager) Close() error {
	err := m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.fds {
		unix.Close(s.FD)
	}
	m.fds = nil
	return err
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
