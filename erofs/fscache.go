package erofs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/erofsd/erofsd/erofs/internal/disk"
)

// FscacheReport says whether Linux 6.1 reads an image right in fscache
// (cachefiles on-demand) mode, and why not if not.
//
// Linux before 6.2 handles an unmapped extent in fscache mode by
// zero-filling the whole rest of the read it is asked for
// (erofs_fscache_data_read's "count = len", fixed upstream by "erofs: get
// correct count for unmapped range in fscache mode"): a null chunk
// reference followed by mapped chunks of the same file reads those
// chunks as zeros whenever a readahead window starts in the hole, with no
// error. Holes with nothing mapped after them are harmless: a read never
// goes past the end of its file. The other parts of that read path serve
// our layouts right (a tail-packed block is copied for its own length, a
// mapped chunk is read for at most its own length, whatever the chunk
// size against the readahead window).
type FscacheReport struct {
	// Mountable is false when the kernel refuses the image outright
	// (features, block size, empty device tags): an error, not wrong
	// bytes.
	Mountable bool
	// HoleFiles counts regular files with a null chunk before a mapped
	// one; HoleFile names the first found.
	HoleFiles int
	HoleFile  string
	// CompressedInodes counts inodes with compressed data, which Linux
	// before 6.9 refuses to read in fscache mode (their lookup fails
	// with EOPNOTSUPP); CompressedInode names the first found.
	CompressedInodes int
	CompressedInode  string
	// Problems explains, one sentence each, what stands in the way.
	Problems []string
}

// Safe reports whether the image mounts and reads right.
func (r *FscacheReport) Safe() bool {
	return r.Mountable && r.HoleFiles == 0 && r.CompressedInodes == 0
}

// FscacheLinux61 examines the image for Linux 6.1's fscache mode: its
// features and device table, every regular file's chunk map, and
// compressed inodes (which fscache mode reads only from Linux 6.9 on). It
// walks the whole tree (directory loops in a corrupt image are cut, not
// followed) and reads metadata only.
func (img *Image) FscacheLinux61(ctx context.Context) (*FscacheReport, error) {
	if err := img.checkOpen(); err != nil {
		return nil, err
	}
	rep := &FscacheReport{Mountable: true}
	info := img.Info()
	if !info.Linux61Compatible() {
		rep.Mountable = false
		rep.Problems = append(rep.Problems, fmt.Sprintf("Linux 6.1 refuses the mount: incompat features %#x (it knows %#x) or block size %d (fscache mode needs 4096)",
			info.FeatureIncompat, uint32(disk.IncompatLinux61), info.BlockSize))
	}
	for _, d := range img.Devices() {
		if d.Tag == "" {
			rep.Mountable = false
			rep.Problems = append(rep.Problems, fmt.Sprintf("device %d has an empty tag, which fscache mode refuses", d.ID))
			break
		}
	}
	dirs := map[uint64]bool{}
	err := fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*Stat)
		if !ok {
			return fmt.Errorf("%s: no inode information", p)
		}
		if d.IsDir() && dirs[st.Nid] {
			return fs.SkipDir // a loop in a corrupt image
		}
		if st.Layout == disk.LayoutCompressedFull || st.Layout == disk.LayoutCompressedCompact {
			rep.CompressedInodes++
			if rep.CompressedInode == "" {
				rep.CompressedInode = path.Join("/", p)
			}
			if p == "." {
				rep.Mountable = false // the mount looks the root up
			}
		}
		if d.IsDir() {
			dirs[st.Nid] = true
			return nil
		}
		if !d.Type().IsRegular() || st.Layout != disk.LayoutChunkBased {
			return nil
		}
		chunks, err := img.Chunks(p)
		if errors.Is(err, ErrNotChunked) {
			return nil
		}
		if err != nil {
			return err
		}
		if holeBeforeData(chunks) {
			rep.HoleFiles++
			if rep.HoleFile == "" {
				rep.HoleFile = path.Join("/", p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("examining the image for fscache mode: %w", err)
	}
	if rep.CompressedInodes > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d inode(s) (first: %s) have compressed data, which Linux before 6.9 cannot read in fscache (on-demand) mode: looking them up fails with EOPNOTSUPP; mount through a block device or loop file, or build the image uncompressed",
			rep.CompressedInodes, rep.CompressedInode))
	}
	if rep.HoleFiles > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d file(s) (first: %s) have a sparse hole before data: Linux before 6.2 reads that data as zeros in fscache mode; rebuild with --holes zero-chunk (the default with --blob-dir) or serve it through fanotify",
			rep.HoleFiles, rep.HoleFile))
	}
	return rep, nil
}

// holeBeforeData reports whether a null chunk precedes a mapped one.
func holeBeforeData(chunks []FileChunk) bool {
	hole := false
	for _, c := range chunks {
		if c.Hole {
			hole = true
		} else if hole {
			return true
		}
	}
	return false
}
