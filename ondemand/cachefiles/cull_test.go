package cachefiles

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erofsd/erofsd/ondemand"
	abi "github.com/erofsd/erofsd/ondemand/internal/cachefiles"
	"github.com/erofsd/erofsd/ondemand/internal/space"
	"golang.org/x/sys/unix"
)

// kernelLimits plays fs/cachefiles/daemon.c's checks of brun/bcull/bstop
// (and the f* ones) on the current values.
type kernelLimits struct{ run, cull, stop map[string]int }

func (k *kernelLimits) apply(cmd string) error {
	var name string
	var v int
	if _, err := fmt.Sscanf(cmd, "%s %d%%", &name, &v); err != nil || !strings.HasSuffix(cmd, "%") {
		return fmt.Errorf("bad command %q", cmd)
	}
	p, what := name[:1], name[1:]
	switch what {
	case "run":
		if v <= k.cull[p] || v >= 100 {
			return unix.EINVAL
		}
		k.run[p] = v
	case "cull":
		if v <= k.stop[p] || v >= k.run[p] {
			return unix.EINVAL
		}
		k.cull[p] = v
	case "stop":
		if v >= k.cull[p] {
			return unix.EINVAL
		}
		k.stop[p] = v
	default:
		return fmt.Errorf("bad command %q", cmd)
	}
	return nil
}

func TestLimitsCommands(t *testing.T) {
	for _, bad := range []Limits{{BRun: 5, BCull: 5, BStop: 1}, {BRun: 100, BCull: 5, BStop: 1}, {BRun: 7, BCull: 5, BStop: -1}, {FRun: 3, FCull: 4, FStop: 1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if len((Limits{}).commands()) != 0 || (Limits{}).Validate() != nil {
		t.Error("zero limits must keep the kernel's defaults")
	}
	// Whatever the kernel's current values, every command is accepted
	// and the result is the target.
	for _, start := range [][3]int{{7, 5, 1}, {99, 98, 97}, {3, 2, 1}, {50, 40, 30}} {
		for _, want := range []Limits{DefaultLimits, {BRun: 4, BCull: 3, BStop: 2, FRun: 99, FCull: 98, FStop: 97}, {BRun: 20, BCull: 10, BStop: 0}} {
			if err := want.Validate(); err != nil {
				t.Fatal(err)
			}
			k := &kernelLimits{run: map[string]int{"b": start[0], "f": start[0]}, cull: map[string]int{"b": start[1], "f": start[1]},
				stop: map[string]int{"b": start[2], "f": start[2]}}
			for _, cmd := range want.commands() {
				if err := k.apply(cmd); err != nil {
					t.Fatalf("from %v to %+v: %q refused: %v", start, want, cmd, err)
				}
			}
			if k.run["b"] != want.BRun || k.cull["b"] != want.BCull || k.stop["b"] != want.BStop {
				t.Errorf("from %v to %+v: got b %d/%d/%d", start, want, k.run["b"], k.cull["b"], k.stop["b"])
			}
			if want.FRun == 0 && (k.run["f"] != start[0] || k.cull["f"] != start[1] || k.stop["f"] != start[2]) {
				t.Errorf("from %v to %+v: zero f limits changed the kernel's", start, want)
			}
			if want.FRun != 0 && (k.run["f"] != want.FRun || k.cull["f"] != want.FCull || k.stop["f"] != want.FStop) {
				t.Errorf("from %v to %+v: got f %d/%d/%d", start, want, k.run["f"], k.cull["f"], k.stop["f"])
			}
		}
	}
}

// fakeCache is a cache directory with cachefiles' layout and a kernel
// that culls in it: objects in use are refused with EBUSY, culled files
// are unlinked and culled directories moved to the graveyard. Free space
// is a number the test controls; culling a file frees its size.
type fakeCache struct {
	t     *testing.T
	dir   string
	mu    sync.Mutex
	inUse map[string]bool // paths
	size  int64
	free  int64
	cmds  []string
	grave int
}

func newFakeCache(t *testing.T, size, free int64) *fakeCache {
	dir := t.TempDir()
	for _, d := range []string{cacheSubdir, graveyardSubdir} {
		os.MkdirAll(filepath.Join(dir, d), 0o700)
	}
	return &fakeCache{t: t, dir: dir, inUse: map[string]bool{}, size: size, free: free}
}

// object creates cache/I<volume>/@<fan>/D<cookie> of n bytes last used at age.
func (c *fakeCache) object(volume, cookie string, n int, age time.Duration, inUse bool) string {
	c.t.Helper()
	fan := filepath.Join(c.dir, cacheSubdir, "I"+volume, fmt.Sprintf("@%02x", len(cookie)))
	if err := os.MkdirAll(fan, 0o700); err != nil {
		c.t.Fatal(err)
	}
	p := filepath.Join(fan, "D"+cookie)
	if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
		c.t.Fatal(err)
	}
	at := time.Now().Add(-age)
	os.Chtimes(p, at, at)
	if inUse {
		c.inUse[p] = true
		c.inUse[filepath.Dir(filepath.Dir(p))] = true // its volume
	}
	return p
}

func (c *fakeCache) statfs(string) (space.FS, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return space.FS{Size: c.size, Free: c.free, Files: 1000, FilesFree: 900}, nil
}

func (c *fakeCache) inDir(dir, cmd string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cmds = append(c.cmds, cmd)
	verb, name, _ := strings.Cut(cmd, " ")
	if strings.Contains(name, "/") {
		return unix.EINVAL
	}
	p := filepath.Join(dir, name)
	fi, err := os.Lstat(p)
	if err != nil {
		return unix.ESTALE
	}
	if c.inUse[p] {
		return unix.EBUSY
	}
	switch verb {
	case "inuse":
		return nil
	case "cull":
		if fi.IsDir() {
			c.grave++
			return os.Rename(p, filepath.Join(c.dir, graveyardSubdir, fmt.Sprint(c.grave)))
		}
		c.free += fi.Size()
		return os.Remove(p)
	}
	return unix.EINVAL
}

func (c *fakeCache) stop() {}

func (c *fakeCache) culler(wanted func(string, string) bool) (*culler, *Stats) {
	st := &Stats{}
	cl := newCuller(c.dir, Config{Limits: DefaultLimits, Wanted: wanted}, c, st)
	cl.statfs = c.statfs
	return cl, st
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func TestCullPassOrderAndBounds(t *testing.T) {
	// 1000 bytes, 50 free: below bcull (7%); culling stops once brun
	// (10%, 100 bytes) is free.
	c := newFakeCache(t, 1000, 50)
	mounted := c.object("erofs,a", "blob1", 40, 5*time.Hour, true)
	oldWanted := c.object("erofs,b", "blob2", 30, 4*time.Hour, false)
	oldest := c.object("erofs,c", "blob3", 20, 3*time.Hour, false)
	newer := c.object("erofs,c", "blob4", 25, 1*time.Hour, false)
	newest := c.object("erofs,d", "img", 25, time.Minute, false)
	os.MkdirAll(filepath.Join(c.dir, graveyardSubdir, "old", "x"), 0o700)
	cl, st := c.culler(func(vol, cookie string) bool { return vol == "erofs,b" })

	res, err := cl.pass(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	// Unwanted first, least recently used first: blob3 (20) then blob4
	// (25) free 45: 95 < 100, so img (25) too; blob2 is wanted and is
	// not needed; blob1 is in use.
	if exists(oldest) || exists(newer) || exists(newest) {
		t.Errorf("unwanted, unused objects left: %v %v %v", exists(oldest), exists(newer), exists(newest))
	}
	if !exists(mounted) || !exists(oldWanted) {
		t.Error("a mounted or a still wanted object was culled though brun was reached")
	}
	if res.Culled != 3 || res.Bytes < 70 || st.Culled.Load() != 3 {
		t.Errorf("result %+v, stats culled %d", res, st.Culled.Load())
	}
	// The emptied volumes c and d went to the graveyard, which was
	// emptied, as was what lay there before.
	if exists(filepath.Join(c.dir, cacheSubdir, "Ierofs,c")) || exists(filepath.Join(c.dir, cacheSubdir, "Ierofs,d")) {
		t.Error("empty volume directories left")
	}
	if ents, _ := os.ReadDir(filepath.Join(c.dir, graveyardSubdir)); len(ents) != 0 {
		t.Errorf("graveyard not emptied: %d entries", len(ents))
	}
	if !exists(filepath.Join(c.dir, cacheSubdir, "Ierofs,a")) {
		t.Error("the mounted volume's directory was culled")
	}
	for _, cmd := range c.cmds {
		if strings.HasPrefix(cmd, "cull ") && strings.Contains(cmd, "blob1") {
			t.Error("culled an object in use without an inuse check refusing it first")
		}
	}

	// A force pass takes every unused object, wanted or not, but not the
	// mounted one.
	res, err = cl.pass(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if exists(oldWanted) || !exists(mounted) || res.Busy != 1 {
		t.Errorf("force pass: wanted left %v, mounted left %v, busy %d", exists(oldWanted), exists(mounted), res.Busy)
	}
	if u, ok := (&Server{cull: cl}).CacheUsage(); !ok || u.Objects != 1 || u.FS.Size != 1000 {
		t.Errorf("usage %+v %v", u, ok)
	}
}

func TestCullPassNotNeeded(t *testing.T) {
	c := newFakeCache(t, 1000, 500)
	p := c.object("erofs,a", "blob", 100, time.Hour, false)
	os.MkdirAll(filepath.Join(c.dir, graveyardSubdir, "g"), 0o700)
	cl, _ := c.culler(nil)
	res, err := cl.pass(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !exists(p) || res.Culled != 0 || res.Graveyard != 1 {
		t.Errorf("plenty of space: culled %d, object left %v, graveyard removed %d", res.Culled, exists(p), res.Graveyard)
	}
	if res.Usage.Objects != 1 || res.Usage.ObjectBytes <= 0 {
		t.Errorf("usage %+v", res.Usage)
	}
}

func TestCullPassBounded(t *testing.T) {
	// Nothing can be culled (all in use) and space stays low: the pass
	// ends after trying each object once.
	c := newFakeCache(t, 1000, 0)
	for i := range 50 {
		c.object("erofs,a", fmt.Sprint("b", i), 10, time.Duration(i)*time.Minute, true)
	}
	cl, _ := c.culler(nil)
	start := time.Now()
	res, _ := cl.pass(context.Background(), false)
	if res.Busy != 50 || res.Culled != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("busy %d culled %d in %v", res.Busy, res.Culled, time.Since(start))
	}
	if len(c.cmds) > 60 {
		t.Errorf("%d commands for 50 objects in use", len(c.cmds))
	}
}

// noSpaceObject refuses writes with ENOBUFS while the cache is full.
type noSpaceObject struct {
	fakeObject
	full func() bool
}

func (o *noSpaceObject) pwrite(p []byte, off int64) error {
	if o.full() {
		return fmt.Errorf("writing into the cache: %w", unix.ENOBUFS)
	}
	return o.fakeObject.pwrite(p, off)
}

type noSpaceKernel struct {
	*fakeKernel
	full func() bool
}

func (k noSpaceKernel) object(fd int32) (objectIO, error) {
	return &noSpaceObject{fakeObject: fakeObject{k: k.fakeKernel, fd: fd}, full: k.full}, nil
}

func TestWriteWithoutSpaceCullsOrFails(t *testing.T) {
	for _, cullable := range []bool{true, false} {
		t.Run(fmt.Sprint("cullable=", cullable), func(t *testing.T) {
			c := newFakeCache(t, 1000, 5)
			c.object("erofs,old", "blob", 200, time.Hour, !cullable)
			full := func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.free < 30 }
			k := newFakeKernel(2)
			s := newServer(noSpaceKernel{k, full}, fakeResolver{"b": &fakeSource{size: 8192}}, Config{})
			s.cull, _ = c.culler(nil)
			s.cull.stats = &s.Stats
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go s.Serve(ctx)
			k.push(abi.EncodeOpenMsg(1, 7, 50, "erofs,x", "b"))
			k.push(abi.EncodeReadMsg(2, 7, 0, 8192))
			select {
			case <-k.done:
			case <-time.After(5 * time.Second):
				t.Fatal("READ not completed")
			}
			k.mu.Lock()
			data := k.data[50]
			k.mu.Unlock()
			if s.Stats.NoSpace.Load() == 0 {
				t.Error("no ENOBUFS counted")
			}
			if cullable {
				if len(data) != 8192 || s.Stats.ReadErrors.Load() != 0 || s.Stats.Culled.Load() != 1 {
					t.Errorf("room made by culling: %d bytes written, %d read errors, %d culled", len(data), s.Stats.ReadErrors.Load(), s.Stats.Culled.Load())
				}
			} else if len(data) != 0 || s.Stats.ReadErrors.Load() != 1 {
				t.Errorf("no room: %d bytes written, %d read errors (want the READ failed: EIO)", len(data), s.Stats.ReadErrors.Load())
			}
		})
	}
}

var _ ondemand.Source = (*fakeSource)(nil)

func TestMakeRoomDoesNotRescanAFullCache(t *testing.T) {
	c := newFakeCache(t, 1000, 0)
	for i := range 5 {
		c.object("erofs,a", fmt.Sprint("b", i), 10, time.Minute, true)
	}
	cl, _ := c.culler(nil)
	for range 20 {
		if cl.makeRoom(context.Background(), time.Now(), 4096) {
			t.Fatal("makeRoom reported room in a full cache with nothing to cull")
		}
	}
	c.mu.Lock()
	n := len(c.cmds)
	c.mu.Unlock()
	if n > 5 {
		t.Errorf("%d commands for 20 failed writes in a row: a full cache was culled again for each", n)
	}
	// Once the futile pass is old enough, a new failure tries again,
	// and a pass that ends after a failure answers for it.
	c.mu.Lock()
	delete(c.inUse, filepath.Join(c.dir, cacheSubdir, "Ierofs,a", "@02", "Db0"))
	c.mu.Unlock()
	if !cl.full() {
		t.Error("a cache below bstop with nothing to cull is not reported full")
	}
	cl.objectClosed() // as on a CLOSE from the kernel
	if cl.full() {
		t.Error("still full after a CLOSE")
	}
	if !cl.makeRoom(context.Background(), time.Now(), 4096) {
		t.Error("no room after an object was closed and became cullable")
	}
	if !cl.makeRoom(context.Background(), time.Now().Add(-time.Hour), 4096) {
		t.Error("a write that failed before the last pass must try again")
	}
}

// countingSource counts fills.
type countingSource struct {
	fakeSource
	fills atomic.Int32
}

func (s *countingSource) Fill(ctx context.Context, off, n int64, w ondemand.BlockWriter) error {
	s.fills.Add(1)
	return s.fakeSource.Fill(ctx, off, n, w)
}

func TestFullCacheFailsReadsWithoutFetching(t *testing.T) {
	c := newFakeCache(t, 1000, 5) // below bstop (3%)
	c.object("erofs,a", "mounted", 200, time.Hour, true)
	src := &countingSource{fakeSource: fakeSource{size: 1 << 20}}
	k := newFakeKernel(4) // 1 copen, 3 completes
	s := newServer(noSpaceKernel{k, func() bool { return true }}, fakeResolver{"b": src}, Config{Workers: 1})
	s.cull, _ = c.culler(nil)
	s.cull.stats = &s.Stats
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)
	k.push(abi.EncodeOpenMsg(1, 7, 50, "erofs,x", "b"))
	for i := range 3 {
		k.push(abi.EncodeReadMsg(uint32(2+i), 7, uint64(i)*8192, 8192))
		time.Sleep(20 * time.Millisecond) // one at a time
	}
	select {
	case <-k.done:
	case <-time.After(5 * time.Second):
		t.Fatal("READs not completed")
	}
	if got := src.fills.Load(); got != 1 {
		t.Errorf("%d fills: after the first write was refused and nothing could be culled, READs must fail without fetching", got)
	}
	if s.Stats.ReadErrors.Load() != 3 {
		t.Errorf("%d read errors, want 3", s.Stats.ReadErrors.Load())
	}
}

func TestCwdThreadKeepsTheProcessDirectory(t *testing.T) {
	before, _ := os.Getwd()
	dir := t.TempDir()
	var seen []string
	th, err := newCwdThread(func(cmd string) error {
		wd, err := unix.Getwd()
		seen = append(seen, wd+" "+cmd)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := th.inDir(dir, "cull Dx"); err != nil {
		t.Fatal(err)
	}
	if err := th.inDir(filepath.Join(dir, "missing"), "cull Dy"); err == nil {
		t.Error("a command in a missing directory was written")
	}
	th.stop()
	if err := th.inDir(dir, "cull Dz"); err != errCommanderStopped {
		t.Errorf("after stop: %v", err)
	}
	if len(seen) != 1 || seen[0] != dir+" cull Dx" {
		t.Errorf("commands written: %q", seen)
	}
	if after, _ := os.Getwd(); after != before {
		t.Errorf("the process's directory moved from %s to %s", before, after)
	}
}
