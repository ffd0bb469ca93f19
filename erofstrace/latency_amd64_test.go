package erofstrace_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/erofstrace/internal/ia32"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"golang.org/x/sys/unix"
)

// ia32Lseek is lseek's number among the ia32 system calls; among the
// x86-64 ones, 19 is readv's.
const ia32Lseek = 19

// ia32Env names the file a child process of TestLatencyCompat seeks in.
const ia32Env = "EROFSTRACE_TEST_IA32_LSEEK"

// TestLatencyCompat checks that the programs tell a 32-bit task's system
// calls from 64-bit ones: a child process makes ia32 lseek calls (int
// $0x80, number 19, readv's among 64-bit calls) on a file of a
// superblock timed, the descriptor also in edi (where a 64-bit call has
// its first argument), and none counts; 64-bit reads of the file do.
func TestLatencyCompat(t *testing.T) {
	if p := os.Getenv(ia32Env); p != "" {
		os.Exit(ia32Seeks(p, 20))
	}
	require.Host(t, require.Root, require.FileBackedErofs, needLatency)
	mnt := mountImage(t)
	dev := devOf(t, mnt)
	m, err := erofstrace.OpenLatency(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.AddDev(dev); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(mnt, "a.bin")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLatencyCompat$", "-test.count=1")
	cmd.Env = append(os.Environ(), ia32Env+"="+p)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
		t.Skipf("the kernel runs no ia32 system calls (ia32_emulation=0?): the child died of %v: %s", ee, out)
	}
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	t.Logf("child: %s", out)
	if got := latencySnapshot(t, m)[dev].Read; got.Count != 0 {
		t.Errorf("%d reads counted after ia32 lseek calls only", got.Count)
	}
	calls, spent := readCalls(t, p, 4)
	checkReads(t, "64-bit reads", erofstrace.Histogram{}, latencySnapshot(t, m)[dev].Read, calls, spent)
}

// ia32Seeks makes n ia32 lseek calls on the file at p, each checked for
// its result (an ia32 lseek's: the new offset), and returns the exit
// code.
func ia32Seeks(p string, n int) int {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for i := range n {
		off := uint32(i * 4096)
		if got := ia32.Syscall5(ia32Lseek, uint32(fd), off, 0 /* SEEK_SET */, 0, uint32(fd)); got != int32(off) {
			fmt.Printf("ia32 lseek(%d, %d, SEEK_SET): %d\n", fd, off, got)
			return 1
		}
	}
	fmt.Println(strconv.Itoa(n) + " ia32 lseek calls")
	return 0
}
