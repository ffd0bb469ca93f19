// Command guesttool runs inside the test VM and checks what the kernel
// serves from erofsd mounts:
//
//	guesttool cmp WANT GOT            compare two trees (internal/testutil/treecmp); exit 1 on any difference
//	guesttool stress FILE REF N       N readers read FILE sequentially and at random offsets, comparing with REF
//	guesttool read FILE               read FILE to the end; print "read ok BYTES" or "read error ERRNO-TEXT"
//	guesttool readtime FILE           read FILE sequentially in 1 MiB reads; print "readtime BYTES NANOSECONDS"
//	guesttool readcheck FILE REF      read FILE in 256 KiB pieces, each either equal to REF's or failing with
//	                                  EIO; print "readcheck OK EIO" (pieces); exit 1 on wrong bytes or another error
//	guesttool shasum FILE BS|random   read FILE sequentially in BS-byte reads (4096, 131072, ...) or in pieces of
//	                                  random sizes at random offsets; print "shasum FILE MODE HEX" of its content
//	guesttool systemd DIR CMD ARGS... run CMD as systemd runs a notify service with an fd store
//	                                  (internal/fakesystemd): SIGHUP and SIGTERM go to CMD; SIGUSR1
//	                                  SIGKILLs CMD and everything it started, then starts CMD again
//	                                  with the stored fds ($LISTEN_FDS)
package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/fakesystemd"
	"github.com/erofsd/erofsd/internal/testutil/treecmp"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: guesttool cmp|stress|read ...")
	}
	switch os.Args[1] {
	case "cmp":
		cmp(os.Args[2], os.Args[3])
	case "stress":
		n, _ := strconv.Atoi(os.Args[4])
		stress(os.Args[2], os.Args[3], n)
	case "read":
		read(os.Args[2])
	case "readtime":
		readtime(os.Args[2])
	case "readcheck":
		readcheck(os.Args[2], os.Args[3])
	case "shasum":
		shasum(os.Args[2], os.Args[3])
	case "systemd":
		systemd(os.Args[2], os.Args[3], os.Args[4:])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "guesttool:", msg)
	os.Exit(2)
}

func cmp(want, got string) {
	diffs, err := treecmp.Compare(want, got, treecmp.Options{})
	if err != nil {
		fail(err.Error())
	}
	for _, d := range diffs {
		fmt.Println("diff", d)
	}
	if len(diffs) > 0 {
		os.Exit(1)
	}
	fmt.Println("cmp ok")
}

func stress(file, ref string, readers int) {
	want, err := os.ReadFile(ref)
	if err != nil {
		fail(err.Error())
	}
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- readerLoop(file, want, int64(i))
		}(i)
	}
	wg.Wait()
	close(errs)
	bad := 0
	for err := range errs {
		if err != nil {
			bad++
			fmt.Println("stress error", err)
		}
	}
	if bad > 0 {
		os.Exit(1)
	}
	fmt.Printf("stress ok %d readers %d bytes\n", readers, len(want))
}

// readerLoop reads the file once sequentially (odd readers start at the
// end and go backwards in 1 MiB steps) and then at 200 random offsets.
func readerLoop(file string, want []byte, seed int64) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	size := int64(len(want))
	steps := (size + int64(len(buf)) - 1) / int64(len(buf))
	for k := int64(0); k < steps; k++ {
		idx := k
		if seed%2 == 1 {
			idx = steps - 1 - k
		}
		off := idx * int64(len(buf))
		n, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return fmt.Errorf("reader %d at %d: %w", seed, off, err)
		}
		if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
			return fmt.Errorf("reader %d: wrong bytes at %d", seed, off)
		}
	}
	r := rand.New(rand.NewSource(seed))
	for i := 0; i < 200; i++ {
		off := r.Int63n(size)
		n := r.Intn(256<<10) + 1
		got := make([]byte, n)
		m, err := f.ReadAt(got, off)
		if err != nil && err != io.EOF {
			return fmt.Errorf("reader %d at %d: %w", seed, off, err)
		}
		if !bytes.Equal(got[:m], want[off:off+int64(m)]) {
			return fmt.Errorf("reader %d: wrong bytes at %d+%d", seed, off, m)
		}
	}
	return nil
}

func read(file string) {
	f, err := os.Open(file)
	if err != nil {
		fmt.Println("read error", err)
		return
	}
	defer f.Close()
	n, err := io.Copy(io.Discard, f)
	if err != nil {
		fmt.Println("read error", err)
		return
	}
	fmt.Println("read ok", n)
}

func readtime(file string) {
	f, err := os.Open(file)
	if err != nil {
		fail(err.Error())
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(err.Error())
		}
	}
	fmt.Printf("readtime %d %d\n", total, time.Since(start).Nanoseconds())
}

// readcheck reads a file piece by piece: a piece may fail with EIO (a
// full cache), but whatever is read must be the reference's bytes.
func readcheck(file, ref string) {
	want, err := os.ReadFile(ref)
	if err != nil {
		fail(err.Error())
	}
	f, err := os.Open(file)
	if err != nil {
		fail(err.Error())
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	ok, eio := 0, 0
	for off := int64(0); off < int64(len(want)); off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
			fmt.Printf("readcheck wrong bytes at %d\n", off)
			os.Exit(1)
		}
		switch {
		case err == nil || err == io.EOF:
			ok++
		case errors.Is(err, syscall.EIO):
			eio++
		default:
			fmt.Printf("readcheck error at %d: %v\n", off, err)
			os.Exit(1)
		}
	}
	fmt.Printf("readcheck %d %d\n", ok, eio)
}

// systemd plays the service manager for one service: its notify socket
// and fd store in dir, the service in its own process group (the unit's
// cgroup), restarted with the stored fds after SIGUSR1 kills the group.
func systemd(dir, name string, args []string) {
	mgr, err := fakesystemd.Listen(dir)
	if err != nil {
		fail(err.Error())
	}
	defer mgr.Close()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGUSR1)
	for {
		cmd := mgr.Command(name, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			fail(err.Error())
		}
		fmt.Printf("guesttool systemd: started %s pid %d with %d stored fds\n", name, cmd.Process.Pid, len(mgr.Store()))
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		restart := false
		for !restart {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGUSR1 {
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-exited
					for groupAlive(cmd.Process.Pid) {
						time.Sleep(time.Millisecond)
					}
					restart = true
					continue
				}
				cmd.Process.Signal(sig)
			case err := <-exited:
				fmt.Printf("guesttool systemd: %s ended (%v); %d fds left in the store\n", name, err, len(mgr.Store()))
				return
			}
		}
	}
}

// groupAlive reports whether a process of group pgid is still running
// (zombies waiting for their parent do not count).
func groupAlive(pgid int) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// shasum hashes a file read the way mode says: sequential reads of a
// fixed size (the size the kernel's readahead sees), or pieces of 1 byte
// to 1 MiB at random offsets until every byte was read once.
func shasum(file, mode string) {
	f, err := os.Open(file)
	if err != nil {
		fail(err.Error())
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fail(err.Error())
	}
	h := sha256.New()
	if mode == "random" {
		data := make([]byte, st.Size())
		type piece struct{ off, n int64 }
		var pieces []piece
		r := rand.New(rand.NewSource(st.Size()))
		for off := int64(0); off < st.Size(); {
			n := min(r.Int63n(1<<20)+1, st.Size()-off)
			pieces = append(pieces, piece{off, n})
			off += n
		}
		r.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
		for _, p := range pieces {
			if _, err := f.ReadAt(data[p.off:p.off+p.n], p.off); err != nil && !errors.Is(err, io.EOF) {
				fail(fmt.Sprintf("read %s at %d: %v", file, p.off, err))
			}
		}
		h.Write(data)
	} else {
		bs, err := strconv.Atoi(mode)
		if err != nil || bs <= 0 {
			fail("shasum: mode must be a read size or random")
		}
		buf := make([]byte, bs)
		for {
			n, err := f.Read(buf)
			h.Write(buf[:n])
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fail(fmt.Sprintf("read %s: %v", file, err))
			}
		}
	}
	fmt.Printf("shasum %s %s %x\n", file, mode, h.Sum(nil))
}
