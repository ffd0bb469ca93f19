package cachefiles

import (
	"fmt"
)

// Limits are cachefiles' space thresholds, in percent of the cache
// filesystem's blocks (B*) and files (F*) that are free. Below Cull the
// cache is culled: erofsd removes objects no mount uses, least recently
// used first, until Run is free again. Below Stop the kernel refuses to
// grow the cache: writes fail with ENOBUFS, erofsd culls and retries
// once, and a READ it still cannot write is completed without data (the
// reader gets EIO, never wrong bytes). Each triple must satisfy
// 0 <= Stop < Cull < Run < 100; a triple of zeros keeps the kernel's
// defaults (7, 5, 1). The kernel turns them into block and file counts
// when the cache is bound: a daemon that resumes a bound cache keeps the
// thresholds it was bound with.
type Limits struct {
	BRun, BCull, BStop int
	FRun, FCull, FStop int
}

// DefaultLimits are cachefilesd's usual settings.
var DefaultLimits = Limits{BRun: 10, BCull: 7, BStop: 3, FRun: 10, FCull: 7, FStop: 3}

func (l Limits) triples() [2]struct {
	p               string
	run, cull, stop int
} {
	return [2]struct {
		p               string
		run, cull, stop int
	}{{"b", l.BRun, l.BCull, l.BStop}, {"f", l.FRun, l.FCull, l.FStop}}
}

// Validate checks 0 <= stop < cull < run < 100 for blocks and files.
func (l Limits) Validate() error {
	for _, t := range l.triples() {
		if t.run == 0 && t.cull == 0 && t.stop == 0 {
			continue
		}
		if !(0 <= t.stop && t.stop < t.cull && t.cull < t.run && t.run < 100) {
			return fmt.Errorf("cachefiles limits %srun %d%%, %scull %d%%, %sstop %d%%: want 0 <= %sstop < %scull < %srun < 100",
				t.p, t.run, t.p, t.cull, t.p, t.stop, t.p, t.p, t.p)
		}
	}
	return nil
}

// commands returns the device commands that set the limits whatever the
// current ones are: the kernel checks each new value against the other
// two, so stop goes to 0 and run to 99 first, then cull, run and stop
// take their values (every step keeps stop < cull < run < 100).
func (l Limits) commands() []string {
	var out []string
	for _, t := range l.triples() {
		if t.run == 0 && t.cull == 0 && t.stop == 0 {
			continue
		}
		p := t.p
		out = append(out, p+"stop 0%", p+"run 99%",
			fmt.Sprintf("%scull %d%%", p, t.cull), fmt.Sprintf("%srun %d%%", p, t.run), fmt.Sprintf("%sstop %d%%", p, t.stop))
	}
	return out
}
