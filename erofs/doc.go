// Package erofs reads and checks EROFS images.
//
// [Open] validates an image's superblock and root directory and returns an
// [Image], which implements [io/fs.FS] together with [io/fs.ReadDirFS],
// [io/fs.ReadFileFS], [io/fs.StatFS] and [io/fs.ReadLinkFS]. Paths are
// resolved inside the image: symbolic links are followed like the kernel
// does (the image root is "/", at most 40 links per lookup), except in the
// last element for Lstat, ReadLink and Xattrs. FileInfo.Sys returns a
// *[Stat] with the raw inode facts. Unlike [io/fs.ValidPath], path
// elements need not be valid UTF-8, because EROFS names are arbitrary
// bytes; the other ValidPath rules apply.
//
// Supported are flat (FLAT_PLAIN, FLAT_INLINE) and chunk-based files,
// including chunk indexes that point into extra devices ("blobs") listed
// in the device table, and compressed files (COMPRESSED_FULL and
// COMPRESSED_COMPACT indexes) mapped and decoded as Linux's fs/erofs
// does: LZ4, MicroLZMA, DEFLATE and Zstandard pclusters, plain
// (shifted and interlaced) pclusters, big pclusters, 0padding,
// ztailpacking, fragments in the packed inode and shared (deduplicated)
// pclusters. Compressed pclusters may live in blobs through the device
// table's unified addressing. An extent decodes to at most 12 MiB from a
// pcluster of at most 1 MiB, the bounds of current kernels; an open file
// keeps its last decoded extent, so sequential reads decode each extent
// once. Blobs are supplied by a [BlobResolver], for example [DirBlobs].
// Images that use incompatible features beyond ZERO_PADDING, COMPR_CFGS,
// CHUNKED_FILE, DEVICE_TABLE, ZTAILPACKING and FRAGMENTS, or Linux 6.15's
// encoded extent records, are refused with [ErrUnsupported], as are
// partially referenced pclusters of algorithms other than LZ4.
// [Image.Compression] describes a compressed file's layout.
//
// [Image.ChunkTable] decodes erofsd's chunk digest table, which records the
// sha256 of every blob chunk an image references.
//
// [Check] walks a whole image like fsck: it verifies every reachable inode,
// directory, xattr and data address, compressed index, link counts and
// the chunk table, and optionally reads all data (decoding every
// compressed extent) and verifies blob chunks against their digests.
//
// Every error caused by malformed image bytes wraps [ErrCorrupt] and says
// where (nid, path, offset); nothing in this package panics or allocates
// memory sized by unvalidated input. An Image is safe for concurrent use.
package erofs
