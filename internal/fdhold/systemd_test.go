package fdhold

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStoreNames(t *testing.T) {
	for name, want := range map[string]string{
		"cachefiles": "cachefiles",
		"fanotify-writer:/var/cache/erofsd/fanotify/ab12": "fanotify-writer%3A/var/cache/erofsd/fanotify/ab12",
		"100%\n":      "100%25%0A",
		"caf\xc3\xa9": "caf%C3%A9",
	} {
		got := StoreName(name)
		if got != want {
			t.Errorf("StoreName(%q) = %q, want %q", name, got, want)
		}
		back, err := HeldName(got)
		if err != nil || back != name {
			t.Errorf("HeldName(%q) = %q, %v", got, back, err)
		}
	}
	for _, bad := range []string{"%", "%4", "%zz", "a%+1"} {
		if got, err := HeldName(bad); err == nil {
			t.Errorf("HeldName(%q) = %q, want an error", bad, got)
		}
	}
}

// TestHolderMirrorsToSystemd runs a holder with the systemd mirror
// against a unixgram socket playing systemd: HOLD stores the fd under
// its escaped name (the very same open file arrives), a replacement
// removes the old one first, DROP and Unmirror remove.
func TestHolderMirrorsToSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	recv := func() (string, int) {
		t.Helper()
		buf, oob := make([]byte, 1024), make([]byte, unix.CmsgSpace(4))
		mgr.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, oobn, _, _, err := mgr.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		fd := -1
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			fds, _ := unix.ParseUnixRights(&msgs[0])
			fd = fds[0]
			t.Cleanup(func() { unix.Close(fd) })
		}
		return string(buf[:n]), fd
	}

	h := NewHolder()
	defer h.Close()
	var mirrorErrs []error
	h.SetMirror(SystemdStore{}, func(err error) { mirrorErrs = append(mirrorErrs, err) })
	sup, dmn, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Serve(sup) }()
	c := &Client{fd: int(dmn.Fd())}
	f, err := os.Create(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)

	c.Hold("fanotify-writer:/cache/x", int(f.Fd()))
	msg, fd := recv()
	if msg != "FDSTORE=1\nFDNAME=fanotify-writer%3A/cache/x" || fd < 0 {
		t.Fatalf("systemd got %q, fd %d", msg, fd)
	}
	var got unix.Stat_t
	unix.Fstat(fd, &got)
	if got.Dev != st.Dev || got.Ino != st.Ino {
		t.Fatal("the stored fd is another file")
	}
	unix.Pwrite(fd, []byte("kept"), 0)
	if b, _ := os.ReadFile(f.Name()); string(b) != "kept" {
		t.Fatalf("write through the stored fd: file holds %q", b)
	}
	c.Hold("fanotify-writer:/cache/x", int(f.Fd()))
	if msg, _ := recv(); msg != "FDSTOREREMOVE=1\nFDNAME=fanotify-writer%3A/cache/x" {
		t.Fatalf("replacement: %q", msg)
	}
	if msg, fd := recv(); msg != "FDSTORE=1\nFDNAME=fanotify-writer%3A/cache/x" || fd < 0 {
		t.Fatalf("replacement: %q", msg)
	}
	c.Drop("fanotify-writer:/cache/x")
	if msg, _ := recv(); msg != "FDSTOREREMOVE=1\nFDNAME=fanotify-writer%3A/cache/x" {
		t.Fatalf("drop: %q", msg)
	}
	c.Hold("cachefiles", int(f.Fd()))
	recv()
	dmn.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.Unmirror()
	if msg, _ := recv(); msg != "FDSTOREREMOVE=1\nFDNAME=cachefiles" {
		t.Fatalf("unmirror: %q", msg)
	}
	if len(mirrorErrs) != 0 {
		t.Fatalf("mirror errors: %v", mirrorErrs)
	}
	// A name too long for systemd is reported, not fatal.
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'x'
	}
	h.SetMirror(SystemdStore{}, func(err error) { mirrorErrs = append(mirrorErrs, err) })
	sup, dmn, _ = Pair()
	go func() { done <- h.Serve(sup) }()
	c = &Client{fd: int(dmn.Fd())}
	c.Hold(string(long), int(f.Fd()))
	dmn.Close()
	<-done
	if len(mirrorErrs) != 1 {
		t.Fatalf("errors for an unstorable name: %v", mirrorErrs)
	}
}
