package build

import (
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
