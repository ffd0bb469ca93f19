package erofs

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// TestUnifiedAddressing rewrites a --blobdev image so that its chunk
// indexes name device 0 with addresses inside the blob's mapped_blkaddr
// range (unified addressing, as the kernel's erofs_map_dev resolves it)
// and checks reader, Check and kernel agree.
func TestUnifiedAddressing(t *testing.T) {
	v := variants[3]
	src, im := buildVariant(t, v, treeOpts{})
	img := im.open(t)
	bfi, err := os.Stat(im.blobPath)
	if err != nil {
		t.Fatal(err)
	}
	const mapped = 100000 // far beyond the primary's blocks
	data := bytes.Clone(im.data)
	slotOff := int64(img.sb.DevtSlotOff) * disk.DeviceSlotSize
	slot, _ := disk.DecodeDeviceSlot(data[slotOff:])
	slot.MappedBlkAddr = mapped
	slot.Blocks = uint32(bfi.Size() / 4096)
	slot.Encode(data[slotOff:])
	rewritten := 0
	err = fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		ino, err := img.resolve("test", p, false)
		if err != nil || ino.layout() != disk.LayoutChunkBased {
			return err
		}
		c, err := img.chunkLayout(ino)
		if err != nil {
			return err
		}
		for k := int64(0); k < c.count; k++ {
			b := data[c.base+k*c.unit:]
			ci, _ := disk.DecodeChunkIndex(b)
			if ci.BlkAddr == disk.NullAddr || ci.DeviceID != 1 {
				continue
			}
			ci.DeviceID, ci.BlkAddr = 0, ci.BlkAddr+mapped
			ci.Encode(b)
			rewritten++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rewritten < 600 {
		t.Fatalf("rewrote %d chunk indexes", rewritten)
	}
	fixChecksum(data)

	uim := &image{path: filepath.Join(t.TempDir(), "unified.erofs"), data: data, blobPath: im.blobPath}
	if err := os.WriteFile(uim.path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	uimg := uim.open(t)
	chunks, err := uimg.Chunks("size_100000")
	if err != nil || chunks[0].Device != 1 {
		t.Fatalf("Chunks: %+v %v", chunks[:1], err)
	}
	compareTree(t, uimg, src, v, false)
	if _, err := Check(context.Background(), bytes.NewReader(data), CheckOptions{Blobs: uim.resolver(t), VerifyData: true}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// A chunk that starts inside the mapped range but runs past its end.
	bad := bytes.Clone(data)
	slot.Blocks = uint32(chunks[len(chunks)-1].BlkAddr) // last chunk now crosses the end
	slot.Encode(bad[slotOff:])
	fixChecksum(bad)
	if _, err := Check(context.Background(), bytes.NewReader(bad), CheckOptions{Blobs: uim.resolver(t)}); !errors_Is(err, ErrCorrupt) {
		t.Fatalf("Check with a short mapped range: %v", err)
	}
	t.Run("kernel", func(t *testing.T) {
		requireKernelErofs(t)
		mnt := kernelMount(t, uim.path, uim.blobPath)
		compareTree(t, uimg, mnt, v, true)
	})
}

// TestConcurrentReads uses one Image from many goroutines (run with -race).
func TestConcurrentReads(t *testing.T) {
	src, im := buildVariant(t, variants[3], treeOpts{})
	img := im.open(t)
	want, err := os.ReadFile(filepath.Join(src, "size_100000"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := img.Open("size_100000")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ra := f.(interface {
		ReadAt([]byte, int64) (int, error)
	})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				off := int64((g*7919 + i*4093) % 90000)
				buf := make([]byte, 5000)
				if n, err := ra.ReadAt(buf, off); err != nil || !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("ReadAt(%d): %v", off, err)
				}
				if _, err := img.ReadDir("many"); err != nil {
					t.Error(err)
				}
				if _, err := img.Xattrs("hello.txt"); err != nil {
					t.Error(err)
				}
				if _, err := img.Stat("link_long"); err != nil {
					t.Error(err)
				}
				if _, err := img.ChunkTable(); !errors_Is(err, ErrNoChunkTable) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}
