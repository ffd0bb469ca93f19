package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/tests/vm"
)

const failoverScript = `
mkdir -p /data /mnt /ref
mount -t ext4 -o ro /dev/vdb /data
# erofsd supervise runs as systemd would run it, with an fd store.
guesttool systemd /tmp erofsd supervise --cache-dir /cache/fscache --blob-dir /data/blobs --socket /tmp/erofsd.sock --state-dir /tmp/state >/tmp/erofsd.log 2>&1 &
suppid=$!
` + guestPrelude + `
daemonpid() { ctl status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p'; }

# kill -9 the daemon while 8 readers stream a 64 MiB file.
mkdir -p /mnt/crash && refmount crash
ctl mount --fsid crash /data/crash.erofs /mnt/crash
guesttool stress /mnt/crash/big.bin /ref/crash/big.bin 8 >/tmp/stress1 2>&1 &
reader=$!
sleep 1
first=$(daemonpid)
kill -9 "$first"
if wait $reader; then echo "PASS crash"; else echo "FAIL crash"; fi
cat /tmp/stress1
second=$(daemonpid)
[ -n "$second" ] && [ "$second" != "$first" ] && echo "PASS restarted"

# Live upgrade: SIGHUP the supervisor while readers stream another file.
mkdir -p /mnt/upgrade && refmount upgrade
ctl mount --fsid upgrade /data/upgrade.erofs /mnt/upgrade
guesttool stress /mnt/upgrade/big.bin /ref/upgrade/big.bin 8 >/tmp/stress2 2>&1 &
reader=$!
sleep 1
kill -HUP $suppid
if wait $reader; then echo "PASS upgrade"; else echo "FAIL upgrade"; fi
cat /tmp/stress2
third=$(daemonpid)
[ -n "$third" ] && [ "$third" != "$second" ] && echo "PASS upgraded"

# The supervisor dies too: systemd kills what is left of the unit and
# starts it again with the /dev/cachefiles fd from its fd store.
mkdir -p /mnt/fdstore && refmount fdstore
ctl mount --fsid fdstore /data/fdstore.erofs /mnt/fdstore
guesttool stress /mnt/fdstore/big.bin /ref/fdstore/big.bin 8 >/tmp/stress3 2>&1 &
reader=$!
sleep 1
kill -USR1 $suppid
if wait $reader; then echo "PASS fdstore"; else echo "FAIL fdstore"; fi
cat /tmp/stress3
for i in $(seq 100); do fourth=$(daemonpid); [ -n "$fourth" ] && break; sleep 0.1; done
[ -n "$fourth" ] && [ "$fourth" != "$third" ] && echo "PASS fdstore-restarted"
grep -q "resuming with .* fds from systemd's fd store" /tmp/erofsd.log && echo "PASS fdstore-resumed"
ctl ls
echo "--- erofsd log"
grep -v 'level=info msg="image\|level=info msg=mounted' /tmp/erofsd.log | tail -n 15
`

// TestFailoverInVM checks crash failover and live upgrade of the
// cachefiles front end on a real 6.1 kernel: under erofsd supervise, the
// daemon is killed with SIGKILL, then upgraded with SIGHUP, then the
// supervisor and the daemon are killed with SIGKILL and a fake systemd
// starts the service again with the fds of its fd store, each while 8
// readers stream a file; every reader must finish with the right bytes.
func TestFailoverInVM(t *testing.T) {
	kernel := vm.Require(t)
	d := &dataDir{t: t, dir: t.TempDir()}
	for name, size := range map[string]int{"crash": 64 << 20, "upgrade": 32 << 20, "fdstore": 32 << 20} {
		d.randomImage(name, "big.bin", size, "blobs", true)
	}
	files := guestBinaries(t)
	res := runGuest(t, vm.Config{Kernel: kernel, Script: failoverScript, Files: files,
		Disks: []string{d.disk()}, MemoryMB: 2048, CacheDiskMB: 512}, 8*time.Minute, false)
	for _, want := range []string{"PASS crash", "PASS restarted", "PASS upgrade", "PASS upgraded", "PASS fdstore", "PASS fdstore-restarted", "PASS fdstore-resumed"} {
		if !strings.Contains(res.Output, want+"\n") {
			t.Errorf("guest did not report %q", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("guest output:\n%s", res.Output)
	}
}
