package fanotify

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/ondemand"
	"golang.org/x/sys/unix"
)

// TestCopiedChunksCheckedWhereTheyLand: runs of a local store's blob are
// copied into the cache file in the kernel; a chunk whose bytes in the
// store are wrong is not made present, reads of it fail with EIO, and its
// copied bytes do not stay in the cache file. The chunks before it read
// right.
func TestCopiedChunksCheckedWhereTheyLand(t *testing.T) {
	src := t.TempDir()
	data := make([]byte, 16<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "f"), data, 0o644)
	m := newLazyMount(t, src, 1<<20, true) // one byte flipped in the middle of the blob
	_, err := os.ReadFile(filepath.Join(m.mnt, "f"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading a file with a corrupt chunk: %v, want EIO", err)
	}
	if m.reg.Stats.CopiedBytes.Load() == 0 {
		t.Fatal("no chunk was copied in the kernel: the test does not test the copy path")
	}
	if m.reg.Stats.DigestFailures.Load() == 0 {
		t.Fatal("no digest failure counted")
	}
	f, _ := os.Open(filepath.Join(m.mnt, "f"))
	defer f.Close()
	buf := make([]byte, 4<<20)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:len(buf)]) {
		t.Fatalf("the first chunks: %v", err)
	}

	// Every present block holds the blob's bytes; the blocks of the
	// corrupt chunk are not present and hold no copied bytes.
	w := m.watches[0]
	blob, err := os.ReadFile(filepath.Join(m.blobDir, blobstore.DigestOf(w.digest).Hex()))
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	fd, err := unix.Dup(w.writeFD)
	w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	bad := int64(len(blob) / 2)
	bad -= bad % (1 << 20)
	if w.has(bad, 1<<20) {
		t.Fatal("the corrupt chunk is present")
	}
	block := make([]byte, ondemand.BlockSize)
	for off := int64(0); off < w.size; off += ondemand.BlockSize {
		if _, err := unix.Pread(fd, block, off); err != nil {
			t.Fatal(err)
		}
		switch {
		case w.has(off, ondemand.BlockSize):
			want := make([]byte, ondemand.BlockSize)
			copy(want, blob[min(off, int64(len(blob))):])
			if !bytes.Equal(block, want) {
				t.Fatalf("present block at %d differs from the blob", off)
			}
		case off >= bad && off < bad+1<<20 && !allZeros(block):
			t.Fatalf("copied bytes of the corrupt chunk left in the cache file at %d", off)
		}
	}
}

// copyTarget mounts an 8 MiB random file lazily (1 MiB chunks) and reads
// its first byte, so that its watch has a writer fd; it returns the
// watch, the mountpoint, the file's bytes and its blob's.
func copyTarget(t *testing.T) (w *Watch, mnt string, data, blob []byte) {
	t.Helper()
	src := t.TempDir()
	data = make([]byte, 8<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "f"), data, 0o644)
	m := newLazyMount(t, src, 1<<20, false)
	f, err := os.Open(filepath.Join(m.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.ReadAt(make([]byte, 1), 0); err != nil { // the watch gets its writer
		t.Fatal(err)
	}
	w = m.watches[0]
	blob, err = os.ReadFile(filepath.Join(m.blobDir, blobstore.DigestOf(w.digest).Hex()))
	if err != nil {
		t.Fatal(err)
	}
	return w, m.mnt, data, blob
}

// TestCopyRefusedWhereWritten: a copy into blocks already present (or
// being written) is refused before anything is copied, so it can never
// put unverified bytes under blocks a reader may be served; a copy whose
// check vouches for nothing leaves its blocks absent and holding zeros.
func TestCopyRefusedWhereWritten(t *testing.T) {
	w, mnt, data, _ := copyTarget(t)
	bw := blockWriter{context.Background(), w}
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{0xAB}, int(w.size))
	other.Write(junk)
	defer other.Close()
	checked := false
	err = bw.CopyFrom(context.Background(), other, 0, 1<<20, func([]byte) [][2]int64 { checked = true; return nil })
	if !errors.Is(err, ondemand.ErrNotCopied) || checked {
		t.Fatalf("copy into present blocks: %v (checked %v), want ErrNotCopied before any check", err, checked)
	}
	// The last MiB: not read, not present.
	last := w.size - 1<<20
	if w.has(last, ondemand.BlockSize) {
		t.Skip("the tail was fetched ahead of the reader")
	}
	var seen []byte
	err = bw.CopyFrom(context.Background(), other, last, 1<<20, func(p []byte) [][2]int64 { seen = bytes.Clone(p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(seen, junk[:1<<20]) {
		t.Fatal("check did not see the copied bytes")
	}
	w.mu.Lock()
	present := w.anyPresentLocked(last, 1<<20)
	w.mu.Unlock()
	if present {
		t.Fatal("blocks the check did not vouch for are present")
	}
	got := make([]byte, 1<<20)
	w.mu.Lock()
	fd := w.writeFD
	w.mu.Unlock()
	if _, err := unix.Pread(fd, got, last); err != nil || !allZeros(got) {
		t.Fatalf("unverified copied bytes left in the cache file (%v)", err)
	}
	// The file still reads right.
	all, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("reading after the refused copies: %v", err)
	}
}

func allZeros(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// TestCopyFileShrinksUnderCheck: a cache file truncated while a copy's
// check reads it through the mapping (nothing in erofsd does that; an
// administrator might) fails the copy with an error instead of killing
// the daemon with SIGBUS, and marks nothing present.
func TestCopyFileShrinksUnderCheck(t *testing.T) {
	w, _, _, _ := copyTarget(t)
	last := w.size - 1<<20
	if w.has(last, ondemand.BlockSize) {
		t.Skip("the tail was fetched ahead of the reader")
	}
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.Write(make([]byte, w.size))
	err = blockWriter{context.Background(), w}.CopyFrom(context.Background(), other, last, 1<<20, func(p []byte) [][2]int64 {
		w.mu.Lock()
		fd := w.writeFD
		w.mu.Unlock()
		if err := unix.Ftruncate(fd, 0); err != nil {
			t.Errorf("truncating: %v", err)
		}
		if p[len(p)-1] == 0 { // faults: the page is past the end of the file now
			return [][2]int64{{last, last + 1<<20}}
		}
		return [][2]int64{{last, last + 1<<20}}
	})
	if err == nil {
		t.Fatal("a copy whose check faulted succeeded")
	}
	if w.has(last, ondemand.BlockSize) {
		t.Fatal("blocks of a faulted check are present")
	}
}

// TestStagedWrites: staged writes (a chunk streamed into the cache file
// while it arrives) are refused where blocks are present and outside
// their range; while staged, the bytes are in the file but their blocks
// not present (a reader's event is not answered with them); what fill
// does not vouch for is dropped (absent, zeros in the file); what it
// vouches for is present and read through the mount.
func TestStagedWrites(t *testing.T) {
	w, mnt, data, blob := copyTarget(t)
	bw := blockWriter{context.Background(), w}
	called := false
	err := bw.WriteStaged(context.Background(), 0, 1<<20, func(func([]byte, int64) error) (bool, error) { called = true; return true, nil })
	if !errors.Is(err, ondemand.ErrNotCopied) || called {
		t.Fatalf("staging over present blocks: %v (fill called %v), want ErrNotCopied before fill", err, called)
	}
	last := w.size - 1<<20
	if w.has(last, ondemand.BlockSize) {
		t.Skip("the tail was fetched ahead of the reader")
	}
	w.mu.Lock()
	fd := w.writeFD
	w.mu.Unlock()
	junk := bytes.Repeat([]byte{0xAB}, 1<<20)
	err = bw.WriteStaged(context.Background(), last, 1<<20, func(write func([]byte, int64) error) (bool, error) {
		if err := write(junk[:1<<19], last); err != nil {
			return false, err
		}
		if err := write(junk[:1<<19], last+1<<19); err != nil {
			return false, err
		}
		if err := write(junk[:4096], last+1<<20); err == nil {
			return false, errors.New("a staged write past the range was taken")
		}
		// Staged: in the file, not present.
		got := make([]byte, 4096)
		if _, err := unix.Pread(fd, got, last); err != nil || !bytes.Equal(got, junk[:4096]) {
			return false, fmt.Errorf("staged bytes not in the file: %v", err)
		}
		if w.has(last, ondemand.BlockSize) {
			return false, errors.New("staged blocks present before fill vouched for them")
		}
		return false, nil // the digest did not match
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if w.has(last, ondemand.BlockSize) {
		t.Fatal("blocks fill did not vouch for are present")
	}
	if _, err := unix.Pread(fd, got, last); err != nil || !allZeros(got) {
		t.Fatalf("unverified staged bytes left in the cache file (%v)", err)
	}
	// Staged right: present, and the mount reads the file's bytes.
	right := make([]byte, 1<<20)
	copy(right, blob[min(last, int64(len(blob))):])
	if err := bw.WriteStaged(context.Background(), last, 1<<20, func(write func([]byte, int64) error) (bool, error) {
		return true, write(right, last)
	}); err != nil {
		t.Fatal(err)
	}
	if !w.has(last, 1<<20) {
		t.Fatal("blocks fill vouched for are not present")
	}
	all, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("reading after the staged writes: %v", err)
	}
}

// TestStagedWritePoison: erofsd stopping for good (Poison) while a chunk
// is staged and another source's write of the same chunk waits for the
// staging: the write waits without holding Poison off, so the staged
// stream's next piece is refused, and all three end (they waited for
// each other for good when the write held the writes lock).
func TestStagedWritePoison(t *testing.T) {
	w, _, _, blob := copyTarget(t)
	last := w.size - 1<<20
	if w.has(last, ondemand.BlockSize) {
		t.Skip("the tail was fetched ahead of the reader")
	}
	right := make([]byte, 1<<20)
	copy(right, blob[min(last, int64(len(blob))):])
	bw := blockWriter{context.Background(), w}
	firstPiece, rest := make(chan struct{}), make(chan struct{})
	staged := make(chan error, 1)
	go func() {
		staged <- bw.WriteStaged(context.Background(), last, 1<<20, func(write func([]byte, int64) error) (bool, error) {
			if err := write(right[:1<<19], last); err != nil {
				return false, err
			}
			close(firstPiece)
			<-rest // the network delivers the rest later
			return true, write(right[1<<19:], last+1<<19)
		})
	}()
	<-firstPiece
	wrote := make(chan error, 1)
	go func() { wrote <- bw.WriteBlocks(right[:ondemand.BlockSize], last) }()
	time.Sleep(50 * time.Millisecond) // the write waits for the staging
	poisoned := make(chan error, 1)
	go func() { poisoned <- w.Poison() }()
	time.Sleep(50 * time.Millisecond) // Poison waits for the writes lock
	close(rest)
	for name, ch := range map[string]chan error{"Poison": poisoned, "the staged stream": staged, "the waiting write": wrote} {
		select {
		case err := <-ch:
			if name != "Poison" && err == nil {
				t.Errorf("%s succeeded after Poison", name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still waiting 10 s after Poison: they wait for each other", name)
		}
	}
	if w.has(last, ondemand.BlockSize) {
		t.Error("blocks present after Poison")
	}
}

// TestStagedWritePanic: a fill that panics (the handler recovers it)
// keeps nothing: its bytes are dropped from the file and from the cache
// accounting, and nothing is present.
func TestStagedWritePanic(t *testing.T) {
	w, _, _, _ := copyTarget(t)
	last := w.size - 1<<20
	if w.has(last, ondemand.BlockSize) {
		t.Skip("the tail was fetched ahead of the reader")
	}
	before := w.s.cache.used.Load()
	junk := bytes.Repeat([]byte{0xAB}, 1<<20)
	func() {
		defer func() { recover() }()
		blockWriter{context.Background(), w}.WriteStaged(context.Background(), last, 1<<20, func(write func([]byte, int64) error) (bool, error) {
			write(junk, last)
			panic("a store's reader")
		})
	}()
	if after := w.s.cache.used.Load(); after != before {
		t.Errorf("cache use %d -> %d after a fill that panicked", before, after)
	}
	w.mu.Lock()
	fd := w.writeFD
	w.mu.Unlock()
	got := make([]byte, 1<<20)
	if _, err := unix.Pread(fd, got, last); err != nil || !allZeros(got) {
		t.Errorf("staged bytes left in the cache file after a panic (%v)", err)
	}
	if w.has(last, ondemand.BlockSize) {
		t.Error("blocks present after a panic")
	}
}
