package fanotify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"

	"github.com/erofsd/erofsd/ondemand"
	"golang.org/x/sys/unix"
)

// copyStep bounds one copy_file_range call, so that the context is
// looked at between steps of a long copy.
const copyStep = 1 << 20

// CopyFrom copies [off, off+n) of src into the cache file in the kernel
// and makes present only what check verifies there (ondemand.FileCopier).
//
// Why this is safe: the copied bytes land in blocks that are not present,
// and reads of blocks not present raise events that are not allowed
// before the blocks are written and verified, so nobody reads them
// unverified. They are hashed where they landed (a read-only mapping of
// the cache file), not in src, which may change under the copy; the
// cache file has no writer but erofsd, and writes into the range wait
// for the copy to end (Watch.copying), so what check verified is what
// the blocks hold when they are marked present. Blocks check does not
// vouch for are punched out again; if erofsd dies first they stay not
// present, and are fetched again before anyone reads them.
func (b blockWriter) CopyFrom(ctx context.Context, src *os.File, off, n int64, check func(data []byte) [][2]int64) error {
	w := b.w
	w.writes.RLock() // Poison waits for the copy: the file is not truncated under the mapping
	defer w.writes.RUnlock()
	return w.stage(ctx, off, n, func(fd int) ([][2]int64, error) {
		return w.copyAndCheck(ctx, src, fd, off, n, check)
	})
}

// WriteStaged writes [off, off+n) as fill produces it, unverified, and
// makes it present only if fill vouches for it (ondemand.StagedWriter):
// a streamed chunk lands in the file while it arrives, and a reader
// waits only for the hash of its last piece, not for the write of the
// whole chunk after it. The bytes are safe for the reasons CopyFrom's
// are (the range counts as being copied). Unlike a copy it does not hold
// off Poison through the stream, which may wait on the network: each
// piece is written under the writes lock, and none once erofsd stops.
func (b blockWriter) WriteStaged(ctx context.Context, off, n int64, fill func(write func(p []byte, at int64) error) (bool, error)) error {
	w := b.w
	return w.stage(ctx, off, n, func(fd int) ([][2]int64, error) {
		write := func(p []byte, at int64) error {
			if at < off || at+int64(len(p)) > off+n {
				return fmt.Errorf("%s: staged write of [%d, %d) outside [%d, %d)", w.Path, at, at+int64(len(p)), off, off+n)
			}
			w.writes.RLock()
			defer w.writes.RUnlock()
			if w.isPoisoned() {
				return fmt.Errorf("%s: erofsd is stopping", w.Path)
			}
			return w.pwriteMakingRoom(ctx, fd, p, at)
		}
		ok, err := fill(write)
		if err != nil || !ok {
			return nil, err
		}
		return [][2]int64{{off, off + n}}, nil
	})
}

// stage registers [off, off+n) as being written unverified (w.copying),
// has produce write it through fd, keeps the ranges produce vouches for
// (marked present) and punches out the rest. A range with blocks present
// or being written is refused with ErrNotCopied, having written nothing.
func (w *Watch) stage(ctx context.Context, off, n int64, produce func(fd int) ([][2]int64, error)) error {
	if w.isPoisoned() {
		return fmt.Errorf("%s: erofsd is stopping", w.Path)
	}
	if off%ondemand.BlockSize != 0 || n <= 0 || n%ondemand.BlockSize != 0 || off+n > w.size {
		return fmt.Errorf("%s: copy of [%d, %d) not whole blocks of the file: %w", w.Path, off, off+n, ondemand.ErrNotCopied)
	}
	span := [2]int64{off, off + n}
	w.mu.Lock()
	fd := w.writeFD
	busy := fd < 0 || overlapsAny(w.copying, span) || overlapsAny(w.writing, span) || w.anyPresentLocked(off, n)
	if !busy {
		w.copying = append(w.copying, span)
	}
	w.mu.Unlock()
	if busy {
		return fmt.Errorf("%s: [%d, %d) written or being written: %w", w.Path, off, off+n, ondemand.ErrNotCopied)
	}
	defer w.endSpan(&w.copying, span)
	if err := w.s.reserve(ctx, n); err != nil {
		return fmt.Errorf("copying into %s at %d: %w", w.Path, off, err)
	}
	defer w.s.settle(n)
	produced := false
	defer func() {
		if !produced {
			// produce panicked (the handler recovers it): nothing of
			// the range is kept or counted.
			w.s.cache.used.Add(-n)
			w.dropExcept(fd, off, n, nil)
		}
	}()
	good, err := produce(fd)
	produced = true
	var kept int64
	for _, g := range good {
		kept += g[1] - g[0]
	}
	// What is not kept is dropped (its bytes are not verified) and
	// stops counting against the cache limit.
	w.s.cache.used.Add(kept - n)
	if dropErr := w.dropExcept(fd, off, n, good); dropErr != nil {
		w.s.log.WithError(dropErr).WithField("file", w.Path).Warn("unverified copied blocks left in place (never marked present)")
	}
	if err != nil {
		return err
	}
	for _, g := range good {
		w.s.Stats.WrittenBytes.Add(g[1] - g[0])
		if err := w.markPresent(g[0], g[1]-g[0]); err != nil {
			return err
		}
	}
	return nil
}

// copyAndCheck copies the range, zero filling what src lacks, and hands
// the copy, mapped read-only through fd, to check; it returns the ranges
// check vouched for, clipped to the copy and block aligned.
func (w *Watch) copyAndCheck(ctx context.Context, src *os.File, fd int, off, n int64, check func([]byte) [][2]int64) (good [][2]int64, err error) {
	srcOff, dstOff := off, off
	for dstOff < off+n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k, err := unix.CopyFileRange(int(src.Fd()), &srcOff, fd, &dstOff, int(min(copyStep, off+n-dstOff)), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if dstOff == off && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)) {
				// Nothing copied: this pair of files cannot be copied
				// in the kernel.
				return nil, fmt.Errorf("copying into %s: %w: %w: %w", w.Path, err, ondemand.ErrNotCopied, errors.ErrUnsupported)
			}
			if ondemand.IsNoSpace(err) {
				w.s.Stats.NoSpace.Add(1)
				// The buffered path makes room and tries again.
				return nil, fmt.Errorf("copying into %s at %d: %w: %w", w.Path, dstOff, err, ondemand.ErrNotCopied)
			}
			return nil, fmt.Errorf("copying into %s at %d: %w", w.Path, dstOff, err)
		}
		if k == 0 {
			// src ends: the rest of the range is zeros (the blob's
			// last block past its end, if the blob's size is not a
			// whole number of blocks), whatever the file held there.
			if err := w.pwriteFD(fd, make([]byte, off+n-dstOff), dstOff); err != nil {
				return nil, err
			}
			break
		}
	}
	data, err := unix.Mmap(fd, off, int(n), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mapping %s at %d to check a copy: %w", w.Path, off, err)
	}
	defer unix.Munmap(data)
	defer func() {
		// A fault reading the mapping (the file shrank under it:
		// nothing in erofsd truncates a file while a copy holds
		// writes) fails the copy rather than the daemon; check guards
		// the goroutines it starts itself.
		if p := recover(); p != nil {
			good, err = nil, fmt.Errorf("checking a copy into %s at %d: %v", w.Path, off, p)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	for _, g := range check(data) {
		g[0], g[1] = max(g[0], off), min(g[1], off+n)
		if g[0] < g[1] && g[0]%ondemand.BlockSize == 0 && (g[1]%ondemand.BlockSize == 0 || g[1] == w.size) {
			good = append(good, g)
		}
	}
	return good, nil
}

// dropExcept punches the blocks of [off, off+n) outside good out of the
// file: bytes copied but not verified do not stay in the cache.
func (w *Watch) dropExcept(fd int, off, n int64, good [][2]int64) error {
	var errs []error
	drop := func(from, to int64) {
		if from < to {
			if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, to-from); err != nil {
				errs = append(errs, fmt.Errorf("punching [%d, %d) of %s: %w", from, to, w.Path, err))
			}
		}
	}
	slices.SortFunc(good, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	pos := off
	for _, g := range good {
		drop(pos, g[0])
		pos = max(pos, g[1])
	}
	drop(pos, off+n)
	return errors.Join(errs...)
}

// anyPresentLocked reports whether a block of [off, off+n) is present.
func (w *Watch) anyPresentLocked(off, n int64) bool {
	for b := off / ondemand.BlockSize; b*ondemand.BlockSize < off+n && b < w.size/ondemand.BlockSize; b++ {
		if w.present[b/8]&(1<<(b%8)) != 0 {
			return true
		}
	}
	return false
}
