package zcodec

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/ulikunitz/xz/lzma"
)

// Our MicroLZMA encoder and decoder against an independent LZMA1
// implementation, ulikunitz/xz: a classic .lzma file with the exact size
// in its header and no end marker is a 13-byte header followed by the
// LZMA1 stream MicroLZMA carries (first byte 0x00 instead of the NOT of
// the properties byte).

const lzmaHeaderLen = 13

// xzMicroLZMA compresses src into a MicroLZMA stream with ulikunitz/xz.
func xzMicroLZMA(t *testing.T, src []byte) []byte {
	var buf bytes.Buffer
	w, err := lzma.WriterConfig{
		Properties:   &lzma.Properties{LC: 3, LP: 0, PB: 2},
		DictCap:      max(len(src), lzma.MinDictCap),
		SizeInHeader: true,
		Size:         int64(len(src)),
	}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(src); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()[lzmaHeaderLen:]
	if out[0] != 0 {
		t.Fatalf("LZMA1 stream starts with %#x", out[0])
	}
	out[0] = ^lzmaEncProps.byte()
	return out
}

// xzDecode decodes a MicroLZMA stream to n bytes with ulikunitz/xz.
func xzDecode(t *testing.T, stream []byte, n int) []byte {
	hdr := make([]byte, lzmaHeaderLen)
	hdr[0] = ^stream[0]
	binary.LittleEndian.PutUint32(hdr[1:], MaxLZMADictSize)
	binary.LittleEndian.PutUint64(hdr[5:], uint64(n))
	classic := append(append(hdr, 0), stream[1:]...)
	r, err := lzma.NewReader(bytes.NewReader(classic))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ulikunitz/xz: %v", err)
	}
	return out
}

func TestLZMAAgainstXZ(t *testing.T) {
	dec, err := NewDecoder(LZMA, Params{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewEncoder(LZMA, false, -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range testInputs() {
		src := in.data[:min(len(in.data), 64<<10)]
		// Their stream, our decoder.
		got := make([]byte, len(src))
		if err := dec.Decode(got, xzMicroLZMA(t, src), true); err != nil || !bytes.Equal(got, src) {
			t.Errorf("%s: our decoder on ulikunitz/xz's stream: %v", in.name, err)
		}
		// Our stream, their decoder.
		dst := make([]byte, 4096)
		c, n, err := enc.EncodeDestSize(dst, src)
		if err != nil || c == 0 {
			continue
		}
		if got := xzDecode(t, dst[:n], c); !bytes.Equal(got, src[:c]) {
			t.Errorf("%s: ulikunitz/xz on our stream: wrong data", in.name)
		}
	}
}
