package fanotify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/erofsd/erofsd/ondemand"
	"golang.org/x/sys/unix"
)

// Watch is one cache file served lazily: a sparse file of the blob's
// size, its presence map ("<file>.present", one bit per 4 KiB block) and
// the source its data comes from.
//
// Every block written was verified against the image's chunk table, but
// a file is only read natively (unmarked) once it is complete and its
// whole content has been checked against the blob's sha256, the digest
// that names it; the map then records that check (a trailer holding the
// digest), so a restart need not repeat it.
type Watch struct {
	s      *Server
	Path   string
	size   int64
	digest [32]byte // the blob's sha256; zero: unknown, never unmarked
	src    ondemand.Source
	key    devIno

	mu       sync.Mutex
	flushMu  sync.Mutex   // serializes flushMap, and flushMap with closing the map
	writes   sync.RWMutex // held for reading by each write; Poison takes it to wait them out
	poisoned bool         // being made unreadable: reads fail with EIO
	present  []byte       // bitmap, one bit per block
	missing  int64        // whole blocks not present: complete at 0, without a scan per fill
	dirtyLo  int64        // bytes [dirtyLo, dirtyHi) of present not yet on disk (dirtyHi 0: none)
	dirtyHi  int64
	mapFile  *os.File // persisted bitmap
	writeFD  int      // a non-notifying fd of the cache file (a dup of an event fd), -1 before the first event
	marked   bool
	refs     int
	// copying holds the ranges being copied in (blockWriter.CopyFrom),
	// whose bytes are not verified yet; writing those of the writes
	// under way. Writes into a range being copied wait for the copy
	// (copyDone, signalled under mu), and copies are refused where
	// writes are under way or blocks are present: a copy never puts
	// unverified bytes over verified ones.
	copying  [][2]int64
	writing  [][2]int64
	copyDone sync.Cond
	// verified: the complete file matched digest. verifying: a check
	// runs. mismatch: a check failed; the file stays marked (its blocks
	// are right for the image's chunk table, its whole is not the blob).
	verified, verifying, mismatch bool
	// inherited: blocks were present when the watch began, written by
	// an earlier daemon (or left on disk) that this one cannot vouch
	// for: the file is checked whole once complete, whatever its
	// source proves of its own writes.
	inherited bool
}

// Watch serves the cache file at path (created sparse at size if missing,
// reset if its size differs) from src; digest is the blob's sha256, which
// the complete file must match before it is read natively. Name the file
// after the blob's digest and chunk table (ondemand.BlobInfo.Name): its
// blocks are verified against one table. Watching the same file again
// adds a reference; Close drops one.
func (s *Server) Watch(path string, size int64, digest [32]byte, src ondemand.Source) (*Watch, error) {
	if size <= 0 || size%ondemand.BlockSize != 0 {
		return nil, fmt.Errorf("%s: size %d is not a positive multiple of %d", path, size, ondemand.BlockSize)
	}
	// No eviction removes the file while it is being set up.
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	key := devIno{st.Dev, st.Ino}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.watches[key]; w != nil {
		w.mu.Lock()
		w.refs++
		w.mu.Unlock()
		return w, nil
	}
	w := &Watch{s: s, Path: path, size: size, digest: digest, src: src, key: key, writeFD: -1, refs: 1}
	w.copyDone.L = &w.mu
	if fd, ok := s.writers[path]; ok {
		w.writeFD = fd
		delete(s.writers, path)
	}
	if err := w.loadMap(f, st.Size); err != nil {
		return nil, err
	}
	if !w.verified {
		if err := unix.FanotifyMark(s.fd, unix.FAN_MARK_ADD, unix.FAN_PRE_ACCESS, unix.AT_FDCWD, path); err != nil {
			w.mapFile.Close()
			return nil, fmt.Errorf("marking %s: %w", path, err)
		}
		w.marked = true
	}
	s.watches[key] = w
	s.Stats.Watches.Add(1)
	return w, nil
}

// verifiedTrailer is the size of the record after the bitmap that says
// the complete file matched the blob's digest: the digest itself.
const verifiedTrailer = 32

// loadMap opens the presence map; a cache file of the wrong size, or one
// whose map is missing or of the wrong size, starts empty. A complete map
// followed by the blob's digest marks a file checked whole before.
func (w *Watch) loadMap(f *os.File, fileSize int64) error {
	blocks := w.size / ondemand.BlockSize
	mapSize := (blocks + 7) / 8
	mf, err := os.OpenFile(w.Path+".present", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := mf.Stat()
	if err != nil {
		mf.Close()
		return err
	}
	w.present = make([]byte, mapSize)
	w.missing = blocks
	if fileSize == w.size && (st.Size() == mapSize || st.Size() == mapSize+verifiedTrailer) {
		if _, err := mf.ReadAt(w.present, 0); err != nil {
			mf.Close()
			return err
		}
		w.countMissingLocked()
		w.inherited = w.missing < blocks
		if st.Size() > mapSize {
			var trailer [verifiedTrailer]byte
			if _, err := mf.ReadAt(trailer[:], mapSize); err != nil {
				mf.Close()
				return err
			}
			w.verified = trailer == w.digest && w.digest != [32]byte{} && w.completeLocked()
			if !w.verified {
				// A record of another digest, or a map not complete:
				// the check is done again when the file is complete.
				if err := mf.Truncate(mapSize); err != nil {
					mf.Close()
					return err
				}
			}
		}
	} else {
		// Start over: a sparse file of the right size, an empty map.
		if err := f.Truncate(0); err != nil {
			mf.Close()
			return err
		}
		if err := f.Truncate(w.size); err != nil {
			mf.Close()
			return err
		}
		if err := mf.Truncate(0); err != nil {
			mf.Close()
			return err
		}
		if err := mf.Truncate(mapSize); err != nil {
			mf.Close()
			return err
		}
		// Allocate the map now, so that recording a block never fails
		// for lack of space after its data was written (best effort:
		// not every filesystem can).
		unix.Fallocate(int(mf.Fd()), 0, 0, mapSize)
		// The new map's blocks count against the cache limit like the
		// data written later (until a scan counts them itself).
		var st unix.Stat_t
		if unix.Fstat(int(mf.Fd()), &st) == nil {
			w.s.cache.used.Add(st.Blocks * 512)
		}
	}
	w.mapFile = mf
	return nil
}

// Complete reports whether every block of the file is present.
func (w *Watch) Complete() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.completeLocked()
}

func (w *Watch) completeLocked() bool { return w.missing == 0 }

// countMissingLocked sets missing from the map, once it is loaded.
func (w *Watch) countMissingLocked() {
	w.missing = 0
	for b := range w.size / ondemand.BlockSize {
		if w.present[b/8]&(1<<(b%8)) == 0 {
			w.missing++
		}
	}
}

func (w *Watch) has(off, n int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	first, last := off/ondemand.BlockSize, min((off+n-1)/ondemand.BlockSize, w.size/ondemand.BlockSize-1)
	for b := first; b <= last; b++ {
		if w.present[b/8]&(1<<(b%8)) == 0 {
			return false
		}
	}
	return true
}

// serve makes [off, off+n) present, writing through the event's fd.
func (w *Watch) serve(ctx context.Context, eventFD int, off, n int64) error {
	if w.isPoisoned() {
		return fmt.Errorf("%s: erofsd is stopping", w.Path)
	}
	if n <= 0 || off >= w.size {
		return nil
	}
	if w.has(off, n) {
		// Present already (fetched ahead): keep readahead going, so a
		// sequential reader stays behind the data instead of catching
		// up with it.
		w.readahead(off, n)
		return nil
	}
	if err := w.ensureWriter(eventFD); err != nil {
		return err
	}
	w.mu.Lock()
	noWriter := w.writeFD < 0
	w.mu.Unlock()
	if noWriter {
		return fmt.Errorf("%s: no fd to write the cache file through", w.Path)
	}
	if w.s.cache.futile() {
		// The last eviction pass could not make room: the write would
		// fail, so do not fetch the data.
		w.s.Stats.NoSpace.Add(1)
		return fmt.Errorf("%s: %w", w.Path, errCacheFull)
	}
	// Start on what follows this range in the background (the source's
	// readahead window), so that a sequential reader finds it fetched.
	w.readahead(off, n)
	if err := w.src.Fill(ctx, off, n, blockWriter{ctx, w}); err != nil {
		return err
	}
	w.finishLater()
	return nil
}

// readahead fills what the source suggests after [off, off+n) when a
// worker is free and the watch has a writer, and returns that range; the
// watch stays open until the fill is done.
func (w *Watch) readahead(off, n int64) (int64, int64) {
	w.mu.Lock()
	noWriter := w.writeFD < 0
	w.mu.Unlock()
	if noWriter {
		return 0, 0 // nothing to write through before the first event's fd
	}
	s := w.s
	return s.pool.Readahead(w.src, off, n, w.has, w.hold, func(raOff, raN int64) {
		s.Stats.Readaheads.Add(1)
		// Not the event's context: the event is answered long before.
		ctx, cancel := context.WithTimeout(s.abort, s.timeout)
		defer cancel()
		if err := w.src.Fill(ctx, raOff, raN, blockWriter{ctx, w}); err == nil {
			// Not on this worker: the check of a file this fill
			// completed reads all of it, while requests wait for
			// workers.
			w.finishLater()
		}
		w.Close()
	})
}

// hold adds a reference for work that outlives the caller (a readahead,
// a fill past its timeout); false if the watch is closed. Close drops it.
func (w *Watch) hold() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.refs == 0 {
		return false
	}
	w.refs++
	return true
}

// ensureWriter keeps a dup of the first event fd: fds that fanotify
// opens for its listener do not generate events, so writes through them
// cannot wait on this very group.
func (w *Watch) ensureWriter(eventFD int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writeFD >= 0 || eventFD < 0 {
		return nil
	}
	fd, err := unix.FcntlInt(uintptr(eventFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("keeping a writer fd for %s: %w", w.Path, err)
	}
	w.writeFD = fd
	if w.s.journal != nil {
		w.s.journal.Hold(WriterName(w.Path), fd)
	}
	return nil
}

// finishLater runs finish in the background if the file is complete:
// it saves the map (an fdatasync) and reads the whole file, which the
// read that completed it need not wait for.
func (w *Watch) finishLater() {
	w.mu.Lock()
	start := w.completeLocked() && !w.verified && !w.verifying && !w.mismatch && w.writeFD >= 0
	w.mu.Unlock()
	if !start || !w.hold() {
		return
	}
	// The goroutine holds a reference: the caller's may go first.
	if !w.s.background(func() {
		defer w.Close()
		w.finish()
	}) {
		w.Close()
	}
}

// finish stops events for a complete file, once its whole content has
// matched the blob's digest: it is read at native speed from then on.
// A file that does not match stays marked (every block of it was
// verified against the image's chunk table, so reads stay right).
func (w *Watch) finish() {
	w.mu.Lock()
	if !w.completeLocked() || w.verifying || w.mismatch || w.poisoned {
		w.mu.Unlock()
		return
	}
	verified, inherited := w.verified, w.inherited
	w.verifying = !verified
	w.mu.Unlock()
	// A complete file is read without events from now on: its map must
	// say so on disk too, or a restart would mark it again.
	if err := w.flushMap(); err != nil {
		w.s.log.WithError(err).Warn("presence map not saved")
	}
	if !verified {
		var err error
		if p, ok := w.src.(ondemand.BlobProver); ok && !inherited && w.digest != [32]byte{} && p.ProvesBlob(w.digest) {
			// Every byte was written by this watch, checked as a
			// step of the blob's sha256: complete, it is the blob.
			if err = w.recordVerified(); err == nil {
				w.s.Stats.ProvenBytes.Add(w.size)
			}
		} else {
			err = w.verify()
		}
		w.mu.Lock()
		w.verifying = false
		switch {
		case err == nil:
			w.verified = true
		case errors.Is(err, errNotBlob):
			w.mismatch = true
		}
		w.mu.Unlock()
		if err != nil {
			if errors.Is(err, errNotBlob) {
				w.s.Stats.NotBlob.Add(1)
				w.s.log.WithError(err).WithField("file", w.Path).Warn("complete cache file is not its blob: left marked, served through events")
			} else {
				w.s.log.WithError(err).WithField("file", w.Path).Warn("checking a complete cache file")
			}
			return
		}
	}
	w.removeMark()
}

// errNotBlob is a complete cache file whose sha256 is not the blob's.
var errNotBlob = errors.New("content does not match the blob digest")

// verify reads the whole file through the writer fd (an fd fanotify
// opened: reading it raises no events) and checks its sha256 against the
// blob's digest, then records the check after the map.
func (w *Watch) verify() error {
	if w.digest == [32]byte{} {
		return fmt.Errorf("%s: %w (no digest to check against)", w.Path, errNotBlob)
	}
	w.mu.Lock()
	fd := -1
	var err error
	if w.writeFD >= 0 {
		fd, err = unix.Dup(w.writeFD) // stays open even if the watch closes
	}
	w.mu.Unlock()
	if err != nil {
		return err
	}
	if fd < 0 {
		return fmt.Errorf("%s: no fd to read the cache file through", w.Path)
	}
	defer unix.Close(fd)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < w.size; {
		n, err := unix.Pread(fd, buf[:min(int64(len(buf)), w.size-off)], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: reading at %d: %w", w.Path, off, err)
		}
		if n == 0 {
			return fmt.Errorf("%s: %w: file ends at %d", w.Path, errNotBlob, off)
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	w.s.Stats.VerifiedBytes.Add(w.size)
	if got := [32]byte(h.Sum(nil)); got != w.digest {
		return fmt.Errorf("%s: %w: sha256 %x, blob %x", w.Path, errNotBlob, got, w.digest)
	}
	return w.recordVerified()
}

// recordVerified records after the map that the complete file is the
// blob, so that a restart does not check it again.
func (w *Watch) recordVerified() error {
	w.flushMu.Lock() // the map file stays open through the write
	defer w.flushMu.Unlock()
	w.mu.Lock()
	mf, poisoned, mapSize := w.mapFile, w.poisoned, int64(len(w.present))
	w.mu.Unlock() // not held across the write: events take it
	if poisoned || mf == nil {
		return fmt.Errorf("%s: closed while checked", w.Path)
	}
	if _, err := mf.WriteAt(w.digest[:], mapSize); err != nil {
		mf.Truncate(mapSize)
		return fmt.Errorf("%s: recording its check: %w", w.Path, err)
	}
	return nil
}

// removeMark stops pre-content events for the file.
func (w *Watch) removeMark() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.marked {
		return
	}
	if err := unix.FanotifyMark(w.s.fd, unix.FAN_MARK_REMOVE, unix.FAN_PRE_ACCESS, unix.AT_FDCWD, w.Path); err == nil || errors.Is(err, unix.ENOENT) {
		w.marked = false
	}
}

// Poison makes an incomplete cache file unreadable before the group goes
// away for good: without a listener the kernel would let readers see its
// holes as zeros, while reads past the end of a truncated file fail with
// EIO. The cached blocks and the presence map are dropped. A complete
// file is left alone: mounts keep reading it without erofsd. Call it
// while Serve runs: the truncation itself raises an event that Serve
// allows, and reads racing with it are denied.
func (w *Watch) Poison() error {
	w.mu.Lock()
	if w.completeLocked() {
		w.mu.Unlock()
		return nil
	}
	w.poisoned = true
	w.mu.Unlock()
	// Writes in flight (a prefetch, a readahead) finish first; later
	// ones see poisoned and write nothing, so nothing re-extends the
	// file or marks blocks present after the truncation.
	// The lock is only a barrier: the truncation below raises an event
	// that a worker must answer, and a worker may be waiting to write.
	w.writes.Lock()
	w.mu.Lock()
	clear(w.present)
	w.missing = w.size / ondemand.BlockSize
	w.dirtyLo, w.dirtyHi = 0, 0
	w.mu.Unlock()
	w.writes.Unlock()
	err := os.Truncate(w.Path, 0)
	if e := w.mapFile.Truncate(0); err == nil {
		err = e
	}
	return err
}

func (w *Watch) isPoisoned() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.poisoned
}

// PoisonIncomplete poisons every watched file that is not complete (see
// Watch.Poison); call it when erofsd stops for good.
func (s *Server) PoisonIncomplete() (poisoned int, err error) {
	s.mu.Lock()
	watches := make([]*Watch, 0, len(s.watches))
	for _, w := range s.watches {
		watches = append(watches, w)
	}
	s.mu.Unlock()
	var errs []error
	for _, w := range watches {
		if !w.Complete() {
			poisoned++
			errs = append(errs, w.Poison())
		}
	}
	return poisoned, errors.Join(errs...)
}

// Close drops a reference; the last one unmarks the file and forgets it.
func (w *Watch) Close() error {
	// The last reference saves the map before taking the server's lock:
	// an fdatasync must not stall every other mount's events. (Others,
	// such as a readahead done with the watch, save nothing.)
	w.mu.Lock()
	lastRef := w.refs == 1
	w.mu.Unlock()
	if lastRef {
		if err := w.flushMap(); err != nil {
			w.s.log.WithError(err).Warn("presence map not saved: its blocks will be fetched again")
		}
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.mu.Lock()
	w.refs--
	last := w.refs == 0
	w.mu.Unlock()
	if !last {
		return nil
	}
	w.removeMark()
	delete(w.s.watches, w.key)
	w.s.Stats.Watches.Add(-1)
	w.s.cache.evictable() // its file may now be evicted
	w.flushMu.Lock()      // before w.mu, as flushMap takes them
	defer w.flushMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writeFD >= 0 {
		unix.Close(w.writeFD)
		w.writeFD = -1
		if w.s.journal != nil {
			w.s.journal.Drop(WriterName(w.Path))
		}
	}
	return w.mapFile.Close()
}

// blockWriter writes verified blocks into the cache file and records them
// as present (data first, then the map).
type blockWriter struct {
	ctx context.Context
	w   *Watch
}

// WriteBlocks writes p at off and then records its blocks as present.
// The blocks new to the file count against the cache limit. A write the
// filesystem refuses for lack of space evicts files of blobs no mount
// uses and is tried once more; a write that still fails records nothing
// (blocks partly written stay absent from the map, so they are fetched
// again), and the event is denied with EIO.
func (b blockWriter) WriteBlocks(p []byte, off int64) error {
	w := b.w
	w.writes.RLock()
	defer w.writes.RUnlock()
	if w.isPoisoned() {
		return fmt.Errorf("%s: erofsd is stopping", w.Path)
	}
	if off >= w.size {
		return nil
	}
	if off+int64(len(p)) > w.size {
		p = p[:w.size-off]
	}
	span := [2]int64{off, off + int64(len(p))}
	w.mu.Lock()
	for overlapsAny(w.copying, span) {
		// Wait for the copy (its I/O and hashing, bounded by its
		// context) without holding writes: a staged write takes them
		// per piece, and behind a pending Poison it would wait for us.
		w.mu.Unlock()
		w.writes.RUnlock()
		w.mu.Lock()
		for overlapsAny(w.copying, span) {
			w.copyDone.Wait()
		}
		w.mu.Unlock()
		w.writes.RLock()
		w.mu.Lock()
		if w.poisoned {
			w.mu.Unlock()
			return fmt.Errorf("%s: erofsd is stopping", w.Path)
		}
	}
	w.writing = append(w.writing, span)
	w.mu.Unlock()
	defer w.endSpan(&w.writing, span)
	added := w.missingBytes(off, int64(len(p)))
	if err := w.s.reserve(b.ctx, added); err != nil {
		return fmt.Errorf("writing %s at %d: %w", w.Path, off, err)
	}
	defer w.s.settle(added)
	w.mu.Lock()
	fd := w.writeFD
	w.mu.Unlock()
	if err := w.pwriteMakingRoom(b.ctx, fd, p, off); err != nil {
		w.s.cache.used.Add(-added)
		return err
	}
	w.s.Stats.WrittenBytes.Add(int64(len(p)))
	return w.markPresent(off, int64(len(p)))
}

// overlapsAny reports whether span overlaps one of spans.
func overlapsAny(spans [][2]int64, span [2]int64) bool {
	for _, sp := range spans {
		if sp[0] < span[1] && span[0] < sp[1] {
			return true
		}
	}
	return false
}

// endSpan removes span from *list (w.copying or w.writing) and wakes
// writes waiting for copies.
func (w *Watch) endSpan(list *[][2]int64, span [2]int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, sp := range *list {
		if sp == span {
			*list = append((*list)[:i], (*list)[i+1:]...)
			break
		}
	}
	w.copyDone.Broadcast()
}

// pwriteMakingRoom writes p at off through fd; if the filesystem has no
// room, it makes room from files no mount uses and tries once more.
func (w *Watch) pwriteMakingRoom(ctx context.Context, fd int, p []byte, off int64) error {
	err := w.pwriteFD(fd, p, off)
	if ondemand.IsNoSpace(err) {
		w.s.Stats.NoSpace.Add(1)
		if w.s.makeRoom(ctx, int64(len(p))) {
			err = w.pwriteFD(fd, p, off)
			if ondemand.IsNoSpace(err) {
				w.s.Stats.NoSpace.Add(1)
			}
		}
	}
	return err
}

func (w *Watch) pwriteFD(fd int, p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(fd, p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing %s at %d: %w", w.Path, off+int64(done), err)
		}
		if n <= 0 {
			return fmt.Errorf("writing %s at %d: short write", w.Path, off+int64(done))
		}
		done += n
	}
	return nil
}

func (w *Watch) markPresent(off, n int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.poisoned {
		// Poison clears the map once the writes under way are done; a
		// staged write commits without holding them off.
		return fmt.Errorf("%s: erofsd is stopping", w.Path)
	}
	first, last := off/ondemand.BlockSize, (off+n-1)/ondemand.BlockSize
	whole := w.size / ondemand.BlockSize
	for b := first; b <= last; b++ {
		if w.present[b/8]&(1<<(b%8)) == 0 && b < whole {
			w.missing--
		}
		w.present[b/8] |= 1 << (b % 8)
	}
	// The map on disk follows later (flushMap), after the data it
	// claims is on disk: written now, a power loss could leave it
	// claiming blocks that read back as zeros.
	lo, hi := first/8, last/8+1
	if w.dirtyHi == 0 {
		w.dirtyLo, w.dirtyHi = lo, hi
	} else {
		w.dirtyLo, w.dirtyHi = min(w.dirtyLo, lo), max(w.dirtyHi, hi)
	}
	return nil
}

// flushMap persists the presence bits set so far: it takes them, makes
// the cache file's data durable (fdatasync), then writes them. Bits set
// meanwhile wait for the next flush. A crash before the flush costs only
// refetching those blocks.
func (w *Watch) flushMap() error {
	// One flush at a time per watch, through to the map write: an older
	// snapshot must not land after a newer one, and Close must not close
	// the map under a flush.
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	lo, hi := w.dirtyLo, w.dirtyHi
	if hi == 0 || w.poisoned || w.writeFD < 0 {
		w.mu.Unlock()
		return nil
	}
	bits := bytes.Clone(w.present[lo:hi])
	w.dirtyLo, w.dirtyHi = 0, 0
	fd, err := unix.Dup(w.writeFD) // stays open through the sync even if the watch closes
	w.mu.Unlock()
	if err != nil {
		w.redirty(lo, hi)
		return err
	}
	err = unix.Fdatasync(fd)
	unix.Close(fd)
	if err == nil {
		w.mu.Lock()
		if !w.poisoned {
			_, err = w.mapFile.WriteAt(bits, lo)
		}
		w.mu.Unlock()
	}
	if err != nil {
		w.redirty(lo, hi)
		return fmt.Errorf("%s: persisting its presence map: %w", w.Path, err)
	}
	return nil
}

func (w *Watch) redirty(lo, hi int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirtyHi == 0 {
		w.dirtyLo, w.dirtyHi = lo, hi
	} else {
		w.dirtyLo, w.dirtyHi = min(w.dirtyLo, lo), max(w.dirtyHi, hi)
	}
}

// flushMaps persists the presence maps of every watch (see flushMap).
func (s *Server) flushMaps() {
	s.mu.Lock()
	watches := make([]*Watch, 0, len(s.watches))
	for _, w := range s.watches {
		watches = append(watches, w)
	}
	s.mu.Unlock()
	for _, w := range watches {
		if err := w.flushMap(); err != nil {
			s.log.WithError(err).Warn("presence map not saved: its blocks will be fetched again after a restart")
		}
	}
}
