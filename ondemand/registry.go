package ondemand

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/sha256chain"
)

// Errors from the registry.
var (
	ErrExists     = errors.New("image already registered")
	ErrNotFound   = errors.New("image not registered")
	ErrBadName    = errors.New("bad fsid or domain id")
	ErrBadImage   = errors.New("image cannot be served")
	ErrImageInUse = errors.New("image is in use")
)

// Observer receives a measurement, such as a latency in seconds; a
// prometheus.Histogram is one.
type Observer interface{ Observe(float64) }

// Stats counts what the serving core did. Fields are updated atomically
// and may be read at any time.
type Stats struct {
	Fetches        atomic.Int64 // chunks fetched from blob stores
	ZeroChunks     atomic.Int64 // all-zero chunks written without a fetch
	FetchedBytes   atomic.Int64
	DigestFailures atomic.Int64 // chunks whose sha256 did not match
	Coalesced      atomic.Int64 // fills that waited for another fill of the same chunk
	// CoalescedFetches counts single store reads that fetched several
	// adjacent chunks.
	CoalescedFetches atomic.Int64
	// CopiedBytes counts the part of FetchedBytes copied in the kernel
	// from local blob files and verified where it landed (FileCopier).
	CopiedBytes atomic.Int64
	// FillsInFlight counts front-end fills of blob data running now
	// (kernel reads and their readahead); prefetch yields to them.
	FillsInFlight atomic.Int64
	// PrefetchBytesDone counts bytes of prefetch plans found in the
	// cache, fetched by prefetch or already there; PrefetchBytesLeft is
	// what the running prefetches still plan to fill.
	PrefetchBytesDone atomic.Int64
	PrefetchBytesLeft atomic.Int64
	// StartSetBytes counts start set bytes the start prefetch fetched;
	// StartSetHits kernel reads of start set chunks found fetched (seen
	// by front ends that see reads of cached data: fanotify);
	// StartSetLate kernel reads of start set chunks not fetched yet;
	// StartSetMisses kernel reads, of blobs with a start set, of chunks
	// outside it not fetched yet.
	StartSetBytes, StartSetHits, StartSetLate, StartSetMisses atomic.Int64

	lastFill atomic.Int64 // unix nanoseconds of the last fill's start or end
}

// ImageSpec describes an image to serve.
type ImageSpec struct {
	FSID      string          // the mount's fsid= (unique within its domain)
	DomainID  string          // optional: images of one domain share blob objects
	Bootstrap string          // path of the image file (metadata and chunk table)
	Store     blobstore.Store // where its blobs come from
	// Meta is the caller's own record of the image (the registry keeps
	// it and never looks inside).
	Meta any
}

// Image is a registered image.
type Image struct {
	Spec       ImageSpec
	Size       int64
	Blobs      []BlobInfo
	Registered time.Time

	file  *os.File
	blobs []*blobData
	start []erofs.StartExtent // the image's start set, if it records one
	open  atomic.Int32        // kernel objects currently open for it

	fscacheOnce sync.Once
	fscache     *erofs.FscacheReport
	fscacheErr  error
}

// FscacheLinux61 examines the image for Linux 6.1's fscache mode (see
// erofs.FscacheReport): once, the first time it is asked.
func (im *Image) FscacheLinux61(ctx context.Context) (*erofs.FscacheReport, error) {
	im.fscacheOnce.Do(func() {
		img, err := erofs.Open(im.file, erofs.WithSize(im.Size))
		if err != nil {
			im.fscacheErr = err
			return
		}
		defer img.Close()
		im.fscache, im.fscacheErr = img.FscacheLinux61(ctx)
	})
	return im.fscache, im.fscacheErr
}

// BlobInfo describes one blob of an image.
type BlobInfo struct {
	Digest blobstore.Digest
	Size   int64
	Chunks int
	// Name is the blob's cache object name: its digest and a fingerprint
	// of its size and chunk table ("<hex digest>.<32 hex>"). Cache
	// objects and files are named by it, so data verified against one
	// chunk table is never served to an image that describes the blob
	// otherwise (a digest in an image is a claim, not a fact).
	Name string
}

// OpenStores opens the image's blobs in its store now (for a registry,
// the HEAD that finds a blob's host and size), rather than on the first
// read of each blob: a cold read then costs one store round trip, the
// first one too. Blobs are opened concurrently; an open a read has under
// way is left to it, a local store is left alone (opening its file costs
// no round trip) and a store that fails is opened again by the next read
// that needs it.
func (im *Image) OpenStores(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	slots := make(chan struct{}, 8)
	if _, local := im.Spec.Store.(*blobstore.Local); local {
		return nil
	}
	for _, b := range im.blobs {
		for _, bs := range b.storeList() {
			if bs.store != im.Spec.Store {
				continue // another image's store, its credentials
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-slots }()
				if err := bs.openAhead(ctx, b); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// VolumeKey is the fscache volume the kernel uses for the image's mount.
func (im *Image) VolumeKey() string { return volumeKey(im.Spec.FSID, im.Spec.DomainID) }

func volumeKey(fsid, domain string) string {
	if domain != "" {
		return "erofs," + domain
	}
	return "erofs," + fsid
}

// Registry holds the images being served and resolves kernel object
// names to sources. It is safe for concurrent use.
type Registry struct {
	mu     sync.Mutex
	images map[string]*Image    // by volume key + "\x00" + fsid
	blobs  map[string]*blobData // by BlobInfo.Name, shared by the images that agree on it
	bufs   *bufferPool
	Stats  Stats
	// FetchLatency, if set before serving, observes the seconds each
	// chunk fetch from a blob store takes.
	FetchLatency Observer
	// MinFetch, if set before serving, is the least a fill fetches from
	// a blob store: the chunks after the ones asked for are fetched in
	// the same request until it covers MinFetch bytes (at most MaxRun).
	// Worth it for remote stores and small chunks, where round trips
	// cost more than bytes.
	MinFetch int64
	// ReadaheadWindow, if set before serving, is how far ahead of a
	// sequential reader background readahead keeps data fetched, in runs
	// of up to half of it and MaxRun (MaxStreamRun from stores that
	// stream); 0: the next chunk only; isolated reads get none.
	ReadaheadWindow int64
	// ReadaheadAcrossFiles, if set before serving, makes readahead go by
	// blob offsets, as erofsd did before it knew files: past the end of
	// the file read into the next files' chunks, the whole window from the
	// second access in a row. More bytes for fewer round trips when the
	// files a start reads sit side by side.
	ReadaheadAcrossFiles bool

	tmu     sync.Mutex
	targets map[string][]*attached // prefetch targets by volume key + "\x00" + blob name
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{images: map[string]*Image{}, blobs: map[string]*blobData{}, bufs: newBufferPool(1 << 20)}
}

func imageKey(fsid, domain string) string { return volumeKey(fsid, domain) + "\x00" + fsid }

// ValidName reports whether s can be an fsid or domain id: it becomes a
// sysfs directory name and part of fscache keys, so it is kept to a safe
// alphabet.
func ValidName(s string) bool {
	if s == "" || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Register opens and validates an image and makes it available to the
// kernel under its fsid.
func (r *Registry) Register(spec ImageSpec) (*Image, error) {
	if !ValidName(spec.FSID) {
		return nil, fmt.Errorf("%w: fsid %q (use 1-128 of A-Z a-z 0-9 - _ .)", ErrBadName, spec.FSID)
	}
	if spec.DomainID != "" && !ValidName(spec.DomainID) {
		return nil, fmt.Errorf("%w: domain id %q", ErrBadName, spec.DomainID)
	}
	// File runs are for readahead that stays in files.
	im, err := openImage(spec, !r.ReadaheadAcrossFiles)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := imageKey(spec.FSID, spec.DomainID)
	if _, ok := r.images[key]; ok {
		im.file.Close()
		return nil, fmt.Errorf("%w: fsid %q", ErrExists, spec.FSID)
	}
	// Blobs other images describe the same way are shared; this image's
	// store becomes one more place to read them from. The shared one keeps
	// the file runs and start spans of the image that registered it
	// first: they steer readahead and counters, never which bytes are
	// served.
	for i, b := range im.blobs {
		if shared, ok := r.blobs[b.name]; ok {
			im.blobs[i] = shared
			b = shared
		} else {
			r.blobs[b.name] = b
		}
		b.refs++
		b.addStore(spec.Store)
	}
	im.Registered = time.Now()
	r.images[key] = im
	return im, nil
}

// Lookup returns the registered image of fsid in domain ("" for none).
func (r *Registry) Lookup(fsid, domain string) (*Image, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	im, ok := r.images[imageKey(fsid, domain)]
	return im, ok
}

// UsesBootstrap reports whether a registered image is served from the
// image file at path.
func (r *Registry) UsesBootstrap(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, im := range r.images {
		if im.Spec.Bootstrap == path {
			return true
		}
	}
	return false
}

// releaseBlobs drops an image's hold on its blobs (under r.mu).
func (r *Registry) releaseBlobs(im *Image) error {
	var errs []error
	for _, b := range im.blobs {
		errs = append(errs, b.dropStore(im.Spec.Store))
		if b.refs--; b.refs == 0 {
			delete(r.blobs, b.name)
			errs = append(errs, b.close())
		}
	}
	return errors.Join(errs...)
}

func openImage(spec ImageSpec, fileRuns bool) (*Image, error) {
	// Only a regular file: opening a FIFO would wait for a writer, and a
	// device could be anything. O_NONBLOCK keeps the open itself from
	// waiting; it means nothing for the regular file that is read.
	f, err := os.OpenFile(spec.Bootstrap, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s is not a regular file (%v)", spec.Bootstrap, st.Mode().Type())
		}
		return nil, fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	im, err := describeImage(spec, f, fileRuns)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrBadImage, spec.Bootstrap, err)
	}
	return im, nil
}

func describeImage(spec ImageSpec, f *os.File, fileRuns bool) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	img, err := erofs.Open(f, erofs.WithSize(st.Size()))
	if err != nil {
		return nil, err
	}
	defer img.Close()
	info := img.Info()
	if info.BlockSize != BlockSize {
		return nil, fmt.Errorf("block size %d: on-demand serving needs %d", info.BlockSize, BlockSize)
	}
	im := &Image{Spec: spec, Size: st.Size(), file: f}
	devs := img.Devices()
	if len(devs) == 0 {
		return im, nil
	}
	if spec.Store == nil {
		return nil, fmt.Errorf("the image has %d blob(s) but no blob store was given", len(devs))
	}
	table, err := img.ChunkTable()
	if errors.Is(err, erofs.ErrNoChunkTable) {
		return nil, ErrNoChunkTable
	}
	if err != nil {
		return nil, err
	}
	states, err := img.ChunkStates()
	switch {
	case errors.Is(err, erofs.ErrNoChunkStates), errors.Is(err, erofs.ErrUnsupported):
		// A later version of the section is ignored, as older
		// daemons ignore this one: chunks are checked by digest.
		states = nil
	case err != nil:
		return nil, fmt.Errorf("chunk states: %w", err)
	}
	zeros := zeroDigests{}
	for _, d := range devs {
		digest, err := blobstore.ParseDigest(d.Tag)
		if err != nil {
			return nil, fmt.Errorf("device %d: tag is not a blob digest: %w", d.ID, err)
		}
		bd := &blobData{digest: digest, size: int64(d.Blocks) * BlockSize}
		var devStates []sha256chain.State
		bd.chunks, devStates = chunksOf(table, states, d.ID, zeros)
		if coversBlob(bd.chunks, devStates, bd.size) {
			bd.states = devStates
		}
		bd.name = blobName(digest, bd.size, bd.chunks, bd.states)
		im.blobs = append(im.blobs, bd)
		im.Blobs = append(im.Blobs, BlobInfo{Digest: digest, Size: bd.size, Chunks: len(bd.chunks), Name: bd.name})
	}
	if fileRuns {
		im.mapFileRuns(img)
	}
	switch im.start, err = img.StartSet(); {
	case errors.Is(err, erofs.ErrNoStartSet), errors.Is(err, erofs.ErrUnsupported):
		// A later version of the section is ignored, as older
		// daemons ignore the sections they do not know: it only
		// orders prefetch.
	case err != nil:
		return nil, fmt.Errorf("start set: %w", err)
	}
	for _, e := range im.start {
		b := im.blobs[e.Device-1]
		b.startSpans = append(b.startSpans, [2]int64{int64(e.BlkAddr) * BlockSize, (int64(e.BlkAddr) + int64(e.Blocks)) * BlockSize})
	}
	for _, b := range im.blobs {
		// Sorted (they do not overlap: StartSet checks), for inStart's
		// binary search on every kernel read.
		slices.SortFunc(b.startSpans, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
	}
	return im, nil
}

// StartBytes is the size of the image's start set: the blob bytes its
// workload reads first, which Prefetch with Start fetches ahead.
func (im *Image) StartBytes() int64 {
	var n int64
	for _, e := range im.start {
		n += int64(e.Blocks) * BlockSize
	}
	return n
}

// blobName names a blob's cache object by its digest and a fingerprint
// of how the image describes it: its size and every chunk's place,
// length and digest, and the chunks' states when they are used. Two images
// share a cache object only if they agree on all of that, so every byte
// in it was verified against the claims of each image reading it (and a
// chained blob's file, whose chunks were all checked as steps, needs no
// whole-file check). The fingerprint is 128 bits of sha256: finding
// another table with the same name is out of reach.
func blobName(digest blobstore.Digest, size int64, chunks []chunk, states []sha256chain.State) string {
	h := sha256.New()
	var b [8 + 8 + 8 + 32]byte
	if states != nil {
		// Its own domain: no chained description can read as an
		// unchained one.
		h.Write([]byte("chunk states\x00"))
	}
	binary.LittleEndian.PutUint64(b[:8], uint64(size))
	h.Write(b[:8])
	for i, c := range chunks {
		binary.LittleEndian.PutUint64(b[0:], uint64(c.off))
		binary.LittleEndian.PutUint64(b[8:], uint64(c.length))
		copy(b[16:], c.digest[:])
		h.Write(b[:16+32])
		if states != nil {
			h.Write(states[i][:])
		}
	}
	return digest.Hex() + "." + hex.EncodeToString(h.Sum(nil)[:16])
}

// Unregister removes an image. It fails with ErrImageInUse while the
// kernel still has objects of it open (the image is mounted).
func (r *Registry) Unregister(fsid, domain string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := imageKey(fsid, domain)
	im, ok := r.images[key]
	if !ok {
		return fmt.Errorf("%w: fsid %q", ErrNotFound, fsid)
	}
	if n := im.open.Load(); n > 0 {
		return fmt.Errorf("%w: %d kernel objects open", ErrImageInUse, n)
	}
	delete(r.images, key)
	return errors.Join(r.releaseBlobs(im), im.file.Close())
}

// Images lists the registered images, sorted by volume key and fsid.
func (r *Registry) Images() []*Image {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Image, 0, len(r.images))
	for _, im := range r.images {
		out = append(out, im)
	}
	slices.SortFunc(out, func(a, b *Image) int {
		return strings.Compare(imageKey(a.Spec.FSID, a.Spec.DomainID), imageKey(b.Spec.FSID, b.Spec.DomainID))
	})
	return out
}

// OpenObjects returns the number of kernel objects open for an image.
func (im *Image) OpenObjects() int { return int(im.open.Load()) }

// Object is a resolved kernel object: its data source and the image it
// belongs to. Release it when the kernel closes the object.
type Object struct {
	Source
	Image *Image
	Kind  string // "bootstrap" or "blob"

	reg    *Registry
	volume string      // the volume key it was resolved in
	blob   *blobSource // the source, for a blob
}

// ReadaheadMore hands out more of a blob's readahead window (see
// blobSource.ReadaheadMore); n == 0 for a bootstrap.
func (o *Object) ReadaheadMore() (int64, int64) {
	if o.blob == nil {
		return 0, 0
	}
	return o.blob.ReadaheadMore()
}

// KernelRead notes a read the kernel asked for (not erofsd's readahead or
// its own reads): for a blob whose image records a start set, its chunks
// count as start set hits, late reads or misses.
func (o *Object) KernelRead(off, n int64) {
	if o.blob != nil {
		o.blob.countStart(off, n)
	}
}

// Release drops the object's hold on its image and detaches its
// prefetch targets.
func (o *Object) Release() {
	o.detachAll()
	o.Image.open.Add(-1)
}

// Resolve maps the names the kernel uses for a cache object (volume key
// "erofs,<fsid or domain>", cookie key = fsid for an image, or a blob's
// device tag) to its source.
func (r *Registry) Resolve(volumeKey, cookieKey string) (*Object, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The image itself.
	for _, im := range r.images {
		if im.VolumeKey() == volumeKey && im.Spec.FSID == cookieKey {
			im.open.Add(1)
			return &Object{Source: newFileSource("image "+im.Spec.FSID, im.file, im.Size, r.bufs), Image: im, Kind: "bootstrap"}, nil
		}
	}
	// A blob of an image in this volume (a domain shares blobs).
	if im, b := r.findBlob(volumeKey, cookieKey); b != nil {
		im.open.Add(1)
		src := &blobSource{blobData: b, bufs: r.bufs, stats: &r.Stats, latency: r.FetchLatency, minFetch: min(r.MinFetch, MaxRun), window: r.ReadaheadWindow, acrossFiles: r.ReadaheadAcrossFiles}
		return &Object{Source: src, Image: im, Kind: "blob", reg: r, volume: volumeKey, blob: src}, nil
	}
	return nil, fmt.Errorf("%w: volume %q cookie %q", ErrUnknownObject, volumeKey, cookieKey)
}

// findBlob finds the blob a kernel object of volumeKey names (under
// r.mu): by its Name, as erofsd mounts name blobs. A bare digest (the
// device tag, as mounts made by erofsd before blob names had a table
// fingerprint name them) is accepted only while exactly one blob of the
// volume has that digest: otherwise whose data it holds is unknown.
func (r *Registry) findBlob(volumeKey, cookieKey string) (*Image, *blobData) {
	var byDigest *blobData
	var byDigestImage *Image
	ambiguous := false
	for _, im := range r.images {
		if im.VolumeKey() != volumeKey {
			continue
		}
		for _, b := range im.blobs {
			if b.name == cookieKey {
				return im, b
			}
			if b.digest.Hex() == cookieKey {
				if byDigest != nil && byDigest != b {
					ambiguous = true
				}
				byDigest, byDigestImage = b, im
			}
		}
	}
	if ambiguous {
		return nil, nil
	}
	return byDigestImage, byDigest
}

// Wants reports whether a registered image refers to the kernel object
// named volumeKey and cookieKey (its bootstrap or one of its blobs), as
// Resolve would find it; culling gives such objects up last.
func (r *Registry) Wants(volumeKey, cookieKey string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, im := range r.images {
		if im.VolumeKey() == volumeKey && im.Spec.FSID == cookieKey {
			return true
		}
	}
	_, b := r.findBlob(volumeKey, cookieKey)
	return b != nil
}

// Close unregisters everything regardless of open objects.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for k, im := range r.images {
		errs = append(errs, r.releaseBlobs(im), im.file.Close())
		delete(r.images, k)
	}
	return errors.Join(errs...)
}
