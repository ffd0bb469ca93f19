package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/tests/vm"
)

// cacheSpaceScript runs erofsd on a 48 MiB cache disk with cull limits
// that a 20 MiB image crosses: brun 30%, bcull 25%, bstop 15% (the cache
// stops growing with about 7 MiB free).
const cacheSpaceScript = `
mkdir -p /data /mnt /ref
mount -t ext4 -o ro /dev/vdb /data
erofsd --cache-dir /cache/fscache --blob-dir /data/blobs --socket /tmp/erofsd.sock \
	--cachefiles-brun 30 --cachefiles-bcull 25 --cachefiles-bstop 15 --cache-check-interval 2s >/tmp/erofsd.log 2>&1 &
` + guestPrelude + `
freekb() { df -k /cache | awk 'NR==2 {print $4}'; }
objects() { find /cache/fscache/cache -type f | wc -l; }
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# readcheck FILE REF: every piece right or EIO; fails on wrong bytes.
readcheck() { rc=0; guesttool readcheck "$@" >/tmp/rc || rc=$?; cat /tmp/rc; return $rc; }
eio() { awk '{print $3}' /tmp/rc; }
okpieces() { awk '{print $2}' /tmp/rc; }
value free-start-kb $(freekb)

# a fits: read whole and right. Unmounted and mounted again, its objects
# are files in the cache directory that the kernel has in use.
mkdir -p /mnt/a /mnt/b && refmount a && refmount b
check mount-a ctl mount --fsid a /data/a.erofs /mnt/a
check read-a guesttool cmp /ref/a /mnt/a
check umount-a-first ctl umount /mnt/a
check remount-a ctl mount --fsid a /data/a.erofs /mnt/a
value objects-a $(objects)
value free-after-a-kb $(freekb)

# b does not fit beside a mounted a: its pieces read right or fail with
# EIO, never wrong bytes; a's objects, in use, are not culled; the
# control API answers meanwhile.
check mount-b ctl mount --fsid b /data/b.erofs /mnt/b
readcheck /mnt/b/f /ref/b/f >/dev/null &
reader=$!
status() { timeout 5 erofsctl --socket /tmp/erofsd.sock status >/dev/null; }
for i in 1 2 3 4 5; do check status-$i status; sleep 0.3; done
check readcheck-b-full wait $reader
cat /tmp/rc
value b-eio-full $(eio)
value free-full-kb $(freekb)
value no-space $(counter 'cache_no_space_total{frontend=cachefiles}')
value culled-while-mounted $(counter 'cache_evicted_objects_total{frontend=cachefiles}')
value objects-a-full $(objects)

# What is cached stays right: a, read back from the cache disk.
dropcaches
r0=$(requests read)
check a-intact guesttool cmp /ref/a /mnt/a
value a-reread-reads $(( $(requests read) - r0 ))

# Unmount a: culling its objects makes room and b reads whole and right,
# also once more from the cache disk.
check umount-a ctl umount /mnt/a
value objects-before-cull $(objects)
check readcheck-b-after readcheck /mnt/b/f /ref/b/f
value b-eio-after $(eio)
dropcaches
check b-intact guesttool cmp /ref/b /mnt/b
sleep 3
value culled $(counter 'cache_evicted_objects_total{frontend=cachefiles}')
value culled-bytes $(counter 'cache_evicted_bytes_total{frontend=cachefiles}')
value objects-after $(objects)
value graveyard $(ls -A /cache/fscache/graveyard | wc -l)
value free-end-kb $(freekb)

# An image bigger than the whole cache disk, once b is unmounted: right
# bytes as far as the disk holds (b's objects culled), EIO beyond.
check umount-b ctl umount /mnt/b
mkdir -p /mnt/huge && refmount huge
check mount-huge ctl mount --fsid huge /data/huge.erofs /mnt/huge
check readcheck-huge readcheck /mnt/huge/f /ref/huge/f
value huge-ok $(okpieces)
value huge-eio $(eio)
check status-huge status
value culled-end $(counter 'cache_evicted_objects_total{frontend=cachefiles}')
value fetches $(counter backend_fetches_total)
wget -qO- http://127.0.0.1:9851/metrics | grep '^erofsd_cache_'
ctl status
echo "--- erofsd log"
grep -v 'level=info msg="image\|level=info msg=mounted\|level=debug' /tmp/erofsd.log | tail -n 15
`

// TestCacheSpaceInVM fills a small cachefiles cache disk on a real 6.1
// kernel: reads that find no room fail with EIO and never return wrong
// bytes, the control API stays responsive, cached data stays intact, and
// once an image is unmounted culling its objects makes room for the
// other image, whose reads then succeed; an image bigger than the disk
// reads right as far as it fits and fails with EIO beyond.
func TestCacheSpaceInVM(t *testing.T) {
	kernel := vm.Require(t)
	d := &dataDir{t: t, dir: t.TempDir()}
	for name, size := range map[string]int{"a": 20 << 20, "b": 20 << 20, "huge": 64 << 20} {
		d.randomImage(name, "f", size, "blobs", true)
	}
	files := guestBinaries(t)
	res := runGuest(t, vm.Config{Kernel: kernel, Script: cacheSpaceScript, Files: files,
		Disks: []string{d.disk()}, MemoryMB: 1024, CacheDiskMB: 48}, 6*time.Minute, true)
	out := res.Output
	passed, values := guestResults(out)
	for _, name := range []string{"mount-a", "read-a", "umount-a-first", "remount-a", "mount-b", "status-1", "status-2", "status-3", "status-4", "status-5",
		"readcheck-b-full", "a-intact", "umount-a", "readcheck-b-after", "b-intact", "umount-b", "mount-huge", "readcheck-huge", "status-huge"} {
		if !passed[name] {
			t.Errorf("guest check %s did not pass", name)
		}
	}
	if values["b-eio-full"] == 0 {
		t.Error("b read whole beside a mounted a: the cache never filled, the test is void")
	}
	// The limits were written before bind: the cache stopped growing
	// between bstop (15%) and bcull (25%) of the 41,948 KiB filesystem
	// free, not at the kernel's default 1%.
	if free := values["free-full-kb"]; free < 41948*15/100 || free > 41948*25/100 {
		t.Errorf("%d KiB free when the cache was full: want between bstop and bcull", free)
	}
	if values["no-space"] == 0 {
		t.Error("no write refused for lack of space was counted")
	}
	if values["objects-a"] != 2 || values["objects-a-full"] != 2 || values["culled-while-mounted"] != 0 {
		t.Errorf("a's objects: %d on disk after a remount, %d when the cache was full; %d culled while both images were mounted: want 2, 2, 0",
			values["objects-a"], values["objects-a-full"], values["culled-while-mounted"])
	}
	if values["b-eio-after"] != 0 {
		t.Errorf("%d pieces of b still failed after a was unmounted: culling made no room", values["b-eio-after"])
	}
	if values["culled"] == 0 || values["culled-bytes"] < 16<<20 {
		t.Errorf("culled %d objects, %d bytes: want a's blob", values["culled"], values["culled-bytes"])
	}
	// huge: 256 pieces of 256 KiB; the disk holds about 35 MiB of it.
	if values["huge-ok"] < 60 || values["huge-eio"] == 0 || values["huge-ok"]+values["huge-eio"] != 256 {
		t.Errorf("huge image: %d pieces read, %d EIO: want room made by culling b, then EIO", values["huge-ok"], values["huge-eio"])
	}
	if values["culled-end"] <= values["culled"] {
		t.Errorf("b's objects were not culled for the huge image (%d culled in all)", values["culled-end"])
	}
	// About 90 chunks of 1 MiB are written in all; reads that find the
	// cache full fail without fetching theirs (652 fetches before that).
	if values["fetches"] == 0 || values["fetches"] > 200 {
		t.Errorf("%d chunk fetches: a full cache must fail reads without fetching", values["fetches"])
	}
	if strings.Contains(out, "readcheck wrong") || strings.Contains(out, "readcheck error") {
		t.Error("a reader got wrong bytes or an error other than EIO")
	}
	if values["graveyard"] != 0 {
		t.Errorf("graveyard holds %d entries", values["graveyard"])
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("guest output:\n%s", out)
	}
}
