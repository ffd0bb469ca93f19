package zcodec_test

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/erofsd/erofsd/erofs/internal/zcodec"
)

// A builder fills 4 KiB pclusters with LZ4HC and stores each stream at the
// end of its pcluster behind zeros (0padding); a reader decodes it back to
// the extent's exact length.
func Example() {
	alg, hc, level, err := zcodec.ParseSpec("lz4hc,9")
	if err != nil {
		panic(err)
	}
	enc, err := zcodec.NewEncoder(alg, hc, level)
	if err != nil {
		panic(err)
	}
	dec, err := zcodec.NewDecoder(alg, enc.Params())
	if err != nil {
		panic(err)
	}

	data := []byte(strings.Repeat("EROFS pclusters hold compressed extents. ", 1000))
	var extents int
	for src := data; len(src) > 0; extents++ {
		pcluster := make([]byte, 4096)
		consumed, n, err := enc.EncodeDestSize(pcluster, src)
		if err != nil {
			panic(err)
		}
		if consumed == 0 {
			break // nothing fits usefully: store src[:4096] raw instead
		}
		// 0padding: the stream goes to the end of the pcluster.
		copy(pcluster[len(pcluster)-n:], pcluster[:n])
		clear(pcluster[:len(pcluster)-n])

		extent := make([]byte, consumed)
		if err := dec.Decode(extent, pcluster, true); err != nil {
			panic(err)
		}
		if !bytes.Equal(extent, src[:consumed]) {
			panic("mismatch")
		}
		src = src[consumed:]
	}
	fmt.Println(len(data), "bytes in", extents, "pcluster(s)")
	// Output: 41000 bytes in 1 pcluster(s)
}
