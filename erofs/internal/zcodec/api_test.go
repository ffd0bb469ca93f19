package zcodec

import (
	"errors"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for _, c := range []struct {
		spec  string
		alg   Algorithm
		hc    bool
		level int
		bad   bool
	}{
		{spec: "lz4", alg: LZ4, level: -1},
		{spec: "lz4hc", alg: LZ4, hc: true, level: -1},
		{spec: "lz4hc,12", alg: LZ4, hc: true, level: 12},
		{spec: "lzma", alg: LZMA, level: -1},
		{spec: "lzma,9", alg: LZMA, level: 9},
		{spec: "deflate,1", alg: Deflate, level: 1},
		{spec: "zstd", alg: Zstd, level: -1},
		{spec: "zstd,22", alg: Zstd, level: 22},
		{spec: "lz4,3", bad: true},
		{spec: "lz4hc,13", bad: true},
		{spec: "lzma,10", bad: true},
		{spec: "zstd,x", bad: true},
		{spec: "zstd,-1", bad: true},
		{spec: "gzip", bad: true},
		{spec: "", bad: true},
	} {
		alg, hc, level, err := ParseSpec(c.spec)
		if c.bad {
			if !errors.Is(err, ErrUnsupported) {
				t.Errorf("ParseSpec(%q): %v, want ErrUnsupported", c.spec, err)
			}
			continue
		}
		if err != nil || alg != c.alg || hc != c.hc || level != c.level {
			t.Errorf("ParseSpec(%q) = %v, %v, %d, %v", c.spec, alg, hc, level, err)
		}
		if _, err := NewEncoder(alg, hc, level); err != nil {
			t.Errorf("NewEncoder for %q: %v", c.spec, err)
		}
	}
}

func TestAlgorithmString(t *testing.T) {
	for alg, want := range map[Algorithm]string{LZ4: "lz4", LZMA: "lzma", Deflate: "deflate", Zstd: "zstd", 7: "algorithm(7)"} {
		if got := alg.String(); got != want {
			t.Errorf("%d: %q, want %q", alg, got, want)
		}
	}
}

func TestNewDecoderParams(t *testing.T) {
	for _, c := range []struct {
		alg Algorithm
		p   Params
		ok  bool
	}{
		{LZMA, Params{LZMADictSize: 4096}, true},
		{LZMA, Params{LZMADictSize: 4095}, false},
		{LZMA, Params{LZMADictSize: 8<<20 + 1}, false},
		{Zstd, Params{ZstdWindowLog: 9}, false},
		{Zstd, Params{ZstdWindowLog: 21}, false},
		{Zstd, Params{ZstdWindowLog: 10}, true},
		{Deflate, Params{DeflateWindowBits: 16}, false},
		{Deflate, Params{DeflateWindowBits: 9}, true},
		{4, Params{}, false},
	} {
		_, err := NewDecoder(c.alg, c.p)
		if (err == nil) != c.ok {
			t.Errorf("NewDecoder(%v, %+v): %v", c.alg, c.p, err)
		}
	}
}

// TestEncoderParams checks that encoders announce what their streams need
// and that NewEncoderFor sizes windows to the input bound.
func TestEncoderParams(t *testing.T) {
	for _, c := range []struct {
		alg      Algorithm
		maxInput int
		want     Params
	}{
		{LZ4, 0, Params{}},
		{LZMA, 0, Params{LZMADictSize: 8 << 20}},
		{LZMA, 100 << 10, Params{LZMADictSize: 128 << 10}},
		{LZMA, 1000, Params{LZMADictSize: 4096}},
		{Zstd, 0, Params{ZstdWindowLog: 20}},
		{Zstd, 300 << 10, Params{ZstdWindowLog: 19}},
		{Zstd, 100, Params{ZstdWindowLog: 10}},
		{Deflate, 0, Params{DeflateWindowBits: 15}},
	} {
		enc, err := NewEncoderFor(c.alg, false, -1, c.maxInput)
		if err != nil {
			t.Fatal(err)
		}
		if got := enc.Params(); got != c.want || enc.Algorithm() != c.alg {
			t.Errorf("%v, maxInput %d: %v %+v, want %+v", c.alg, c.maxInput, enc.Algorithm(), got, c.want)
		}
	}
}

// TestHostile feeds decoders inputs built to make them misbehave.
func TestHostile(t *testing.T) {
	// A Zstd frame announcing a 2 GiB window must be refused before any
	// allocation, as the kernel refuses it.
	huge := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8} // magic, FHD (no FCS), window descriptor 2^31
	big := append(huge, make([]byte, 16)...)
	for _, c := range []struct {
		name string
		alg  Algorithm
		src  []byte
		n    int
	}{
		{"all zeros", LZ4, make([]byte, 4096), 100},
		{"empty", LZMA, nil, 100},
		{"zstd huge window", Zstd, big, 4096},
		{"lzma bad props", LZMA, []byte{^byte(225), 0, 0, 0, 0, 0}, 10},
		{"lzma lc+lp>4", LZMA, []byte{^byte(4*9 + 3 + 45*0 + 9*2), 0, 0, 0, 0, 0}, 10},
		{"lz4 offset before start", LZ4, []byte{0x10, 'a', 0x05, 0x00, 0x50, 'a', 'a', 'a', 'a', 'a'}, 100},
		{"deflate garbage", Deflate, []byte{0xff, 0xff, 0xff}, 10},
	} {
		dec, err := NewDecoder(c.alg, Params{})
		if err != nil {
			t.Fatal(err)
		}
		if err := dec.Decode(make([]byte, c.n), c.src, true); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
		}
	}
}
