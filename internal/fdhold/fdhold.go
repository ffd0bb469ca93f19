// Package fdhold keeps erofsd's kernel fds alive across a daemon crash
// or upgrade. A supervisor process (erofsd supervise) holds a dup of each
// fd the daemon hands it, plus a journal of kernel requests the daemon was
// answering; a restarted daemon gets them back and carries on, so readers
// of its mounts wait instead of failing (cachefiles) or reading zeros
// (fanotify).
//
// A Mirror (SystemdStore: systemd's fd store) keeps a second copy of
// the held fds, so that they outlive the supervisor too; a supervisor
// started again adopts them (FromSystemd, Adopt). The journal is not
// mirrored.
//
// The two ends talk over a SOCK_SEQPACKET socketpair: one message per
// line of text, fds passed with SCM_RIGHTS.
//
//	daemon -> supervisor: HOLD <name>      (+1 fd)   keep this fd under name (replacing an older one)
//	                      DROP <name>                forget and close it
//	                      BEGIN <key> <text>         a request in progress (journal)
//	                      END <key>                  ... answered
//	                      GET                        send back what is held
//	                      SERVING                    the daemon serves the kernel now
//	                      DROPALL                    stopping for good: close every fd held
//	supervisor -> daemon: FD <name>        (+1 fd)
//	                      JOURNAL <key> <text>
//	                      DONE
package fdhold

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// EnvFD names the environment variable through which a supervised daemon
// learns the fd number of its end of the socketpair.
const EnvFD = "EROFSD_SUPERVISOR_FD"

const maxMsg = 4096

// Pair returns a connected socketpair: the supervisor's end and the
// daemon's end (to be passed to the child).
func Pair() (supervisor, daemon *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "fdhold-supervisor"), os.NewFile(uintptr(fds[1]), "fdhold-daemon"), nil
}

func send(fd int, msg string, file int) error {
	var oob []byte
	if file >= 0 {
		oob = unix.UnixRights(file)
	}
	return unix.Sendmsg(fd, []byte(msg), oob, nil, 0)
}

// recv returns one message and the fd it carried (-1 if none). io.EOF
// means the peer closed its end.
func recv(fd int) (string, int, error) {
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", -1, err
		}
		if n == 0 && oobn == 0 {
			return "", -1, errEOF
		}
		file := -1
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return "", -1, err
			}
			for _, m := range msgs {
				fds, err := unix.ParseUnixRights(&m)
				if err != nil {
					continue
				}
				for i, f := range fds {
					if file < 0 && i == 0 {
						file = f
					} else {
						unix.Close(f) // more fds than the protocol allows
					}
				}
			}
		}
		return string(buf[:n]), file, nil
	}
}

var errEOF = errors.New("fdhold: peer closed")

// Holder is the supervisor's side: it keeps what a daemon hands over.
type Holder struct {
	mu      sync.Mutex
	fds     map[string]int
	journal map[string]string
	mirror  Mirror
	onErr   func(error)
	served  atomic.Bool
}

// Mirror keeps a second copy of the held fds outside the supervisor
// (systemd's fd store), so that they outlive the supervisor too.
type Mirror interface {
	Store(name string, fd int) error
	Remove(name string) error
}

// SetMirror hands every fd held from now on to m as well, and passes
// drops on; m's errors go to onErr (if not nil). Fds adopted before are
// taken to be in m already.
func (h *Holder) SetMirror(m Mirror, onErr func(error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mirror, h.onErr = m, onErr
}

func (h *Holder) mirrorErr(err error) {
	if err != nil && h.onErr != nil {
		h.onErr(err)
	}
}

// Adopt holds fds kept elsewhere across the supervisor's own restart
// (systemd's fd store), by name, for the next daemon. A name held
// already keeps its fd; the adopted duplicate is closed.
func (h *Holder) Adopt(fds map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, fd := range fds {
		if _, ok := h.fds[n]; ok {
			unix.Close(fd)
			continue
		}
		h.fds[n] = fd
	}
}

// Note adds a journal entry for the next daemon, as if a daemon had
// begun it.
func (h *Holder) Note(key, text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.journal[key] = text
}

// Unmirror removes every held fd from the mirror (on a final stop, so
// that nothing keeps the kernel waiting for a daemon that will not come).
func (h *Holder) Unmirror() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mirror == nil {
		return
	}
	for n := range h.fds {
		h.mirrorErr(h.mirror.Remove(n))
	}
}

// NewHolder returns an empty holder.
func NewHolder() *Holder { return &Holder{fds: map[string]int{}, journal: map[string]string{}} }

// Serve answers one daemon on conn until it closes its end (it died or
// exited). What is held stays for the next daemon.
func (h *Holder) Serve(conn *os.File) error {
	fd := int(conn.Fd())
	h.served.Store(false)
	for {
		msg, file, err := recv(fd)
		if errors.Is(err, errEOF) {
			return nil
		}
		if err != nil {
			return err
		}
		verb, rest, _ := strings.Cut(msg, " ")
		switch verb {
		case "HOLD":
			if file < 0 || rest == "" {
				continue
			}
			h.mu.Lock()
			if old, ok := h.fds[rest]; ok {
				unix.Close(old)
				if h.mirror != nil {
					h.mirrorErr(h.mirror.Remove(rest))
				}
			}
			h.fds[rest] = file
			if h.mirror != nil {
				h.mirrorErr(h.mirror.Store(rest, file))
			}
			h.mu.Unlock()
		case "DROP":
			h.mu.Lock()
			if old, ok := h.fds[rest]; ok {
				unix.Close(old)
				delete(h.fds, rest)
				if h.mirror != nil {
					h.mirrorErr(h.mirror.Remove(rest))
				}
			}
			h.mu.Unlock()
		case "BEGIN":
			key, text, _ := strings.Cut(rest, " ")
			h.mu.Lock()
			h.journal[key] = text
			h.mu.Unlock()
		case "END":
			h.mu.Lock()
			delete(h.journal, rest)
			h.mu.Unlock()
		case "GET":
			if err := h.sendAll(fd); err != nil {
				return err
			}
		case "SERVING":
			h.served.Store(true)
		case "DROPALL":
			h.mu.Lock()
			for name, fd := range h.fds {
				unix.Close(fd)
				delete(h.fds, name)
				if h.mirror != nil {
					h.mirrorErr(h.mirror.Remove(name))
				}
			}
			clear(h.journal)
			h.mu.Unlock()
		}
		if file >= 0 && verb != "HOLD" {
			unix.Close(file)
		}
	}
}

func (h *Holder) sendAll(fd int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.fds))
	for n := range h.fds {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := send(fd, "FD "+n, h.fds[n]); err != nil {
			return err
		}
	}
	for k, v := range h.journal {
		if err := send(fd, "JOURNAL "+k+" "+v, -1); err != nil {
			return err
		}
	}
	return send(fd, "DONE", -1)
}

// Served reports whether the daemon of the last Serve said it served the
// kernel: one that did is restarted at once when it dies, since readers
// may be waiting for it; one that did not is failing to start.
func (h *Holder) Served() bool { return h.served.Load() }

// Held reports the names of the fds held.
func (h *Holder) Held() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for n := range h.fds {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Close closes every held fd.
func (h *Holder) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, fd := range h.fds {
		unix.Close(fd)
		delete(h.fds, n)
	}
}

// Client is the daemon's side.
type Client struct {
	mu sync.Mutex
	fd int
	f  *os.File // keeps a NewClient's file (and so its fd) open
}

// NewClient returns the daemon's side of a socketpair made by Pair.
func NewClient(f *os.File) *Client { return &Client{fd: int(f.Fd()), f: f} }

// FromEnv returns the client for a daemon started by a supervisor, or nil
// when EnvFD is not set.
func FromEnv() (*Client, error) {
	v := os.Getenv(EnvFD)
	if v == "" {
		return nil, nil
	}
	var fd int
	if _, err := fmt.Sscanf(v, "%d", &fd); err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not an fd", EnvFD, v)
	}
	unix.CloseOnExec(fd)
	os.Unsetenv(EnvFD)
	return &Client{fd: fd}, nil
}

// State is what a supervisor held for a restarted daemon.
type State struct {
	FDs     map[string]int    // fds received (now owned by the daemon)
	Journal map[string]string // requests the previous daemon had not answered
}

// Get fetches what the supervisor holds. Call it once, at start.
func (c *Client) Get() (*State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := send(c.fd, "GET", -1); err != nil {
		return nil, err
	}
	st := &State{FDs: map[string]int{}, Journal: map[string]string{}}
	for {
		msg, file, err := recv(c.fd)
		if err != nil {
			return nil, err
		}
		verb, rest, _ := strings.Cut(msg, " ")
		switch verb {
		case "FD":
			if file >= 0 {
				st.FDs[rest] = file
			}
		case "JOURNAL":
			k, v, _ := strings.Cut(rest, " ")
			st.Journal[k] = v
		case "DONE":
			return st, nil
		}
	}
}

// Hold hands a dup of fd to the supervisor under name.
func (c *Client) Hold(name string, fd int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return send(c.fd, "HOLD "+name, fd)
}

// Serving tells the supervisor that the daemon serves the kernel now.
func (c *Client) Serving() error { return c.msg("SERVING") }

// DropAll asks the supervisor to close every fd it holds and forget the
// journal: the daemon stops for good, nobody is to wait for it.
func (c *Client) DropAll() error { return c.msg("DROPALL") }

// Drop asks the supervisor to close the fd held under name.
func (c *Client) Drop(name string) error { return c.msg("DROP " + name) }

// Begin journals a request in progress under key.
func (c *Client) Begin(key, text string) error { return c.msg("BEGIN " + key + " " + text) }

// End removes a journaled request.
func (c *Client) End(key string) error { return c.msg("END " + key) }

func (c *Client) msg(m string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return send(c.fd, m, -1)
}
