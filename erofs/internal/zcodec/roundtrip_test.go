package zcodec

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestRoundTrip compresses each input into consecutive pclusters, as the
// builder does, and checks every stream: it fits, does not start with
// 0x00, decodes exactly (behind zero padding) and only to its own length.
func TestRoundTrip(t *testing.T) {
	for _, cc := range codecCases() {
		for _, in := range testInputs() {
			for _, size := range []int{4096, 16384} {
				if testing.Short() && size != 4096 {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/%d", cc.name, in.name, size), func(t *testing.T) {
					t.Parallel()
					roundTrip(t, cc, in, size)
				})
			}
		}
	}
}

func roundTrip(t *testing.T, cc codecCase, in namedInput, size int) {
	enc, err := NewEncoder(cc.alg, cc.hc, cc.level)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder(cc.alg, enc.Params())
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, size)
	src := in.data
	for pc := 0; len(src) > 0; pc++ {
		consumed, n, err := enc.EncodeDestSize(dst, src)
		if err != nil {
			t.Fatalf("pcluster %d: %v", pc, err)
		}
		if n > len(dst) || consumed > len(src) || (consumed == 0) != (n == 0) {
			t.Fatalf("pcluster %d: consumed %d of %d, stream %d of %d", pc, consumed, len(src), n, len(dst))
		}
		if consumed == 0 {
			if in.compressible {
				t.Fatalf("pcluster %d: compressible input, nothing consumed", pc)
			}
			// The builder stores such data raw and moves on.
			src = src[min(len(dst), len(src)):]
			continue
		}
		if in.compressible && consumed < min(len(src), len(dst)) {
			t.Errorf("pcluster %d: compressible input, only %d bytes consumed into %d", pc, consumed, len(dst))
		}
		stream := dst[:n]
		if stream[0] == 0 {
			t.Fatalf("pcluster %d: stream starts with 0x00", pc)
		}
		checkDecode(t, dec, stream, src[:consumed], size)
		src = src[consumed:]
	}
}

// checkDecode decodes stream behind zero padding to want, and checks that
// one byte less or more is refused.
func checkDecode(t *testing.T, dec Decoder, stream, want []byte, size int) {
	t.Helper()
	got := make([]byte, len(want))
	if err := dec.Decode(got, pad(stream, size), true); err != nil {
		t.Fatalf("decode %d-byte stream to %d bytes: %v", len(stream), len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("decode %d-byte stream: wrong data", len(stream))
	}
	if len(stream) > 1 {
		if err := dec.Decode(make([]byte, len(want)), stream[:len(stream)-1], true); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode without the last byte: %v, want ErrCorrupt", err)
		}
	}
	// A MicroLZMA stream does not record its length: where the range
	// decoder's code is zero it decodes zero bits (0x00 literals) without
	// needing input, so a stream may also decode to a byte more or less.
	// The kernel, like our decoder, relies on the extent length from the
	// metadata. Every other format ends explicitly.
	if _, isLZMA := dec.(lzmaDecoder); isLZMA {
		return
	}
	if err := dec.Decode(make([]byte, len(want)+1), stream, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("decode to one byte more: %v, want ErrCorrupt", err)
	}
	if len(want) > 1 {
		if err := dec.Decode(make([]byte, len(want)-1), stream, true); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode to one byte less: %v, want ErrCorrupt", err)
		}
	}
}

// TestDecodeConcurrent shares one decoder per algorithm between goroutines
// (run it with -race): decoders are documented as safe for concurrent use.
func TestDecodeConcurrent(t *testing.T) {
	for _, alg := range []Algorithm{LZ4, LZMA, Deflate, Zstd} {
		t.Run(alg.String(), func(t *testing.T) {
			enc, err := NewEncoder(alg, false, -1)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := NewDecoder(alg, enc.Params())
			if err != nil {
				t.Fatal(err)
			}
			type pcluster struct{ stream, want []byte }
			var pcs []pcluster
			src := textData(40000)
			for len(src) > 0 {
				dst := make([]byte, 4096)
				c, n, err := enc.EncodeDestSize(dst, src)
				if err != nil || c == 0 {
					t.Fatalf("encode: %d, %v", c, err)
				}
				pcs = append(pcs, pcluster{dst[:n], src[:c]})
				src = src[c:]
			}
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := range 20 {
						p := pcs[(g+i)%len(pcs)]
						got := make([]byte, len(p.want))
						if err := dec.Decode(got, p.stream, true); err != nil || !bytes.Equal(got, p.want) {
							t.Errorf("goroutine %d: decode: %v", g, err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestRoundTripSmallWindow encodes more input than NewEncoderFor was told
// to expect: streams must keep within the smaller dictionary or window
// that Params announces, which the decoder built from Params enforces.
func TestRoundTripSmallWindow(t *testing.T) {
	for _, alg := range []Algorithm{LZMA, Zstd} {
		enc, err := NewEncoderFor(alg, false, -1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := NewDecoder(alg, enc.Params())
		if err != nil {
			t.Fatal(err)
		}
		// Text whose repeats lie further back than the window.
		src := append(textData(20000), textData(20000)...)
		dst := make([]byte, 16384)
		for pc := 0; len(src) > 0; pc++ {
			c, n, err := enc.EncodeDestSize(dst, src)
			if err != nil || c == 0 {
				t.Fatalf("%v: pcluster %d: %d, %v", alg, pc, c, err)
			}
			checkDecode(t, dec, dst[:n], src[:c], len(dst))
			src = src[c:]
		}
	}
	// And the other way round: a stream reaching 20000 bytes back is
	// refused by a decoder whose dictionary is smaller.
	enc, err := NewEncoder(LZMA, false, -1)
	if err != nil {
		t.Fatal(err)
	}
	src := append(textData(20000), textData(20000)...)
	dst := make([]byte, 16384)
	c, n, err := enc.EncodeDestSize(dst, src)
	if err != nil || c <= 20000 {
		t.Fatalf("encode: %d, %v", c, err)
	}
	small, err := NewDecoder(LZMA, Params{LZMADictSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if err := small.Decode(make([]byte, c), dst[:n], true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("4 KiB dictionary, stream with 20000-byte distances: %v, want ErrCorrupt", err)
	}
}
