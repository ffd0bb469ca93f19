package cachefiles

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs/build"
	"github.com/erofsd/erofsd/internal/testutil/testimage"
	"github.com/erofsd/erofsd/ondemand"
	abi "github.com/erofsd/erofsd/ondemand/internal/cachefiles"
)

// BenchmarkServeReads measures the daemon's own cost with the kernel
// taken out: READ messages for a 64 MiB blob (1 MiB chunks, local store)
// go through decode, dispatch, chunk fetch, sha256 verification and the
// aligned writes into a fake cache object. Each iteration serves the
// whole blob into a fresh object in 128 KiB READs, as kernel readahead
// asks for it.
func BenchmarkServeReads(b *testing.B) {
	src := b.TempDir()
	data := make([]byte, 64<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big"), data, 0o644)
	blobDir := b.TempDir()
	img, _, res := testimage.Build(b, src, build.Options{BlobDir: blobDir})
	store, _ := blobstore.NewLocal(blobDir)
	reg := ondemand.NewRegistry()
	defer reg.Close()
	if _, err := reg.Register(ondemand.ImageSpec{FSID: "bench", Bootstrap: img, Store: store}); err != nil {
		b.Fatal(err)
	}
	digest := res.Blobs[0].Digest
	size := res.Blobs[0].Size
	const readSize = 128 << 10
	reads := int(size / readSize)

	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := newFakeKernel(1 + reads)
		k.discard = true
		s := newServer(k, reg, Config{})
		obj := uint32(i + 1)
		k.push(abi.EncodeOpenMsg(1, obj, int32(100+i), "erofs,bench", digest))
		for r := 0; r < reads; r++ {
			k.push(abi.EncodeReadMsg(uint32(2+r), obj, uint64(r*readSize), readSize))
		}
		ctx, cancel := context.WithCancel(context.Background())
		go s.Serve(ctx)
		<-k.done
		cancel()
		if s.Stats.ReadErrors.Load() != 0 {
			b.Fatal("READ errors")
		}
	}
	b.ReportMetric(float64(reads)*float64(b.N)/b.Elapsed().Seconds(), "READs/s")
}
