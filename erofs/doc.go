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
// Supported are uncompressed images: flat (FLAT_PLAIN, FLAT_INLINE) and
// chunk-based files, including chunk indexes that point into extra devices
// ("blobs") listed in the device table. Blobs are supplied by a
// [BlobResolver], for example [DirBlobs]. Compressed inodes are recognised;
// reading their data fails with [ErrUnsupported]. Images that use
// incompatible features beyond ZERO_PADDING, COMPR_CFGS, CHUNKED_FILE and
// DEVICE_TABLE are refused by Open with [ErrUnsupported].
//
// [Image.ChunkTable] decodes erofsd's chunk digest table, which records the
// sha256 of every blob chunk an image references.
//
// [Check] walks a whole image like fsck: it verifies every reachable inode,
// directory, xattr and data address, link counts and the chunk table, and
// optionally reads all data and verifies blob chunks against their digests.
//
// Every error caused by malformed image bytes wraps [ErrCorrupt] and says
// where (nid, path, offset); nothing in this package panics or allocates
// memory sized by unvalidated input. An Image is safe for concurrent use.
package erofs
