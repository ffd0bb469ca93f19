package erofs

import (
	"fmt"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// zdecodeKey names a compressed pcluster. Dedupe lets many extents (of
// many inodes) share one, so Check remembers what it decoded from each:
// a hostile image cannot multiply the work by repeating a reference.
type zdecodeKey struct {
	dev  int
	pa   int64
	plen int64
	alg  uint8
}

// zdecoded is what a pcluster was decoded to: exact, the length of a
// whole (non-partial) decode, which no other length can also be; longest,
// the longest output decoded, of which any prefix (a partial reference)
// is valid too.
type zdecoded struct {
	exact, longest int64
}

// checkCompressed walks a compressed inode's extents from the start of
// the file to its end.
func (c *checker) checkCompressed(ino *inode, p string) error {
	if ino.isReg() {
		c.rep.CompressedFiles++
	}
	zc := &zcache{} // scratch for decoding
	var lookbacks zmapper
	info := func(zi *zinfo) error {
		lookbacks = zmapper{img: c.img, ino: ino, zi: zi}
		return c.checkIndexEnd(ino, zi)
	}
	err := c.img.walkExtents(ino, info, func(ext *zextent) error {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		c.rep.Extents++
		if err := lookbacks.checkLookbacks(ext); err != nil {
			return err
		}
		if err := c.checkExtent(ino, zc, ext); err != nil {
			return fmt.Errorf("nid %d extent [%d, %d): %w", ino.nid, ext.la, ext.la+ext.llen, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// checkIndexEnd checks that the index (and inline tail) of a compressed
// inode lies inside the blocks the superblock counts.
func (c *checker) checkIndexEnd(ino *inode, zi *zinfo) error {
	if end := zi.indexEnd(ino.size); end > uint64(c.primaryEnd) {
		return corruptf("nid %d: index ends at byte %d, beyond the image's %d blocks", ino.nid, end, c.img.sb.Blocks)
	}
	return nil
}

// checkExtent checks where an extent's pcluster lies and, with
// VerifyData, decodes it.
func (c *checker) checkExtent(ino *inode, zc *zcache, ext *zextent) error {
	img := c.img
	switch {
	case ext.kind == zFragment:
		if ino.nid == img.packedNid() {
			return corruptf("a fragment inside the packed inode")
		}
		// The bytes must lie in the packed inode, whose data Check
		// verifies once (checkPacked), however many files use it.
		_, err := img.fragmentSpan(ino, ext, ext.la, ext.llen)
		return err
	case ext.inline:
		if ext.pa+ext.plen > c.primaryEnd {
			return corruptf("inline pcluster [%d, %d) beyond the image's %d blocks", ext.pa, ext.pa+ext.plen, img.sb.Blocks)
		}
	default:
		if err := c.checkRange(ext.dev, ext.pa, c.roundBlock(ext.plen), ext.plen); err != nil {
			return err
		}
		if ext.dev != 0 {
			if err := c.checkBlobPcluster(ext); err != nil {
				return err
			}
		}
	}
	c.rep.EncodedBytes += ext.plen
	if !c.opts.VerifyData || (ext.dev != 0 && c.opts.Blobs == nil) {
		return nil
	}
	if ext.kind != zCompressed {
		// Raw bytes: reading them is the whole check, and each device
		// range is read once however many extents share it.
		return c.readRange(ext.dev, ext.pa, ext.plen)
	}
	key := zdecodeKey{dev: ext.dev, pa: ext.pa, plen: ext.plen, alg: ext.alg}
	done := c.decoded[key]
	if ext.partial && ext.llen <= done.longest || !ext.partial && ext.llen == done.exact {
		return nil
	}
	if _, err := img.decodeExtentData(ext, zc); err != nil {
		return err // the caller names the extent
	}
	done.longest = max(done.longest, ext.llen)
	if !ext.partial {
		done.exact = ext.llen
	}
	c.decoded[key] = done
	c.rep.ExtentsDecoded++
	return nil
}

// checkBlobPcluster checks that a pcluster in an extra device lies in a
// chunk of the chunk table (the builder packs blob pclusters into
// chunks) and, with VerifyData and Blobs, that chunk's sha256.
func (c *checker) checkBlobPcluster(ext *zextent) error {
	if !c.hasTable {
		return nil
	}
	img := c.img
	d, ok := chunkHolding(c.table, ext.dev, ext.pa, ext.plen, img.blkBits)
	if !ok {
		return corruptf("device %d: pcluster [%d, %d) is in no chunk of the chunk table", ext.dev, ext.pa, ext.pa+ext.plen)
	}
	if !c.opts.VerifyData || c.opts.Blobs == nil {
		return nil
	}
	key := [2]uint64{uint64(ext.dev), uint64(d.BlkAddr)}
	if c.verified[key] {
		return nil
	}
	if err := c.verifyDigest(d); err != nil {
		return err
	}
	c.verified[key] = true
	c.rep.ChunksVerified++
	return nil
}

// checkLookbacks checks that every lcluster the extent covers leads back
// to the extent's HEAD. The kernel maps each page it reads on its own,
// from that page's lcluster; Check (like sequential reads) maps extent
// starts only, so without this a NONHEAD entry pointing elsewhere would
// make the kernel read other bytes than Check decoded. One pass suffices:
// if each NONHEAD steps back by 1..(its distance to the HEAD), every walk
// from inside the extent ends at the HEAD.
func (m *zmapper) checkLookbacks(ext *zextent) error {
	zi := m.zi
	if zi.fragment && zi.tailHead == 0 {
		return nil // the whole file is one fragment: no index
	}
	head := uint64(ext.la) >> zi.lbits
	last := uint64(ext.la+ext.llen-1) >> zi.lbits
	for lcn := head + 1; lcn <= last; lcn++ {
		if err := m.load(lcn, false); err != nil {
			return err
		}
		if m.typ != disk.LclusterTypeNonhead {
			if lcn != last {
				return corruptf("nid %d: HEAD lcluster %d inside the extent [%d, %d)", m.ino.nid, lcn, ext.la, ext.la+ext.llen)
			}
			continue // the next extent's HEAD: bytes before its clusterofs look back one lcluster
		}
		if d := uint64(m.delta[0]); d == 0 || d > lcn-head {
			return corruptf("nid %d lcluster %d: lookback distance %d leaves the extent [%d, %d), whose HEAD is lcluster %d", m.ino.nid, lcn, d, ext.la, ext.la+ext.llen, head)
		}
	}
	return nil
}
