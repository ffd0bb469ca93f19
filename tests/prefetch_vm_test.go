package tests

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/tests/vm"
)

const prefetchGuestScript = `
mkdir -p /data /mnt/pf /ref/pf
mount -t ext4 -o ro /dev/vdb /data
erofsd --cache-dir /cache/fscache --blob-dir /data/blobs --socket /tmp/erofsd.sock --prefetch whole >/tmp/erofsd.log 2>&1 &
` + guestPrelude + `
mount -t erofs -o ro,loop /data/ref-pf.erofs /ref/pf

check mount-pf ctl mount --fsid pf --prefetch-list /data/list /data/pf.erofs /mnt/pf
for i in $(seq 1200); do
	d=$(counter prefetch_bytes_done_total); l=$(counter prefetch_bytes_left)
	[ "$d" -gt 0 ] && [ "$l" -eq 0 ] && break
	sleep 0.1
done
value prefetch-polls $i
value prefetch-done $(counter prefetch_bytes_done_total)
value prefetch-left $(counter prefetch_bytes_left)
f0=$(counter backend_fetches_total); r0=$(requests read)
check pf-cmp guesttool cmp /ref/pf /mnt/pf
value pf-fetches $(( $(counter backend_fetches_total) - f0 ))
value pf-reads $(( $(requests read) - r0 ))
check umount-pf ctl umount /mnt/pf
sleep 1

# Mounted again: the kernel's cache files still hold the data, and the
# new objects' prefetch finds it there (SEEK_HOLE) instead of fetching.
f1=$(counter backend_fetches_total); d1=$(counter prefetch_bytes_done_total)
check remount-pf ctl mount --fsid pf /data/pf.erofs /mnt/pf
for i in $(seq 1200); do
	d=$(counter prefetch_bytes_done_total); l=$(counter prefetch_bytes_left)
	[ "$d" -gt "$d1" ] && [ "$l" -eq 0 ] && break
	sleep 0.1
done
value repf-done $(( $(counter prefetch_bytes_done_total) - d1 ))
value repf-fetches $(( $(counter backend_fetches_total) - f1 ))
check pf-cmp-again guesttool cmp /ref/pf /mnt/pf
echo "--- erofsd log"
grep -i prefetch /tmp/erofsd.log
`

// TestPrefetchInVM mounts an image through cachefiles on-demand mode on
// the 6.1 VM kernel with --prefetch whole and a prefetch list: the
// blobs' objects are prefetch targets from the kernel's OPEN at mount,
// prefetch fills them in the background, and reading every file
// afterwards sends no READ and fetches nothing; mounted again, prefetch
// finds the data in the kernel's cache files and fetches nothing.
func TestPrefetchInVM(t *testing.T) {
	kernel := vm.Require(t)
	d := &dataDir{t: t, dir: t.TempDir()}
	src := filepath.Join(t.TempDir(), "pf")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 16<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644)
	d.image("pf", src, nil, "blobs", true)
	os.WriteFile(filepath.Join(d.dir, "list"), []byte("big.bin\n"), 0o644)

	files := guestBinaries(t)
	res := runGuest(t, vm.Config{Kernel: kernel, Script: prefetchGuestScript, Files: files,
		Disks: []string{d.disk()}, MemoryMB: 1024, CacheDiskMB: 256}, 6*time.Minute, true)
	passed, values := guestResults(res.Output)
	for _, name := range []string{"mount-pf", "pf-cmp", "umount-pf", "remount-pf", "pf-cmp-again"} {
		if !passed[name] {
			t.Errorf("guest check %s did not pass", name)
		}
	}
	if values["prefetch-done"] < len(big) || values["prefetch-left"] != 0 {
		t.Errorf("prefetch: %d bytes done, %d left", values["prefetch-done"], values["prefetch-left"])
	}
	if values["pf-fetches"] != 0 || values["pf-reads"] != 0 {
		t.Errorf("reading the prefetched image: %d fetches, %d READs; want none", values["pf-fetches"], values["pf-reads"])
	}
	if values["repf-done"] != values["prefetch-done"] || values["repf-fetches"] != 0 {
		t.Errorf("prefetch after a remount: %d bytes done (want %d), %d fetches (want 0: the cache has them)",
			values["repf-done"], values["prefetch-done"], values["repf-fetches"])
	}
	if !strings.Contains(res.Output, "prefetch done") {
		t.Error("the daemon did not log the prefetch as done")
	}
	t.Logf("prefetch of %d bytes done within %d polls of 0.1 s in the guest (TCG)", values["prefetch-done"], values["prefetch-polls"])
	if t.Failed() || testing.Verbose() {
		t.Logf("guest output:\n%s", res.Output)
	}
}
