package zcodec

import (
	"bytes"
	"testing"
)

// TestLZ4HCReplay checks that an LZ4HC encoder asked again for the same
// input into less room (as the builder retries a file's last pcluster
// one block smaller), which replays its last block's sequences, writes
// what a fresh encoder writes, and that it notices a changed input.
func TestLZ4HCReplay(t *testing.T) {
	inputs := map[string][]byte{
		"text":   textData(200000),
		"binary": binaryData(200000),
		"mixed":  append(textData(70000), append(make([]byte, 50000), binaryData(60000)...)...),
		"zeros":  make([]byte, 300000),
	}
	for name, in := range inputs {
		for _, level := range []int{3, 9, 12} {
			for _, size := range []int{65536, 16384} {
				enc, err := NewEncoder(LZ4, true, level)
				if err != nil {
					t.Fatal(err)
				}
				src := bytes.Clone(in)
				dst := make([]byte, size)
				if _, _, err := enc.EncodeDestSize(dst, src); err != nil {
					t.Fatal(err)
				}
				for _, smaller := range []int{size, size - 4096, size - 1, 4096, 100} {
					check := func(what string) {
						t.Helper()
						got := make([]byte, smaller)
						c, n, err := enc.EncodeDestSize(got, src)
						if err != nil {
							t.Fatal(err)
						}
						fresh, _ := NewEncoder(LZ4, true, level)
						want := make([]byte, smaller)
						wc, wn, _ := fresh.EncodeDestSize(want, src)
						if c != wc || n != wn || !bytes.Equal(got[:n], want[:wn]) {
							t.Fatalf("%s level %d into %d then %d (%s): consumed %d, %d bytes; fresh encoder %d, %d bytes", name, level, size, smaller, what, c, n, wc, wn)
						}
					}
					check("same input")
					// The same buffer, changed where the last block looked.
					src[1000] ^= 0x55
					check("changed input")
					// Back to the first call's size, to search again.
					if _, _, err := enc.EncodeDestSize(dst, src); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}
