package fdhold

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHoldAcrossDaemons plays two daemon lifetimes against one holder:
// the fds and journal entries the first hands over reach the second, and
// they refer to the same open files.
func TestHoldAcrossDaemons(t *testing.T) {
	h := NewHolder()
	defer h.Close()
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("held"), 0o644)

	// First daemon.
	sup, dmn, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Serve(sup) }()
	t.Setenv(EnvFD, strconv.Itoa(int(dmn.Fd())))
	c, err := FromEnv()
	if err != nil || c == nil {
		t.Fatalf("FromEnv: %v", err)
	}
	st, err := c.Get()
	if err != nil || len(st.FDs) != 0 || len(st.Journal) != 0 {
		t.Fatalf("first daemon got %+v, %v", st, err)
	}
	f, _ := os.Open(path)
	c.Hold("file", int(f.Fd()))
	c.Hold("gone", int(f.Fd()))
	c.Drop("gone")
	c.Begin("7", "ev 1 2 4096 8192")
	c.Begin("8", "ev 1 2 0 4096")
	c.End("8")
	f.Close()
	dmn.Close() // the daemon dies
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sup.Close()

	// Second daemon.
	sup, dmn, _ = Pair()
	go func() { done <- h.Serve(sup) }()
	c = &Client{fd: int(dmn.Fd())}
	st, err = c.Get()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.FDs) != 1 || st.Journal["7"] != "ev 1 2 4096 8192" || len(st.Journal) != 1 {
		t.Fatalf("second daemon got %+v", st)
	}
	buf := make([]byte, 4)
	if n, err := unix.Pread(st.FDs["file"], buf, 0); err != nil || string(buf[:n]) != "held" {
		t.Fatalf("held fd reads %q, %v", buf[:n], err)
	}
	dmn.Close()
	<-done
}
