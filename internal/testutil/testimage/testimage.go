// Package testimage builds EROFS images for tests with erofs/build, so
// that tests across packages share one way of doing it.
package testimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/erofsd/erofsd/erofs/build"
)

// Write builds an image at out with opts, adding content with add (for
// example AddDir or AddLayer calls), and returns the build result; the
// file is truncated to the image size.
func Write(t testing.TB, out string, opts build.Options, add func(context.Context, *build.Builder) error) *build.Result {
	t.Helper()
	if opts.BlobDir != "" {
		if err := os.MkdirAll(opts.BlobDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := build.New(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	ctx := context.Background()
	if err := add(ctx, b); err != nil {
		t.Fatalf("building %s: %v", out, err)
	}
	res, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(res.ImageSize); err != nil {
		t.Fatal(err)
	}
	return res
}

// Build builds src, a directory or a tar file (plain, gzip or zstd), into
// a new image in a temporary directory with opts (set BlobDir for blob
// mode), and returns the image path, the paths of its blobs in device
// order, and the build result.
func Build(t testing.TB, src string, opts build.Options) (image string, blobs []string, res *build.Result) {
	t.Helper()
	image = filepath.Join(t.TempDir(), "image.erofs")
	res = Write(t, image, opts, func(ctx context.Context, b *build.Builder) error {
		if st, err := os.Stat(src); err == nil && st.IsDir() {
			return b.AddDir(ctx, src)
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		return b.AddTar(ctx, f, build.TarOptions{})
	})
	for _, bl := range res.Blobs {
		blobs = append(blobs, filepath.Join(opts.BlobDir, bl.Digest))
	}
	return image, blobs, res
}

// Retag rewrites the tag of device dev (1..N) in the device table of the
// image file at path, as a hostile image would name another image's blob,
// and recomputes the superblock checksum so the image still opens.
func Retag(t testing.TB, path string, dev int, tag string) {
	t.Helper()
	const (
		sbOff       = 1024
		slotSize    = 128
		tagSize     = 64
		blockSize   = 4096
		compatCsum  = 0x1
		offChecksum = 0x04
		offCompat   = 0x08
		offExtra    = 0x56
		offSlotOff  = 0x58
	)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, blockSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	sb := head[sbOff:]
	if extra := int(binary.LittleEndian.Uint16(sb[offExtra:])); dev < 1 || dev > extra || len(tag) > tagSize {
		t.Fatalf("retag: device %d of %d, tag of %d bytes", dev, extra, len(tag))
	}
	slot := int(binary.LittleEndian.Uint16(sb[offSlotOff:]))*slotSize + (dev-1)*slotSize
	if slot+slotSize > len(head) {
		t.Fatalf("retag: device table beyond block 0")
	}
	clear(head[slot : slot+tagSize])
	copy(head[slot:], tag)
	if binary.LittleEndian.Uint32(sb[offCompat:])&compatCsum != 0 {
		binary.LittleEndian.PutUint32(sb[offChecksum:], 0)
		sum := ^crc32.Checksum(head[sbOff:], crc32.MakeTable(crc32.Castagnoli))
		binary.LittleEndian.PutUint32(sb[offChecksum:], sum)
	}
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
}

// DropChunkStates cuts the chunk states off the end of the image at path,
// as a builder that records none (or an attacker) would leave it: its
// chunks are then checked by their digests alone.
func DropChunkStates(t testing.TB, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.LastIndex(data, []byte("EROFSDCS"))
	if at < 0 || at+64 > len(data) || at+64+32*int(binary.LittleEndian.Uint64(data[at+16:])) != len(data) {
		t.Fatalf("%s: no chunk states at its end", path)
	}
	if err := os.Truncate(path, int64(at)); err != nil {
		t.Fatal(err)
	}
}
