package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/prefetchlist"
)

// writeCompressibleTree makes a tree with text, incompressible and zero
// files of various sizes, a duplicate and a file larger than a segment.
func writeCompressibleTree(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	text := func(n int) []byte {
		words := strings.Fields("the quick brown fox jumps over a lazy dog while erofs keeps its blocks compressed and small")
		var b bytes.Buffer
		for b.Len() < n {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(" \n"[rng.IntN(2)])
		}
		return b.Bytes()[:n]
	}
	files := map[string][]byte{
		"tiny":        []byte("hi\n"),
		"text":        text(300_000),
		"dup/text":    nil, // the same as text
		"random":      random(100_000),
		"zeros":       make([]byte, 1<<20),
		"small":       text(6000),
		"large":       append(text(segmentSize+777_777), random(9000)...),
		"mixed":       append(random(20_000), text(50_000)...),
		"exact/block": text(3 * blockSize),
	}
	files["dup/text"] = files["text"]
	writeFiles(t, dir, files)
	return dir, files
}

// checkFiles reads every file back through the Go reader and runs Check.
func checkFiles(t *testing.T, img []byte, files map[string][]byte, opts ...erofs.Option) {
	t.Helper()
	im, err := erofs.Open(bytes.NewReader(img), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for name, want := range files {
		got, err := fs.ReadFile(im, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: read %d bytes that differ from the %d written", name, len(got), len(want))
		}
	}
	if len(opts) == 0 {
		if _, err := erofs.Check(context.Background(), bytes.NewReader(img), erofs.CheckOptions{}); err != nil {
			t.Errorf("check: %v", err)
		}
	}
}

func TestCompressedRoundTrip(t *testing.T) {
	src, files := writeCompressibleTree(t)
	plain, _ := buildDir(t, src, Options{})
	for _, tc := range []struct {
		spec     string
		pcluster int
	}{
		{"lz4", 0},
		{"lz4hc,9", 0},
		{"lz4hc", 64 << 10},
		{"deflate", 0},
		{"zstd", 16 << 10},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.spec, tc.pcluster), func(t *testing.T) {
			img, res := buildDir(t, src, Options{Compression: tc.spec, PclusterSize: tc.pcluster})
			checkFiles(t, img, files)
			if len(img) >= len(plain)/2 {
				t.Errorf("compressed image %d bytes, uncompressed %d", len(img), len(plain))
			}
			// text, dup/text, zeros, large, mixed, exact/block and small
			// (which only shrinks inline).
			if res.CompressedFiles < 6 {
				t.Errorf("%d files compressed", res.CompressedFiles)
			}
			// All of the duplicate but its tail, which may be inline.
			if want := int64(len(files["text"])) * 9 / 10; res.ExtentDedupeSaved < want {
				t.Errorf("dedupe saved %d bytes, want at least %d", res.ExtentDedupeSaved, want)
			}
		})
	}
}

func TestCompressedDeterministic(t *testing.T) {
	src, _ := writeCompressibleTree(t)
	for _, opts := range []Options{
		{Compression: "lz4", PclusterSize: 16 << 10},
		// Its fixed-output search learns from earlier calls (reset per segment).
		{Compression: "zstd"},
	} {
		a, _ := buildDir(t, src, opts)
		for range 3 {
			if b, _ := buildDir(t, src, opts); !bytes.Equal(a, b) {
				t.Fatalf("%s: two builds of the same tree differ", opts.Compression)
			}
		}
		// With another number of lanes (one per CPU).
		for _, procs := range []int{1, 5} {
			old := runtime.GOMAXPROCS(procs)
			b, _ := buildDir(t, src, opts)
			runtime.GOMAXPROCS(old)
			if !bytes.Equal(a, b) {
				t.Fatalf("%s: a build with GOMAXPROCS=%d differs", opts.Compression, procs)
			}
		}
	}
}

// TestIncompressibleStaysPlain checks that files compression cannot
// shrink by a block keep the uncompressed layouts, byte for byte.
func TestIncompressibleStaysPlain(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	for name, n := range map[string]int{"small": 5000, "one-segment": 300_000, "two-segments": segmentSize + 5000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plain, _ := buildDir(t, dir, Options{})
	img, res := buildDir(t, dir, Options{Compression: "lz4"})
	if res.CompressedFiles != 0 {
		t.Errorf("%d files compressed", res.CompressedFiles)
	}
	// Only the superblock's compression feature bits may differ (and
	// so its checksum and the UUID derived from nothing else).
	if len(img) != len(plain) || !bytes.Equal(img[4096:], plain[4096:]) {
		t.Errorf("image %d bytes, uncompressed %d; data or metadata differ", len(img), len(plain))
	}
}

func TestTailPacking(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("tail packing "), 1000) // 13000 bytes
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	img, res := buildDir(t, dir, Options{Compression: "lz4"})
	if res.CompressedFiles != 1 || res.InlineTails != 1 {
		t.Fatalf("%d compressed, %d inline tails; want 1 and 1", res.CompressedFiles, res.InlineTails)
	}
	// Superblock and the inode block: the whole file went inline.
	if len(img) != 2*blockSize {
		t.Errorf("image is %d bytes, want 2 blocks", len(img))
	}
	checkFiles(t, img, map[string][]byte{"f": data})
}

func TestCompressionOptionErrors(t *testing.T) {
	for _, opts := range []Options{
		{Compression: "lz5"},
		{Compression: "lz4", PclusterSize: 5000},
		{Compression: "lz4", PclusterSize: 2 << 20},
		{PclusterSize: 8192},
		{Compression: "lz4", PclusterSize: 64 << 10, BlobDir: "x", ChunkSize: 16 << 10},
	} {
		if _, err := New(nil, opts); err == nil {
			t.Errorf("%+v: no error", opts)
		}
	}
}

// TestCompressedStartSet checks that in blob mode the pclusters of listed
// files go to the front of the blob, in list order, and are the start
// set.
func TestCompressedStartSet(t *testing.T) {
	src, files := writeCompressibleTree(t)
	blocksOf := func(list []string) []erofs.StartExtent {
		t.Helper()
		blobs := t.TempDir()
		img, res := buildDir(t, src, Options{Compression: "lz4", BlobDir: blobs,
			PrefetchList: &prefetchlist.List{Entries: prefetchlist.Files(list...)}})
		im, err := erofs.Open(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		ss, err := im.StartSet()
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Blobs) != 1 || ss[0].BlkAddr != 0 {
			t.Fatalf("%d blobs, start set %+v: want one blob, starting with the front", len(res.Blobs), ss)
		}
		return ss
	}
	text := blocksOf([]string{"/text"})
	both := blocksOf([]string{"/large", "/text"})
	// text's pclusters: fewer blocks than its bytes, more than none.
	n := int(text[0].Blocks)
	if n == 0 || n*blockSize >= len(files["text"]) {
		t.Errorf("start set of text: %+v", text)
	}
	total := 0
	for _, e := range both {
		total += int(e.Blocks)
	}
	if total <= n || both[0].Blocks <= text[0].Blocks {
		t.Errorf("start set of large and text %+v, of text alone %+v", both, text)
	}
}

// TestCompressedTruncatedTar: a tar that ends inside a file's data (its
// header promised more) fails the build, whichever segment it ends in.
func TestCompressedTruncatedTar(t *testing.T) {
	body := strings.Repeat("compressible ", (segmentSize+100_000)/13)
	data := makeTar(t, []tarEntry{reg("a", body), reg("b", "after")})
	for _, cut := range []int{2048, 1 << 20, segmentSize + 50_000} {
		if _, err := buildTar(t, data[:cut], Options{Compression: "lz4"}); !errors.Is(err, errShortFile) && !errors.Is(err, ErrBadTar) {
			t.Errorf("tar cut at %d: %v, want a short-file or bad-tar error", cut, err)
		}
	}
	if _, err := buildTar(t, data, Options{Compression: "lz4"}); err != nil {
		t.Fatalf("whole tar: %v", err)
	}
}

// TestCompressedLayers: each layer's new pclusters go into its own blob,
// an identical file in a later layer points at the earlier layer's
// pclusters, and everything reads back verified through both blobs.
func TestCompressedLayers(t *testing.T) {
	src, files := writeCompressibleTree(t)
	blobs := t.TempDir()
	out, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	b, err := New(out, Options{Compression: "lz4", PclusterSize: 16 << 10, BlobDir: blobs})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	// Layer 2 replaces text with the same bytes and adds random.
	for _, names := range [][]string{{"text", "zeros", "large"}, {"text", "random", "small"}} {
		if err := b.AddLayer(context.Background(), tarOf(t, src, names)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := b.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Blobs) != 2 || res.Blobs[0].Layer != 1 || res.Blobs[1].Layer != 2 {
		t.Fatalf("blobs %+v, want one per layer", res.Blobs)
	}
	if want := int64(len(files["text"])) * 9 / 10; res.ExtentDedupeSaved < want {
		t.Errorf("dedupe saved %d bytes, want at least %d (text again)", res.ExtentDedupeSaved, want)
	}
	out.Truncate(res.ImageSize)
	img, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, name := range []string{"text", "zeros", "large", "random", "small"} {
		want[name] = files[name]
	}
	checkFiles(t, img, want, erofs.WithBlobs(erofs.DirBlobs(blobs)), erofs.WithVerifiedBlobs())
}

// TestCompressedStartSetShared: a listed file whose extents are shared
// with an unlisted file stored before it (a tar's order) has those
// pclusters named in the start set where they are.
func TestCompressedStartSetShared(t *testing.T) {
	src, files := writeCompressibleTree(t)
	if err := os.WriteFile(filepath.Join(src, "copy"), files["text"], 0o644); err != nil {
		t.Fatal(err)
	}
	var list prefetchlist.List
	list.Add("/text", 0, 0)
	out, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	b, err := New(out, Options{Compression: "lz4", BlobDir: t.TempDir(), PrefetchList: &list})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	if err := b.AddTar(context.Background(), tarOf(t, src, []string{"copy", "random", "text"}), TarOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := b.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out.Truncate(res.ImageSize)
	img, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	im, err := erofs.Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := im.StartSet()
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, e := range ss {
		blocks += int(e.Blocks)
	}
	// All of text's pclusters but an inline tail: more than a quarter of
	// its size for this text, less than all of it.
	if blocks*blockSize < len(files["text"])/4 || blocks*blockSize >= len(files["text"]) {
		t.Errorf("start set %+v: %d blocks for a listed file of %d bytes", ss, blocks, len(files["text"]))
	}
}

// TestCompressedAddAfterFinish: adding to a compressed build after
// Finish or Abort fails instead of blocking on the stopped lanes.
func TestCompressedAddAfterFinish(t *testing.T) {
	src, _ := writeCompressibleTree(t)
	for _, end := range []string{"finish", "abort"} {
		f, err := os.Create(filepath.Join(t.TempDir(), "img"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(f, Options{Compression: "lz4"})
		if err != nil {
			t.Fatal(err)
		}
		if end == "finish" {
			if _, err := b.Finish(context.Background()); err != nil {
				t.Fatal(err)
			}
		} else {
			b.Abort()
		}
		done := make(chan error, 1)
		go func() { done <- b.AddDir(context.Background(), src) }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("AddDir after %s: no error", end)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("AddDir after %s: still blocked after 10 s", end)
		}
		f.Close()
	}
}

// TestZpipeAbortSkipsQueued: aborting a build ends the compression lanes
// without compressing the jobs still queued (nobody will store them):
// only the jobs the lanes hold when it aborts are compressed.
func TestZpipeAbortSkipsQueued(t *testing.T) {
	cfg, err := newZconfig("lzma", 0) // slow: the lanes cannot drain the queue first
	if err != nil {
		t.Fatal(err)
	}
	p := newZpipe(cfg)
	data := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(4, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	var jobs []*zjob
	for range min(24, p.maxPending) {
		j := &zjob{data: data, eof: true, done: make(chan struct{})}
		jobs = append(jobs, j)
		p.jobs <- j
	}
	p.abort()
	skipped := 0
	for _, j := range jobs {
		<-j.done
		if errors.Is(j.err, errFinished) {
			skipped++
		}
	}
	if skipped < len(jobs)/2 {
		t.Fatalf("%d of %d queued jobs skipped by abort", skipped, len(jobs))
	}
}
