package zcodec

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
)

// Test inputs: deterministic, and each with its own character.

// textData is English-like text with a Zipf-ish word distribution.
func textData(n int) []byte {
	words := strings.Fields(`the of and to in is that for it as was with be by on not he this are or
		his from at which but have an they you were her she there been one all we their has would when
		if so no will more can out up about what into them some could than its time only new other
		filesystem compression block extent cluster kernel erofs image layer container registry lazy`)
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < n {
		w := words[int(float64(len(words))*r.Float64()*r.Float64())]
		b.WriteString(w)
		if r.IntN(12) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// binaryData looks like an executable's data: little-endian records with
// small, repeating field values and some noise.
func binaryData(n int) []byte {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = binary.LittleEndian.AppendUint32(b, uint32(r.IntN(64)))
		b = binary.LittleEndian.AppendUint32(b, 0x400000+uint32(len(b)&^15))
		b = binary.LittleEndian.AppendUint64(b, r.Uint64()&0xFF00FF)
	}
	return b[:n]
}

// randomData is incompressible.
func randomData(n int) []byte {
	r := rand.New(rand.NewPCG(5, 6))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// mixedData alternates compressible and incompressible stretches.
func mixedData(n int) []byte {
	t, rnd := textData(n), randomData(n)
	b := make([]byte, n)
	for i := 0; i < n; i += 3000 {
		src := t
		if i/3000%3 == 2 {
			src = rnd
		}
		copy(b[i:min(i+3000, n)], src[i:])
	}
	return b
}

type namedInput struct {
	name         string
	data         []byte
	compressible bool
}

func testInputs() []namedInput {
	return []namedInput{
		{"text", textData(300 << 10), true},
		{"binary", binaryData(200 << 10), true},
		{"random", randomData(64 << 10), false},
		{"zeros", make([]byte, 256<<10), true},
		{"mixed", mixedData(100 << 10), false},
		{"tiny", []byte{'x'}, false},
		{"short", []byte("hello, hello, hello, hello!"), false},
	}
}

// codecCase is one encoder configuration under test.
type codecCase struct {
	name  string
	alg   Algorithm
	hc    bool
	level int
}

func codecCases() []codecCase {
	return []codecCase{
		{"lz4", LZ4, false, -1},
		{"lz4hc", LZ4, true, -1},
		{"lz4hc3", LZ4, true, 3},
		{"lz4hc12", LZ4, true, 12},
		{"lzma", LZMA, false, -1},
		{"lzma0", LZMA, false, 0},
		{"deflate", Deflate, false, -1},
		{"deflate1", Deflate, false, 1},
		{"zstd", Zstd, false, -1},
		{"zstd19", Zstd, false, 19},
	}
}

// pad returns stream placed at the end of a pcluster of size bytes behind
// zeros, as 0padding stores it.
func pad(stream []byte, size int) []byte {
	p := make([]byte, size)
	copy(p[size-len(stream):], stream)
	return p
}
