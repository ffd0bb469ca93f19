package ondemand

import (
	"context"
	"io"
	"testing"

	"github.com/erofsd/erofsd/blobstore"
)

// BenchmarkStreamedFill fills a 32 MiB blob of 1 MiB chunks into memory
// by fills of 8 MiB, each one streamed run (a registry's path, without
// the network): the serving core's own cost and pace of receiving,
// verifying and writing a run.
func BenchmarkStreamedFill(b *testing.B) {
	spec, _ := randomFileImage(b, 32<<20, 1<<20, 7)
	spec.Store = &rangeStore{spec.Store}
	reg := NewRegistry()
	defer reg.Close()
	im, err := reg.Register(spec)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(im.Blobs[0].Size)
	b.ResetTimer()
	for range b.N {
		obj, err := reg.Resolve("erofs,img1", im.Blobs[0].Digest.Hex())
		if err != nil {
			b.Fatal(err)
		}
		m := newMemObject(b, obj.Size())
		// Fills of one object write each chunk once: a new object each
		// round (a new cache file, as after eviction).
		obj.blob.written = nil
		for off := int64(0); off < obj.Size(); off += MaxRun {
			if err := obj.Fill(context.Background(), off, min(MaxRun, obj.Size()-off), m); err != nil {
				b.Fatal(err)
			}
		}
		obj.Release()
	}
}

// rangeStore serves a store's blobs as streams of ranges only, as
// registries do.
type rangeStore struct{ blobstore.Store }

func (s *rangeStore) Open(ctx context.Context, d blobstore.Digest) (blobstore.Blob, error) {
	b, err := s.Store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	return rangeBlob{b}, nil
}

type rangeBlob struct{ blobstore.Blob }

func (b rangeBlob) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(readerAt{ctx, b.Blob}, off, n)), nil
}
