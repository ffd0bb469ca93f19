// Package benchstat holds the small figures the benchmark programs and
// tests print: medians of rounds, the rounds themselves, and CPU time.
package benchstat

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Median returns the median of v (the upper one of an even count).
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// Rounds formats v as "(a, b, c)", each value with verb (e.g. "%.0f").
func Rounds(v []float64, verb string) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(verb, x)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// CPUSeconds is the user and system CPU time this process has used.
func CPUSeconds() float64 { return rusageSeconds(unix.RUSAGE_SELF) }

// ChildCPUSeconds is the user and system CPU time of this process's
// children that have been waited for.
func ChildCPUSeconds() float64 { return rusageSeconds(unix.RUSAGE_CHILDREN) }

func rusageSeconds(who int) float64 {
	var ru unix.Rusage
	unix.Getrusage(who, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
