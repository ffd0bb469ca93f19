package sdnotify

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// manager plays systemd's side of the notify socket: a real unixgram
// socket that receives datagrams with their SCM_RIGHTS fds.
type manager struct {
	t    *testing.T
	conn *net.UnixConn
}

func newManager(t *testing.T) *manager {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &manager{t: t, conn: conn}
}

// recv returns the next datagram and the fds it carried (owned by the caller).
func (m *manager) recv() (string, []int) {
	m.t.Helper()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(16*4))
	m.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, flags, _, err := m.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		m.t.Fatalf("manager: %v", err)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		m.t.Fatal("manager: control data truncated")
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		m.t.Fatal(err)
	}
	for _, cm := range msgs {
		got, err := unix.ParseUnixRights(&cm)
		if err != nil {
			m.t.Fatal(err)
		}
		fds = append(fds, got...)
	}
	for _, fd := range fds {
		m.t.Cleanup(func() { unix.Close(fd) })
	}
	return string(buf[:n]), fds
}

func devIno(t *testing.T, fd int) [2]uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return [2]uint64{st.Dev, st.Ino}
}

// TestStoreFDs sends FDSTORE with two fds and FDSTOREREMOVE to a socket
// playing systemd: the datagrams are the documented ones and the fds the
// manager receives are the same open files (same dev/ino, and a write
// through a received fd shows up in the file).
func TestStoreFDs(t *testing.T) {
	m := newManager(t)
	dir := t.TempDir()
	a, err := os.Create(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	if err := StoreFDs("kernel-fds", int(a.Fd()), int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	msg, fds := m.recv()
	if msg != "FDSTORE=1\nFDNAME=kernel-fds" || len(fds) != 2 {
		t.Fatalf("manager got %q with %d fds", msg, len(fds))
	}
	if devIno(t, fds[0]) != devIno(t, int(a.Fd())) || devIno(t, fds[1]) != devIno(t, int(w.Fd())) {
		t.Fatal("received fds are other files than the ones sent")
	}
	// The manager's copy is the same open file description: a write
	// through it moves the sender's offset too.
	if _, err := unix.Write(fds[0], []byte("via store")); err != nil {
		t.Fatal(err)
	}
	if off, _ := a.Seek(0, 1); off != int64(len("via store")) {
		t.Fatalf("sender's offset %d after a write through the stored fd", off)
	}
	if b, _ := os.ReadFile(a.Name()); string(b) != "via store" {
		t.Fatalf("file holds %q", b)
	}
	unix.Write(fds[1], []byte("x"))
	buf := make([]byte, 1)
	if n, err := r.Read(buf); n != 1 || err != nil || buf[0] != 'x' {
		t.Fatalf("pipe read %q, %v", buf[:n], err)
	}

	if err := RemoveFDs("kernel-fds"); err != nil {
		t.Fatal(err)
	}
	if msg, fds := m.recv(); msg != "FDSTOREREMOVE=1\nFDNAME=kernel-fds" || len(fds) != 0 {
		t.Fatalf("manager got %q with %d fds", msg, len(fds))
	}
}

func TestStoreFDsRefusals(t *testing.T) {
	newManager(t)
	for _, name := range []string{"a:b", "tab\there", "é", strings.Repeat("x", 256)} {
		if err := StoreFDs(name, 0); err == nil {
			t.Errorf("name %q accepted", name)
		}
		if err := RemoveFDs(name); err == nil {
			t.Errorf("remove of name %q accepted", name)
		}
	}
	if err := ValidFDName(strings.Repeat("x", 255)); err != nil {
		t.Errorf("255-byte name: %v", err)
	}
	if err := StoreFDs("none"); err == nil {
		t.Error("FDSTORE without fds accepted")
	}
	if err := StoreFDs("bad-fd", 1<<20); err == nil {
		t.Error("a closed fd was sent")
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if err := StoreFDs("x", 0); err == nil {
		t.Error("relative NOTIFY_SOCKET accepted")
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := StoreFDs("x", 0); err != ErrNoManager {
		t.Errorf("without a manager: %v", err)
	}
}

// TestListenFDs starts a child the way systemd does: fds from 3 on,
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set to the child's own pid
// (a shell that execs the test binary keeps its pid). The child reports
// the dev/ino of what it adopted.
func TestListenFDs(t *testing.T) {
	if os.Getenv("SDNOTIFY_TEST_CHILD") == "1" {
		fds, err := ListenFDs(true)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(0)
		}
		for _, f := range fds {
			var st unix.Stat_t
			unix.Fstat(f.FD, &st)
			cloexec, _ := unix.FcntlInt(uintptr(f.FD), unix.F_GETFD, 0)
			fmt.Printf("FD %d %s %d %d %v\n", f.FD, f.Name, st.Dev, st.Ino, cloexec&unix.FD_CLOEXEC != 0)
		}
		fmt.Println("ENV", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDNAMES"))
		os.Exit(0)
	}
	dir := t.TempDir()
	a, _ := os.Create(filepath.Join(dir, "a"))
	b, _ := os.Create(filepath.Join(dir, "b"))
	defer a.Close()
	defer b.Close()
	run := func(pid, n, names string) string {
		t.Helper()
		script := `LISTEN_PID=` + pid + ` exec "$0" -test.run '^TestListenFDs$'`
		cmd := exec.Command("/bin/sh", "-c", script, os.Args[0])
		cmd.ExtraFiles = []*os.File{a, b}
		cmd.Env = append(os.Environ(), "SDNOTIFY_TEST_CHILD=1", "LISTEN_FDS="+n, "LISTEN_FDNAMES="+names)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return string(out)
	}
	sa, sb := devIno(t, int(a.Fd())), devIno(t, int(b.Fd()))
	want := fmt.Sprintf("FD 3 cachefiles %d %d true\nFD 4 fanotify %d %d true\nENV   \n", sa[0], sa[1], sb[0], sb[1])
	if out := run("$$", "2", "cachefiles:fanotify"); !strings.HasPrefix(out, want) {
		t.Errorf("child adopted:\n%s\nwant:\n%s", out, want)
	}
	// Without names, fds are "unknown"; LISTEN_PID of another process
	// means the fds are not ours.
	if out := run("$$", "1", ""); !strings.HasPrefix(out, fmt.Sprintf("FD 3 unknown %d %d true\nENV", sa[0], sa[1])) {
		t.Errorf("without names:\n%s", out)
	}
	if out := run("1", "2", "a:b"); !strings.HasPrefix(out, "ENV") {
		t.Errorf("for another pid:\n%s", out)
	}
	for _, bad := range [][2]string{{"2", "one"}, {"x", ""}, {"64", ""}} {
		if out := run("$$", bad[0], bad[1]); !strings.HasPrefix(out, "ERR") {
			t.Errorf("LISTEN_FDS=%s LISTEN_FDNAMES=%s accepted:\n%s", bad[0], bad[1], out)
		}
	}
	t.Setenv("LISTEN_FDS", "")
	if fds, err := ListenFDs(false); fds != nil || err != nil {
		t.Errorf("without LISTEN_FDS: %v, %v", fds, err)
	}
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", "")
	if _, err := ListenFDs(false); err == nil {
		t.Error("LISTEN_FDS without LISTEN_PID accepted")
	}
}
