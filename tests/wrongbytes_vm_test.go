package tests

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	mrand "math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/tests/vm"
)

// sparseFile describes a file of zeros with data at some offsets.
type sparseFile struct {
	name string
	size int64
	data map[int64]int // offset -> bytes of random data there
}

// sparseFiles are the hole layouts Linux 6.1's fscache mode reads wrong
// when holes are sparse: holes first, holes between data, data in the
// last 4 bytes, and the layout of the original report (a few bytes at 7
// MiB and at 50 MiB of a 50 MiB file).
var sparseFiles = []sparseFile{
	{"holes-first", 20 << 20, map[int64]int{9 << 20: 3 << 20, 20<<20 - 4: 4}},
	{"between", 16 << 20, map[int64]int{0: 1 << 20, 6 << 20: 2 << 20, 15 << 20: 1 << 20}},
	{"report", 50<<20 + 4, map[int64]int{7 << 20: 16, 50 << 20: 4}},
	{"last-4-bytes", 9 << 20, map[int64]int{9<<20 - 4: 4}},
}

// writeSparse writes the files into dir (sparse where they are zero)
// and returns each one's sha256.
func writeSparse(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for _, sf := range sparseFiles {
		content := make([]byte, sf.size)
		f, err := os.Create(filepath.Join(dir, sf.name))
		if err != nil {
			t.Fatal(err)
		}
		for off, n := range sf.data {
			p := content[off : off+int64(n)]
			rand.Read(p)
			if _, err := f.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(sf.size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sum := sha256.Sum256(content)
		sums[sf.name] = hex.EncodeToString(sum[:])
	}
	return sums
}

// sameSizeTree writes files of fixed sizes with seeded random bytes: two
// seeds give trees (and self-contained images) of the same size.
func sameSizeTree(t *testing.T, dir string, seed int64) {
	t.Helper()
	r := mrand.New(mrand.NewSource(seed))
	for i, size := range []int{10000, 200000, 1 << 20} {
		data := make([]byte, size)
		r.Read(data)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const wrongBytesScript = `
mkdir -p /data /mnt /ref
mount -t ext4 -o ro /dev/vdb /data
erofsd --cache-dir /cache/fscache --socket /tmp/erofsd.sock >/tmp/erofsd.log 2>&1 &
` + guestPrelude + `

# Sparse files of a blob image (holes point at its zero chunk), each read
# cold sequentially in 4 KiB, 128 KiB and 8 MiB reads and at random.
mkdir -p /mnt/sparse
check mount-sparse ctl mount --fsid sparse --blob-dir /data/blobs /data/sparse.erofs /mnt/sparse
for mode in 4096 131072 8388608 random; do
	for f in $SPARSE_FILES; do
		echo 3 > /proc/sys/vm/drop_caches
		guesttool shasum /mnt/sparse/$f $mode
	done
done

# The same files with sparse holes: refused in fscache mode here.
mkdir -p /mnt/oldsparse
if ctl mount --fsid oldsparse --blob-dir /data/blobs /data/oldsparse.erofs /mnt/oldsparse 2>/tmp/refusal; then
	echo "FAIL refused-sparse"
else
	cat /tmp/refusal
	grep -q "before 6.2" /tmp/refusal && echo "PASS refused-sparse"
fi

# An image naming another image's blob digest with its own data, mounted
# first in the same domain and read, does not decide what the other reads.
mkdir -p /mnt/forged /mnt/victim && refmount victim
check mount-forged ctl mount --fsid forged --domain-id dom --blob-dir /data/forgedblobs /data/forged.erofs /mnt/forged
find /mnt/forged -type f -exec cat {} + >/dev/null
check mount-victim ctl mount --fsid victim --domain-id dom --blob-dir /data/blobs /data/victim.erofs /mnt/victim
check victim guesttool cmp /ref/victim /mnt/victim

# A new image under an fsid used before, of the same size: the cached
# bootstrap of the old one is not read for it.
mkdir -p /mnt/same && refmount second
check mount-first ctl mount --fsid same /data/first.erofs /mnt/same
find /mnt/same -type f -exec cat {} + >/dev/null
check umount-first ctl umount /mnt/same
sleep 1
check mount-second ctl mount --fsid same /data/second.erofs /mnt/same
check second guesttool cmp /ref/second /mnt/same

ctl status
echo "--- erofsd log"
tail -n 20 /tmp/erofsd.log
`

// TestNeverWrongBytesInVM checks, on the 6.1 kernel's fscache mode, the
// ways an image used to read wrong bytes: sparse holes (6.1 zero-fills
// the rest of a read at a hole), a forged blob digest sharing another
// image's cache object in a domain, and a stale bootstrap object under a
// reused fsid.
func TestNeverWrongBytesInVM(t *testing.T) {
	kernel := vm.Require(t)
	d := &dataDir{t: t, dir: t.TempDir()}

	sparse := t.TempDir()
	sums := writeSparse(t, sparse)
	d.image("sparse", sparse, nil, "blobs", false)
	testimage.Write(t, filepath.Join(d.dir, "oldsparse.erofs"), build.Options{BlobDir: filepath.Join(d.dir, "blobs"), Holes: build.HolesSparse},
		func(ctx context.Context, b *build.Builder) error { return b.AddDir(ctx, sparse) })

	// The victim and a forged image of the same blob size naming the
	// victim's blob digest, its own blob stored under that name.
	victim, forged := t.TempDir(), t.TempDir()
	sameSizeTree(t, victim, 1)
	sameSizeTree(t, forged, 2)
	d.image("victim", victim, nil, "blobs", true)
	res := testimage.Write(t, filepath.Join(d.dir, "forged.erofs"), build.Options{BlobDir: filepath.Join(d.dir, "forgedblobs")},
		func(ctx context.Context, b *build.Builder) error { return b.AddDir(ctx, forged) })
	victimRes := testimage.Write(t, filepath.Join(t.TempDir(), "victim.erofs"), build.Options{BlobDir: t.TempDir()},
		func(ctx context.Context, b *build.Builder) error { return b.AddDir(ctx, victim) })
	victimDigest := victimRes.Blobs[0].Digest
	testimage.Retag(t, filepath.Join(d.dir, "forged.erofs"), 1, victimDigest)
	// Without chunk states, as an attacker would leave it: with them the
	// forged image's last chunk would not read at all.
	testimage.DropChunkStates(t, filepath.Join(d.dir, "forged.erofs"))
	if err := os.Rename(filepath.Join(d.dir, "forgedblobs", res.Blobs[0].Digest), filepath.Join(d.dir, "forgedblobs", victimDigest)); err != nil {
		t.Fatal(err)
	}

	// Two self-contained images of the same size, mounted in turn under
	// one fsid.
	first, second := t.TempDir(), t.TempDir()
	sameSizeTree(t, first, 3)
	sameSizeTree(t, second, 4)
	for name, src := range map[string]string{"first": first, "second": second, "ref-second": second} {
		testimage.Write(t, filepath.Join(d.dir, name+".erofs"), build.Options{},
			func(ctx context.Context, b *build.Builder) error { return b.AddDir(ctx, src) })
	}
	a, _ := os.Stat(filepath.Join(d.dir, "first.erofs"))
	b, _ := os.Stat(filepath.Join(d.dir, "second.erofs"))
	if a == nil || b == nil || a.Size() != b.Size() {
		t.Fatal("the two images under one fsid differ in size")
	}

	var names []string
	for _, sf := range sparseFiles {
		names = append(names, sf.name)
	}
	script := "SPARSE_FILES='" + strings.Join(names, " ") + "'\n" + wrongBytesScript
	res2 := runGuest(t, vm.Config{Kernel: kernel, Script: script, Files: guestBinaries(t),
		Disks: []string{d.disk()}, MemoryMB: 2048, CacheDiskMB: 512}, 8*time.Minute, true)
	out := res2.Output
	passed, _ := guestResults(out)
	for _, name := range []string{"mount-sparse", "refused-sparse", "mount-forged", "mount-victim", "victim",
		"mount-first", "umount-first", "mount-second", "second"} {
		if !passed[name] {
			t.Errorf("guest check %s did not pass", name)
		}
	}
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "shasum" {
			got[filepath.Base(f[1])+" "+f[2]] = f[3]
		}
	}
	for _, sf := range sparseFiles {
		for _, mode := range []string{"4096", "131072", "8388608", "random"} {
			if g := got[sf.name+" "+mode]; g != sums[sf.name] {
				t.Errorf("%s read with %s: sha256 %q, want %s", sf.name, mode, g, sums[sf.name])
			}
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("guest output:\n%s", out)
	}
}
