package fanotify

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/require"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/internal/testutil/testmount"
	"github.com/erofsd/erofsd/ondemand"
	"golang.org/x/sys/unix"
)

// spaceRig serves images through one group into one cache directory,
// as erofsd does, so that tests can mount, read and unmount several.
type spaceRig struct {
	t     *testing.T
	reg   *ondemand.Registry
	srv   *Server
	cache string
	store blobstore.Store
	blobs string
}

func newSpaceRig(t *testing.T, cache string, limit int64) *spaceRig {
	t.Helper()
	require.Host(t, require.FileBackedErofs, func() error { return Supported(cache) })
	r := &spaceRig{t: t, reg: ondemand.NewRegistry(), cache: cache, blobs: t.TempDir()}
	r.store, _ = blobstore.NewLocal(r.blobs)
	var err error
	if r.srv, err = New(Config{CacheDir: cache, CacheLimit: limit}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-served
		r.srv.Release()
		r.reg.Close()
	})
	return r
}

// rigImage is an image of one file of random bytes.
type rigImage struct {
	name, img string
	data      []byte
	mnt       string
	unmount   func()
	watches   []*Watch
}

func (r *spaceRig) image(name string, size int) *rigImage {
	r.t.Helper()
	src := r.t.TempDir()
	data := make([]byte, size)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "f"), data, 0o644)
	img, _, _ := testimage.Build(r.t, src, build.Options{BlobDir: r.blobs, ChunkSize: 256 << 10})
	if _, err := r.reg.Register(ondemand.ImageSpec{FSID: name, Bootstrap: img, Store: r.store}); err != nil {
		r.t.Fatal(err)
	}
	return &rigImage{name: name, img: img, data: data}
}

// mount watches the image's blob files and mounts it, as erofsd does.
func (r *spaceRig) mount(im *rigImage) {
	r.t.Helper()
	var reg *ondemand.Image
	for _, i := range r.reg.Images() {
		if i.Spec.FSID == im.name {
			reg = i
		}
	}
	var devices []string
	var objs []*ondemand.Object
	for _, b := range reg.Blobs {
		obj, err := r.reg.Resolve(reg.VolumeKey(), b.Name)
		if err != nil {
			r.t.Fatal(err)
		}
		p := filepath.Join(r.cache, b.Name)
		w, err := r.srv.Watch(p, b.Size, b.Digest.Sum(), obj)
		if err != nil {
			r.t.Fatal(err)
		}
		objs = append(objs, obj)
		im.watches = append(im.watches, w)
		devices = append(devices, p)
	}
	im.mnt = r.t.TempDir()
	unmount, err := testmount.FileBacked(im.img, devices, im.mnt)
	if err != nil {
		r.t.Fatal(err)
	}
	im.unmount = func() {
		unmount()
		for _, w := range im.watches {
			w.Close()
		}
		// A readahead still running holds a watch a moment longer (it
		// saves the map as it lets go): the files are in use till then.
		for _, w := range im.watches {
			for deadline := time.Now().Add(10 * time.Second); ; {
				w.mu.Lock()
				refs := w.refs
				w.mu.Unlock()
				if refs == 0 {
					break
				}
				if time.Now().After(deadline) {
					r.t.Fatalf("%s still held 10 s after the unmount", w.Path)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		for _, o := range objs {
			o.Release()
		}
		im.watches, im.unmount = nil, nil
	}
	r.t.Cleanup(func() {
		if im.unmount != nil {
			im.unmount()
		}
	})
}

// read reads the whole file in 256 KiB pieces: every byte it gets must be
// right; it returns the bytes read and the first error.
func (im *rigImage) read(t *testing.T) (int64, error) {
	t.Helper()
	f, err := os.Open(filepath.Join(im.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	var off int64
	for off < int64(len(im.data)) {
		n, err := f.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], im.data[off:off+int64(n)]) {
			t.Fatalf("%s: wrong bytes at %d", im.name, off)
		}
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return off, err
		}
	}
	return off, nil
}

// checkMap verifies that every block the presence map (on disk and in
// memory) claims holds the blob's bytes. The cache file is read through
// the server's writer fd, which raises no events.
func (r *spaceRig) checkMap(im *rigImage) (claimed int) {
	r.t.Helper()
	for _, w := range im.watches {
		digest, _, _ := strings.Cut(filepath.Base(w.Path), ".") // <digest>.<fingerprint>
		blob, err := os.ReadFile(filepath.Join(r.blobs, digest))
		if err != nil {
			r.t.Fatal(err)
		}
		bits, _ := os.ReadFile(w.Path + ".present")
		w.mu.Lock()
		mem, fd := bytes.Clone(w.present), w.writeFD
		w.mu.Unlock()
		bits = bits[:min(len(bits), len(mem))] // without the whole-file check's record
		for i := range bits {
			bits[i] |= mem[i]
		}
		buf := make([]byte, 4096)
		for b := 0; b < len(bits)*8; b++ {
			if bits[b/8]&(1<<(b%8)) == 0 {
				continue
			}
			claimed++
			lo, hi := b*4096, min((b+1)*4096, len(blob))
			if lo >= len(blob) {
				continue
			}
			n, err := unix.Pread(fd, buf[:hi-lo], int64(lo))
			if err != nil || n != hi-lo || !bytes.Equal(buf[:n], blob[lo:hi]) {
				r.t.Fatalf("%s: the presence map claims block %d, which does not hold the blob's bytes (%d, %v)", im.name, b, n, err)
			}
		}
	}
	return claimed
}

func TestCacheLimitEvictsUnmountedOnly(t *testing.T) {
	const mib = 1 << 20
	r := newSpaceRig(t, t.TempDir(), 5*mib)
	a, b, c := r.image("a", 3*mib), r.image("b", 3*mib), r.image("c", 3*mib)

	r.mount(a)
	if _, err := a.read(t); err != nil {
		t.Fatal(err)
	}
	aPath := a.watches[0].Path
	a.unmount()

	// b does not fit beside a: a, no longer mounted, is evicted.
	r.mount(b)
	if _, err := b.read(t); err != nil {
		t.Fatalf("reading b under the limit: %v", err)
	}
	if _, err := os.Stat(aPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a's cache file is still there: %v", err)
	}
	if r.srv.Stats.Evicted.Load() != 1 || r.srv.Stats.EvictedBytes.Load() < 3*mib {
		t.Errorf("evicted %d files, %d bytes", r.srv.Stats.Evicted.Load(), r.srv.Stats.EvictedBytes.Load())
	}

	// c does not fit beside b, which is mounted: c's reads fail with EIO
	// past the limit, b stays whole and readable.
	r.mount(c)
	n, err := c.read(t)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading c over the limit beside a mounted b: %d bytes, %v, want EIO", n, err)
	}
	if _, err := b.read(t); err != nil {
		t.Fatalf("b after c was refused: %v", err)
	}
	if r.srv.Stats.NoSpace.Load() == 0 {
		t.Error("no refused write counted")
	}
	r.checkMap(c)
	if u, ok := r.srv.CacheUsage(); !ok || u.Bytes > 5*mib || u.Limit != 5*mib {
		t.Errorf("usage %+v (%v): want at most the limit", u, ok)
	}

	// Once b is unmounted, c is read whole.
	b.unmount()
	if _, err := c.read(t); err != nil {
		t.Fatalf("c after b was unmounted: %v", err)
	}
	if claimed := r.checkMap(c); claimed*4096 < 3*mib {
		t.Errorf("c's map claims %d blocks after a full read", claimed)
	}
}

// smallExt4 mounts a fresh ext4 filesystem of mb MiB on a loop device.
func smallExt4(t *testing.T, mb int) string {
	t.Helper()
	require.Host(t, require.Root)
	img := filepath.Join(t.TempDir(), "cache.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-O", "^has_journal", img, fmt.Sprintf("%dM", mb)).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop: %v %s", err, out)
	}
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if exec.Command("umount", dir).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("cannot unmount %s", dir)
	})
	return dir
}

func TestFullDiskDeniesWithEIOAndEvicts(t *testing.T) {
	const mib = 1 << 20
	dir := smallExt4(t, 12)
	r := newSpaceRig(t, dir, 0)
	old, big := r.image("old", 4*mib), r.image("big", 16*mib)

	r.mount(old)
	if _, err := old.read(t); err != nil {
		t.Fatal(err)
	}
	old.unmount()

	// big cannot fit on the disk: the old image's files are evicted to
	// make room, then reads fail with EIO (never wrong bytes) and the
	// presence map claims only blocks that were written.
	r.mount(big)
	n, err := big.read(t)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading 16 MiB through a 12 MiB cache: %d bytes, %v, want EIO", n, err)
	}
	if n < 4*mib {
		t.Errorf("only %d bytes read before the disk was full: room was not made", n)
	}
	if r.srv.Stats.NoSpace.Load() == 0 || r.srv.Stats.Evicted.Load() != 1 {
		t.Errorf("no space %d, evicted %d: want ENOSPC counted and the old image evicted", r.srv.Stats.NoSpace.Load(), r.srv.Stats.Evicted.Load())
	}
	t.Logf("read %d bytes before EIO; fetched %d bytes; %d writes refused", n, r.reg.Stats.FetchedBytes.Load(), r.srv.Stats.NoSpace.Load())
	// The rest of the file fails too, without fetching data that could
	// not be written (for a second after a pass that made no room).
	fetched := r.reg.Stats.FetchedBytes.Load()
	f, _ := os.Open(filepath.Join(big.mnt, "f"))
	defer f.Close()
	piece := make([]byte, 256<<10)
	failed := 0
	for off := n + int64(len(piece)); off < int64(len(big.data)); off += int64(len(piece)) {
		m, err := f.ReadAt(piece, off)
		if !bytes.Equal(piece[:m], big.data[off:off+int64(m)]) {
			t.Fatalf("wrong bytes at %d", off)
		}
		if errors.Is(err, syscall.EIO) {
			failed++
		}
	}
	if more := r.reg.Stats.FetchedBytes.Load() - fetched; failed == 0 || more > 1*mib {
		t.Errorf("%d more pieces failed and fetched %d more bytes: a full cache must fail reads without fetching", failed, more)
	}
	claimed := r.checkMap(big)
	if claimed == 0 || claimed*4096 >= 16*mib {
		t.Errorf("map claims %d blocks", claimed)
	}
	// The reads that fit keep working.
	buf := make([]byte, 1<<20)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, big.data[:1<<20]) {
		t.Fatalf("first MiB after the disk filled: %v", err)
	}
}
