package build

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// countingEncoder counts the calls and input bytes an Encoder is given.
type countingEncoder struct {
	zcodec.Encoder
	calls, input int
}

func (c *countingEncoder) EncodeDestSize(dst, src []byte) (int, int, error) {
	c.calls++
	c.input += len(src)
	return c.Encoder.EncodeDestSize(dst, src)
}

// TestCutSegmentBoundedWork checks what cutting a segment costs in
// compression calls where compressing is hopeless or repetitive, inputs
// a hostile tar or a layer of compressed files brings: incompressible
// data with big pclusters is not tried again at every block (that took
// a minute per MiB), and a run of zeros (a sparse tar entry) is
// compressed once per window length, not once per window.
func TestCutSegmentBoundedWork(t *testing.T) {
	random := make([]byte, maxExtent)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct {
		name      string
		spec      string
		pcluster  int
		data      []byte
		segments  int
		maxCalls  int
		wantPlain bool
	}{
		{"random, 1 MiB pclusters", "lz4hc", 1 << 20, random, 1, 32, true},
		{"random, 64 KiB pclusters", "lz4", 64 << 10, random, 1, 256, true},
		{"random, one-block pclusters", "lz4", blockSize, random, 1, maxExtent / blockSize, true},
		{"zeros, 16 segments", "lz4", blockSize, make([]byte, maxExtent), 16, 12, false},
		{"zeros, 16 segments, zstd", "zstd", 16 << 10, make([]byte, maxExtent), 16, 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := newZconfig(tc.spec, tc.pcluster)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := cfg.newEncoder()
			if err != nil {
				t.Fatal(err)
			}
			ce := &countingEncoder{Encoder: enc}
			l := &zlane{cfg: cfg, enc: ce, dst: make([]byte, 2*cfg.pcluster)}
			for s := range tc.segments {
				off := int64(s) * int64(len(tc.data))
				exts, err := l.cutSegment(tc.data, off, s == tc.segments-1)
				if err != nil {
					t.Fatal(err)
				}
				pos := off
				for _, e := range exts {
					if e.off != pos || e.plain != tc.wantPlain {
						t.Fatalf("extent %+v at %d: want plain %v, extents back to back", e, pos, tc.wantPlain)
					}
					pos += int64(e.length)
				}
				if pos != off+int64(len(tc.data)) {
					t.Fatalf("extents cover [%d, %d) of [%d, %d)", off, pos, off, off+int64(len(tc.data)))
				}
			}
			if ce.calls > tc.maxCalls {
				t.Errorf("%d compression calls over %d input bytes for %d bytes of data; want at most %d calls",
					ce.calls, ce.input, tc.segments*len(tc.data), tc.maxCalls)
			}
		})
	}
}

// TestCutSegmentIgnoresLaneHistory: a segment is cut the same on a fresh
// lane and on one that cut other segments before (with runs of zeros it
// remembers, and DEFLATE's and Zstd's fitters moved on), so that any lane
// may take any job and images stay reproducible.
func TestCutSegmentIgnoresLaneHistory(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	text := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefghij \n"[rng.IntN(12)]
		}
		return b
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	segment := func(parts ...[]byte) []byte {
		var s []byte
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	target := segment(text(300_000), make([]byte, 700_000), random(50_000), text(200_000), make([]byte, 1<<20), text(90_000))
	others := [][]byte{
		segment(random(200_000), text(500_000), make([]byte, 700_000)),
		segment(make([]byte, 1<<20), text(123_456)),
		segment(text(1<<20), make([]byte, 300_000), random(10_000)),
	}
	for _, c := range []struct {
		spec     string
		pcluster int
	}{{"lz4", 0}, {"lz4hc", 0}, {"deflate", 16 << 10}, {"zstd", 0}, {"lzma", 64 << 10}} {
		t.Run(c.spec, func(t *testing.T) {
			cfg, err := newZconfig(c.spec, c.pcluster)
			if err != nil {
				t.Fatal(err)
			}
			lane := func() *zlane {
				enc, err := cfg.newEncoder()
				if err != nil {
					t.Fatal(err)
				}
				return &zlane{cfg: cfg, enc: enc, dst: make([]byte, 2*cfg.pcluster)}
			}
			fresh, err := lane().cutSegment(target, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			used := lane()
			for i, o := range others {
				if _, err := used.cutSegment(o, int64(i)<<30, false); err != nil {
					t.Fatal(err)
				}
			}
			again, err := used.cutSegment(target, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(again) != len(fresh) {
				t.Fatalf("%d extents on a used lane, %d on a fresh one", len(again), len(fresh))
			}
			for i := range fresh {
				a, b := fresh[i], again[i]
				if a.off != b.off || a.length != b.length || a.plain != b.plain || a.sum != b.sum || !bytes.Equal(a.stream, b.stream) {
					t.Fatalf("extent %d: fresh lane %d+%d, used lane %d+%d", i, a.off, a.length, b.off, b.length)
				}
			}
		})
	}
}
