// Package zcodec holds the compressors and decompressors for EROFS
// compressed pclusters: LZ4 (and LZ4HC), MicroLZMA, raw DEFLATE and
// Zstandard, in the stream formats the Linux kernel's fs/erofs decodes.
//
// Decoders take one pcluster's stored bytes and must produce exactly the
// extent's decoded length, as the kernel requires for full (non-partial)
// decoding; anything else is reported as ErrCorrupt. They accept hostile
// input: memory is bounded by the output size and the configured window,
// and they never panic.
//
// Encoders are fixed-output ("destSize"): given a pcluster-sized buffer they
// consume the longest input prefix whose stream fits, because an EROFS
// pcluster is a whole number of blocks and every byte left empty is wasted.
// Streams never start with a 0x00 byte, so they can be placed at the end of
// a zero-padded pcluster (the 0padding layout) and found again by skipping
// the zeros.
//
// The encoders, by algorithm:
//   - LZ4 and LZ4HC are ports of liblz4's LZ4_compress_destSize and
//     LZ4_compress_HC_destSize (levels 1..9; 10..12 use the hash chain
//     with more attempts, not lz4hc's optimal parser). With erofs-utils
//     1.5 and liblz4 1.9.4 they write the same pclusters as mkfs.erofs,
//     byte for byte (TestMkfsIdentical).
//   - MicroLZMA is our own: liblzma's fast-mode parser over a hash chain,
//     stopping exactly at the pcluster's end. Its streams are about 10%
//     larger than liblzma's normal mode (mkfs.erofs's presets) would
//     write.
//   - DEFLATE and Zstd drive klauspost/compress and search for the
//     longest input prefix whose stream fits.
package zcodec
