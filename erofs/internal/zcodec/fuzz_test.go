package zcodec

import (
	"bytes"
	"errors"
	"testing"
)

// The decoders see hostile pclusters: they must never panic, never
// allocate beyond their bounds, and report anything they refuse as
// ErrCorrupt. A stream they accept must be reproducible: decoding it
// twice gives the same bytes.

// fuzzSeeds adds real streams from alg's encoder (with their exact
// decoded lengths) and some broken variants.
func fuzzSeeds(f *testing.F, alg Algorithm) {
	enc, err := NewEncoder(alg, false, -1)
	if err != nil {
		f.Fatal(err)
	}
	dst := make([]byte, 4096)
	for _, in := range [][]byte{textData(20000), binaryData(9000), make([]byte, 5000), []byte("a"), randomData(3000)} {
		consumed, n, err := enc.EncodeDestSize(dst, in)
		if err != nil {
			f.Fatal(err)
		}
		if consumed == 0 {
			continue
		}
		s := bytes.Clone(dst[:n])
		f.Add(s, uint32(consumed))
		f.Add(s[:len(s)/2], uint32(consumed))
		f.Add(append([]byte{0, 0, 0}, s...), uint32(consumed+7))
	}
}

func fuzzDecode(f *testing.F, alg Algorithm) {
	fuzzSeeds(f, alg)
	dec, err := NewDecoder(alg, Params{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src []byte, outLen uint32) {
		// Pclusters decode to at most a few MiB; keep fuzzing fast.
		n := int(outLen % (1 << 18))
		out := make([]byte, n)
		err := dec.Decode(out, src, true)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not wrapping ErrCorrupt: %v", err)
			}
			return
		}
		again := make([]byte, n)
		if err := dec.Decode(again, src, true); err != nil || !bytes.Equal(out, again) {
			t.Fatalf("second decode differs (err %v)", err)
		}
	})
}

func FuzzDecodeLZ4(f *testing.F)     { fuzzDecode(f, LZ4) }
func FuzzDecodeLZMA(f *testing.F)    { fuzzDecode(f, LZMA) }
func FuzzDecodeDeflate(f *testing.F) { fuzzDecode(f, Deflate) }
func FuzzDecodeZstd(f *testing.F)    { fuzzDecode(f, Zstd) }

// FuzzLZ4Legacy decodes without 0padding (the partial decoder).
func FuzzLZ4Legacy(f *testing.F) {
	fuzzSeeds(f, LZ4)
	f.Fuzz(func(t *testing.T, src []byte, outLen uint32) {
		err := lz4Decoder{}.Decode(make([]byte, outLen%(1<<16)), src, false)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error not wrapping ErrCorrupt: %v", err)
		}
	})
}

// FuzzLZ4RoundTrip compresses arbitrary data into arbitrary pcluster
// sizes with LZ4 (level 0) or LZ4HC (levels 1..12): every stream must fit,
// avoid a leading zero, and decode exactly.
func FuzzLZ4RoundTrip(f *testing.F) {
	f.Add(textData(10000), uint16(4096), uint8(0))
	f.Add(textData(10000), uint16(4096), uint8(9))
	f.Add(binaryData(3000), uint16(100), uint8(12))
	f.Add(make([]byte, 70000), uint16(40), uint8(4))
	f.Add([]byte("abcabcabcabcabcabcabcabcabcabc"), uint16(13), uint8(0))
	encs := []Encoder{newLZ4Encoder()}
	for level := 1; level <= LZ4HCMaxLevel; level++ {
		e, err := newLZ4HCEncoder(level)
		if err != nil {
			f.Fatal(err)
		}
		encs = append(encs, e)
	}
	f.Fuzz(func(t *testing.T, src []byte, size uint16, level uint8) {
		enc := encs[int(level)%len(encs)]
		dst := make([]byte, size)
		// Twice: the second call must not see the first one's tables.
		for range 2 {
			consumed, n, err := enc.EncodeDestSize(dst, src)
			if err != nil {
				t.Fatal(err)
			}
			if consumed == 0 {
				return
			}
			if n > len(dst) || dst[0] == 0 {
				t.Fatalf("stream %d bytes into %d, first %#x", n, len(dst), dst[0])
			}
			out := make([]byte, consumed)
			if err := lz4DecodeBlock(out, dst[:n]); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !bytes.Equal(out, src[:consumed]) {
				t.Fatal("wrong data")
			}
			src = src[consumed/2:]
		}
	})
}

// FuzzEncodeRoundTrip does the same for MicroLZMA (whose encoder takes
// symbols back when they overflow), DEFLATE and Zstd, with the decoders.
func FuzzEncodeRoundTrip(f *testing.F) {
	f.Add(textData(10000), uint16(4096), uint8(0))
	f.Add(binaryData(3000), uint16(100), uint8(1))
	f.Add(make([]byte, 70000), uint16(40), uint8(2))
	f.Add([]byte("abcabcabcabcabcabcabcabcabcabc"), uint16(13), uint8(0))
	algs := []Algorithm{LZMA, Deflate, Zstd}
	var encs []Encoder
	var decs []Decoder
	for _, alg := range algs {
		enc, err := NewEncoder(alg, false, -1)
		if err != nil {
			f.Fatal(err)
		}
		dec, err := NewDecoder(alg, enc.Params())
		if err != nil {
			f.Fatal(err)
		}
		encs, decs = append(encs, enc), append(decs, dec)
	}
	f.Fuzz(func(t *testing.T, src []byte, size uint16, which uint8) {
		i := int(which) % len(algs)
		dst := make([]byte, size)
		for range 2 {
			consumed, n, err := encs[i].EncodeDestSize(dst, src)
			if err != nil {
				t.Fatal(err)
			}
			if consumed == 0 {
				return
			}
			if n > len(dst) || dst[0] == 0 {
				t.Fatalf("%v: stream %d bytes into %d, first %#x", algs[i], n, len(dst), dst[0])
			}
			out := make([]byte, consumed)
			if err := decs[i].Decode(out, dst[:n], true); err != nil {
				t.Fatalf("%v: decode: %v", algs[i], err)
			}
			if !bytes.Equal(out, src[:consumed]) {
				t.Fatalf("%v: wrong data", algs[i])
			}
			src = src[consumed/2:]
		}
	})
}
