package zcodec

import (
	"fmt"
	"testing"
)

// benchInput is what the builder feeds: text and binary halves.
func benchInput() []byte {
	return append(textData(1<<20), binaryData(1<<20)...)
}

// BenchmarkEncode measures input throughput, filling 4 KiB pclusters.
func BenchmarkEncode(b *testing.B) {
	in := benchInput()
	for _, cc := range codecCases() {
		b.Run(cc.name, func(b *testing.B) {
			enc, err := NewEncoder(cc.alg, cc.hc, cc.level)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 4096)
			b.SetBytes(int64(len(in)))
			var out int
			for b.Loop() {
				out = 0
				for src := in; len(src) > 0; {
					c, n, err := enc.EncodeDestSize(dst, src)
					if err != nil {
						b.Fatal(err)
					}
					out += n
					src = src[max(c, 1):]
				}
			}
			b.ReportMetric(float64(out)/float64(len(in)), "ratio")
		})
	}
}

// BenchmarkDecode measures output throughput of 4 KiB pclusters.
func BenchmarkDecode(b *testing.B) {
	in := benchInput()
	for _, cc := range codecCases() {
		if cc.level >= 0 {
			continue
		}
		b.Run(cc.name, func(b *testing.B) {
			enc, err := NewEncoder(cc.alg, cc.hc, cc.level)
			if err != nil {
				b.Fatal(err)
			}
			dec, err := NewDecoder(cc.alg, enc.Params())
			if err != nil {
				b.Fatal(err)
			}
			type pc struct {
				stream []byte
				n      int
			}
			var pcs []pc
			dst := make([]byte, 4096)
			for src := in; len(src) > 0; {
				c, n, err := enc.EncodeDestSize(dst, src)
				if err != nil || c == 0 {
					b.Fatal(fmt.Sprint("encode: ", err))
				}
				pcs = append(pcs, pc{pad(dst[:n], 4096), c})
				src = src[c:]
			}
			out := make([]byte, 1<<20)
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				for _, p := range pcs {
					if err := dec.Decode(out[:p.n], p.stream, true); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
