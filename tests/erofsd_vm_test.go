package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testtree"
	"github.com/erofsd/erofsd/tests/vm"
)

// dataDir collects the files the guest gets on its data disk.
type dataDir struct {
	t   *testing.T
	dir string
}

// image builds src (a directory, or layer tars when layers is set) into
// name.erofs with its blobs in blobDir; ref also writes a self-contained
// ref-name.erofs, the guest's loop-mounted reference.
func (d *dataDir) image(name, src string, layers [][]byte, blobDir string, ref bool) {
	d.t.Helper()
	for _, self := range []bool{false, true} {
		if self && !ref {
			continue
		}
		out := filepath.Join(d.dir, name+".erofs")
		opts := build.Options{BlobDir: filepath.Join(d.dir, blobDir)}
		if self {
			out, opts = filepath.Join(d.dir, "ref-"+name+".erofs"), build.Options{}
		}
		testimage.Write(d.t, out, opts, func(ctx context.Context, b *build.Builder) error {
			if layers == nil {
				return b.AddDir(ctx, src)
			}
			for _, l := range layers {
				if err := b.AddLayer(ctx, bytes.NewReader(l)); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// randomImage builds name.erofs (see image) of a directory holding one
// file of size random bytes.
func (d *dataDir) randomImage(name, file string, size int, blobDir string, ref bool) {
	d.t.Helper()
	src := d.t.TempDir()
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, file), data, 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.image(name, src, nil, blobDir, ref)
}

// disk packs the data directory into an ext4 image.
func (d *dataDir) disk() string {
	d.t.Helper()
	var size int64
	filepath.Walk(d.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			size += fi.Size() + 4096
		}
		return nil
	})
	img := filepath.Join(d.t.TempDir(), "data.img")
	mb := size/(1<<20)*5/4 + 32
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", d.dir, img, fmt.Sprintf("%dM", mb)).CombinedOutput()
	if err != nil {
		d.t.Fatalf("mkfs.ext4 -d: %v\n%s", err, out)
	}
	return img
}

const guestScript = `
mkdir -p /data /mnt /ref
mount -t ext4 -o ro /dev/vdb /data
erofsd --cache-dir /cache/fscache --blob-dir /data/blobs --socket /tmp/erofsd.sock >/tmp/erofsd.log 2>&1 &
` + guestPrelude + `

# Chunked image of the feature tree: every entry as the reference has it.
mkdir -p /mnt/tree && refmount tree
check mount-tree ctl mount --fsid tree /data/tree.erofs /mnt/tree
check tree guesttool cmp /ref/tree /mnt/tree

# The same image registered by digest: fetched from the blob store and
# verified before it is served.
mkdir -p /mnt/bydigest
check mount-digest ctl mount --fsid bydigest "$TREE_DIGEST" /mnt/bydigest
check by-digest guesttool cmp /ref/tree /mnt/bydigest

# 64 MiB file, 8 readers, sequential and random offsets.
mkdir -p /mnt/big && refmount big
check mount-big ctl mount --fsid big /data/big.erofs /mnt/big
check stress guesttool stress /mnt/big/big.bin /ref/big/big.bin 8

# Two layered images (several blobs each) sharing their first layer's
# blob in one domain: that blob is opened once.
o0=$(requests open)
mkdir -p /mnt/p /mnt/q && refmount p
check mount-p ctl mount --fsid p --domain-id shared /data/p.erofs /mnt/p
check mount-q ctl mount --fsid q --domain-id shared /data/q.erofs /mnt/q
check layered guesttool cmp /ref/p /mnt/p
find /mnt/q -type f -exec cat {} + >/dev/null
value domain-opens $(( $(requests open) - o0 ))

# Unmount sends CLOSE; a second mount is served from the cache.
c0=$(requests close)
check umount-tree ctl umount /mnt/tree
sleep 1
value umount-closes $(( $(requests close) - c0 ))
check remount-tree ctl mount --fsid tree /data/tree.erofs /mnt/tree
r0=$(requests read)
check tree-again guesttool cmp /ref/tree /mnt/tree
value remount-reads $(( $(requests read) - r0 ))

# A corrupt and a missing blob give EIO; the other mounts keep working.
mkdir -p /mnt/bad /mnt/missing
check mount-bad ctl mount --fsid bad --blob-dir /data/badblobs /data/bad.erofs /mnt/bad
guesttool read /mnt/bad/data.bin
check mount-missing ctl mount --fsid missing --blob-dir /data/noblobs /data/missing.erofs /mnt/missing
guesttool read /mnt/missing/data.bin
value digest-failures $(counter chunk_digest_failures_total)
check alive guesttool cmp /ref/p /mnt/p

# A compressed image: 6.1 cannot read compressed inodes in fscache mode,
# and the mount is refused saying so (not mounted to fail with EOPNOTSUPP).
mkdir -p /mnt/z
if ctl mount --fsid z /data/z.erofs /mnt/z 2>/tmp/z.err; then echo "FAIL z-refused"
elif grep -q "compressed data, which Linux before 6.9 cannot read in fscache" /tmp/z.err; then echo "PASS z-refused"
else echo "FAIL z-refused"; cat /tmp/z.err; fi

ctl ls
ctl status
echo "--- erofsd log"
tail -n 20 /tmp/erofsd.log
`

// TestErofsdInVM runs erofsd against the cachefiles on-demand protocol of
// a real 6.1 kernel in a VM and checks what readers of the fscache mounts
// see: trees identical to a loop-mounted reference, concurrent readers,
// domain blob sharing, CLOSE on unmount, cache reuse on remount, EIO
// (never wrong bytes) for corrupt or missing blobs, and a compressed
// image refused with the reason.
func TestErofsdInVM(t *testing.T) {
	kernel := vm.Require(t)
	d := &dataDir{t: t, dir: t.TempDir()}

	src := filepath.Join(t.TempDir(), "tree")
	if _, err := testtree.Generate(src, testtree.Options{}); err != nil {
		t.Fatal(err)
	}
	d.image("tree", src, nil, "blobs", true)
	treeImage, err := os.ReadFile(filepath.Join(d.dir, "tree.erofs"))
	if err != nil {
		t.Fatal(err)
	}
	treeDigest := blobstore.DigestOf(sha256.Sum256(treeImage))
	os.WriteFile(filepath.Join(d.dir, "blobs", treeDigest.Hex()), treeImage, 0o644)

	d.randomImage("big", "big.bin", 64<<20, "blobs", true)

	base := layerTar(t, []layerEntry{{"usr/", ""}, {"usr/lib/", ""}, {"usr/lib/libfoo.so", strings.Repeat("foo", 100000)},
		{"etc/", ""}, {"etc/config", "v1"}, {"etc/old", "old"}})
	p2 := layerTar(t, []layerEntry{{"etc/config", "v2"}, {"etc/.wh.old", ""}, {"app/", ""}, {"app/p", strings.Repeat("p", 70000)}})
	q2 := layerTar(t, []layerEntry{{"usr/lib/.wh..wh..opq", ""}, {"usr/lib/libbar.so", "bar"}, {"app/", ""}, {"app/q", "q"}})
	d.image("p", "", [][]byte{base, p2}, "blobs", true)
	d.image("q", "", [][]byte{base, q2}, "blobs", false)

	badDir := t.TempDir()
	data := make([]byte, 3<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(badDir, "data.bin"), data, 0o644)
	d.image("bad", badDir, nil, "badblobs", false)
	corruptBlobs(t, filepath.Join(d.dir, "badblobs"))
	d.image("missing", badDir, nil, "missingblobs", false)
	os.RemoveAll(filepath.Join(d.dir, "missingblobs"))
	os.MkdirAll(filepath.Join(d.dir, "noblobs"), 0o755)

	zsrc := t.TempDir()
	os.WriteFile(filepath.Join(zsrc, "text"), []byte(strings.Repeat("compressible text ", 50000)), 0o644)
	zres := testimage.Write(t, filepath.Join(d.dir, "z.erofs"), build.Options{BlobDir: filepath.Join(d.dir, "blobs"), Compression: "lz4"},
		func(ctx context.Context, b *build.Builder) error { return b.AddDir(ctx, zsrc) })
	if zres.CompressedFiles != 1 {
		t.Fatalf("%d files compressed, want 1", zres.CompressedFiles)
	}

	files := guestBinaries(t)
	script := "TREE_DIGEST=" + treeDigest.String() + "\n" + guestScript
	res := runGuest(t, vm.Config{Kernel: kernel, Script: script, Files: files,
		Disks: []string{d.disk()}, MemoryMB: 2048, CacheDiskMB: 512}, 8*time.Minute, true)
	out := res.Output
	passed, values := guestResults(out)
	for _, name := range []string{"mount-tree", "tree", "mount-digest", "by-digest", "mount-big", "stress", "mount-p", "mount-q", "layered",
		"umount-tree", "remount-tree", "tree-again", "mount-bad", "mount-missing", "alive", "z-refused"} {
		if !passed[name] {
			t.Errorf("guest check %s did not pass", name)
		}
	}
	// p: bootstrap + 2 blobs; q: bootstrap + its own layer blob (the
	// base blob is shared in the domain).
	if got := values["domain-opens"]; got != 5 {
		t.Errorf("OPENs for two images sharing a blob in a domain: %d, want 5", got)
	}
	if got := values["umount-closes"]; got < 2 {
		t.Errorf("CLOSEs after unmount: %d, want the bootstrap's and the blob's", got)
	}
	if got, ok := values["remount-reads"]; !ok || got != 0 {
		t.Errorf("READs when re-reading a remounted image: %d, want 0 (served from the cache)", got)
	}
	if values["digest-failures"] == 0 {
		t.Error("the corrupt blob was not caught by its digest")
	}
	for _, f := range []string{"/mnt/bad/data.bin", "/mnt/missing/data.bin"} {
		if !strings.Contains(out, "read error read "+f+": input/output error") {
			t.Errorf("reading %s did not fail with EIO", f)
		}
	}
	if strings.Contains(out, "read ok") {
		t.Error("a file with a broken blob was read to the end")
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("guest output:\n%s", out)
	}
}

// corruptBlobs flips one byte in the middle of every blob in dir.
func corruptBlobs(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("no blobs in %s: %v", dir, err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x55
		os.WriteFile(p, data, 0o644)
	}
}
