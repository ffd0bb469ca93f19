package benchstat

import (
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// userHZ is the unit of /proc/stat's times: fixed at 100 by the kernel's
// ABI, whatever its internal tick.
const userHZ = 100

// MachineCPUSeconds is the CPU time every process on the machine has
// spent (user, nice, system, interrupts) since boot: what a benchmark
// costs beyond its own process, such as a registry serving it, or the
// kernel's writeback. Idle, I/O wait and time stolen by the hypervisor
// are left out.
func MachineCPUSeconds() (float64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseMachineCPU(string(data))
}

func parseMachineCPU(stat string) (float64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq ...
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q is not the cpu total", line)
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: field %d of %q: %w", i, line, err)
		}
		busy += v
	}
	return float64(busy) / userHZ, nil
}

// CoreBound is the most MiB/s this machine's CPUs can serve when serving
// costs cpuPerGiB CPU seconds per GiB in all, however well the work is
// spread over them.
func CoreBound(cpuPerGiB float64) float64 {
	return float64(runtime.NumCPU()) * 1024 / cpuPerGiB
}

// SHA256SecondsPerGiB measures the CPU seconds sha256 takes per GiB on
// this machine, over 256 MiB hashed in 1 MiB chunks as erofsd verifies
// them: the least verifying every byte adds to a reader's cost.
func SHA256SecondsPerGiB() float64 {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := CPUSeconds()
	for range 256 {
		sha256.Sum256(buf)
	}
	return (CPUSeconds() - start) * 4
}

// Bounds are the figures that show how far a verified lazy read can
// come on this machine: what it and its reference cost the whole
// machine per GiB, and the floor, the reference plus sha256 of every
// byte, which no reader that verifies what it serves can go below.
type Bounds struct {
	Ref                 string    // the reference's name ("the complete file", "curl")
	RefMiBs             float64   // its median throughput
	RefCPU              float64   // its own CPU seconds per GiB (median)
	RefMachine, Machine []float64 // machine CPU seconds per GiB of each round: the reference's, erofsd's
	SHA256              float64   // CPU seconds per GiB of sha256 here (SHA256SecondsPerGiB)
	// ReadBack is the reader's own CPU seconds per GiB of each round,
	// reading the data back through the mount from the page cache:
	// part of the floor when the reference does not read it (curl
	// writes to /dev/null); nil when it does.
	ReadBack []float64
}

// String prints the bounds in two lines, each indented by two spaces.
func (b Bounds) String() string {
	ref, lazy, sha := Median(b.RefMachine), Median(b.Machine), b.SHA256
	floor, what := ref+sha, fmt.Sprintf("%s plus sha256 of every byte (%.2f s/GiB here)", b.Ref, sha)
	var readBack float64
	if len(b.ReadBack) > 0 {
		readBack = Median(b.ReadBack)
		floor += readBack
		what += fmt.Sprintf(" plus reading it back through the mount (%.2f s/GiB %s)", readBack, Rounds(b.ReadBack, "%.2f"))
	}
	return fmt.Sprintf("  machine CPU per GiB (every process, /proc/stat): erofsd %.2f s %s, %s %.2f s %s; at erofsd's cost these %d CPUs serve at most %.0f MiB/s, %.2f of %s\n",
		lazy, Rounds(b.Machine, "%.2f"), b.Ref, ref, Rounds(b.RefMachine, "%.2f"), runtime.NumCPU(), CoreBound(lazy), CoreBound(lazy)/b.RefMiBs, b.Ref) +
		fmt.Sprintf("  floor of a verified read, %s: machine %.2f s/GiB, at most %.0f MiB/s = %.2f of %s (target >= 0.9); own CPU %.2f s/GiB = %.2fx %s's (target <= 1.5)\n",
			what, floor, CoreBound(floor), CoreBound(floor)/b.RefMiBs, b.Ref, b.RefCPU+sha+readBack, (b.RefCPU+sha+readBack)/b.RefCPU, b.Ref)
}
