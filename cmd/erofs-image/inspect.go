package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/erofsd/erofsd/erofs"
	"github.com/erofsd/erofsd/internal/sha256chain"
)

type inspectReport struct {
	Image       string            `json:"image"`
	Size        int64             `json:"size"`
	UUID        string            `json:"uuid"`
	Label       string            `json:"label"`
	BlockSize   int               `json:"block_size"`
	Blocks      uint32            `json:"blocks"`
	Inodes      uint64            `json:"inodes"`
	BuildTime   *time.Time        `json:"build_time,omitempty"` // nil if BuildSec is not a date
	BuildSec    int64             `json:"build_time_seconds"`   // raw: any int64 (the kernel's time64_t)
	BuildNsec   uint32            `json:"build_time_nsec"`
	NoBuildDate bool              `json:"build_time_out_of_range"` // BuildSec is outside years 0-9999
	Compat      []string          `json:"features_compat"`
	Incompat    []string          `json:"features_incompat"`
	Linux61     bool              `json:"linux_6_1_compatible"`
	Fscache61   *inspectFscache   `json:"linux_6_1_fscache,omitempty"`
	RootNid     uint64            `json:"root_nid"`
	MetaBlkAddr uint32            `json:"meta_blkaddr"`
	XattrBlk    uint32            `json:"xattr_blkaddr"`
	Checksum    string            `json:"checksum,omitempty"`
	Counts      map[string]int    `json:"counts"`
	DataBytes   int64             `json:"data_bytes"`
	Devices     []inspectDevice   `json:"devices"`
	Chunks      []inspectChunk    `json:"chunk_table"`
	ChunkBytes  int64             `json:"chunk_table_bytes"`
	StartSet    []inspectExtent   `json:"start_set,omitempty"`
	ChunkStates int               `json:"chunk_states,omitempty"` // chunks whose blob state is recorded
	Compression *inspectZ         `json:"compression,omitempty"`
	Errors      map[string]string `json:"errors,omitempty"`
}

// inspectZ summarises compression: the algorithms the superblock makes
// available and how the compressed files are stored.
type inspectZ struct {
	Algorithms []string `json:"algorithms"`
	Files      int      `json:"files"`
	Size       int64    `json:"size"`    // decoded bytes of the compressed files
	Encoded    int64    `json:"encoded"` // bytes of their pclusters
	// Fscache is the plain statement for Linux before 6.9, empty when no
	// inode is compressed.
	Fscache string `json:"fscache,omitempty"`
	// FileList is every compressed file, largest first.
	FileList []inspectZFile `json:"file_list"`
}

type inspectZFile struct {
	Path         string   `json:"path"`
	Size         int64    `json:"size"`
	Encoded      int64    `json:"encoded"`
	Indexes      string   `json:"indexes"`
	Algorithms   []string `json:"algorithms"`
	Extents      int      `json:"extents"`
	Plain        int      `json:"plain_extents"`
	Inline       int      `json:"inline_extents"`
	Fragments    int      `json:"fragment_extents"`
	BigPclusters int      `json:"big_pclusters"`
}

// ratio is decoded bytes per encoded byte ("-" when nothing is encoded).
func ratio(size, encoded int64) string {
	if encoded == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(size)/float64(encoded))
}

// inspectFscache says whether Linux 6.1 reads the image right in fscache
// (cachefiles on-demand) mode, and why not.
type inspectFscache struct {
	Safe      bool     `json:"safe"`
	HoleFiles int      `json:"files_with_holes_before_data"`
	Problems  []string `json:"problems,omitempty"`
}

type inspectDevice struct {
	ID            int    `json:"id"`
	Tag           string `json:"tag"`
	Blocks        uint32 `json:"blocks"`
	MappedBlkAddr uint32 `json:"mapped_blkaddr"`
}

// inspectExtent is one extent of the start set: blob blocks the image's
// workload reads first.
type inspectExtent struct {
	Device  uint16 `json:"device"`
	BlkAddr uint32 `json:"blkaddr"`
	Blocks  uint32 `json:"blocks"`
}

type inspectChunk struct {
	Device  uint16 `json:"device"`
	BlkAddr uint32 `json:"blkaddr"`
	Length  uint32 `json:"length"`
	Digest  string `json:"digest"`
}

func cmdInspect(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", stderr)
	asJSON := fs.Bool("json", false, "print JSON, including the whole chunk table")
	maxChunks := fs.Int("chunks", 10, "chunk table entries to list in text mode (-1: all)")
	maxFiles := fs.Int("files", 10, "compressed files to list in text mode, largest first (-1: all)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: erofs-image inspect [--json] IMAGE\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return fmt.Errorf("%w: inspect needs one IMAGE", errUsage)
	}
	rep, err := inspect(ctx, pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printInspect(stdout, rep, *maxChunks, *maxFiles)
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%s: the image is damaged (run erofs-image check)", pos[0])
	}
	return nil
}

func inspect(ctx context.Context, path string) (*inspectReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	img, err := erofs.Open(f, erofs.WithSize(st.Size()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer img.Close()
	info := img.Info()
	rep := &inspectReport{
		Image: path, Size: st.Size(), UUID: formatUUID(info.UUID), Label: info.VolumeName,
		BlockSize: info.BlockSize, Blocks: info.Blocks, Inodes: info.Inodes,
		BuildTime: dateOf(info.BuildTimeSec, info.BuildTimeNsec), BuildSec: info.BuildTimeSec, BuildNsec: info.BuildTimeNsec,
		Linux61: info.Linux61Compatible(),
		RootNid: info.RootNid, MetaBlkAddr: info.MetaBlkAddr, XattrBlk: info.XattrBlkAddr,
		Counts:  map[string]int{},
		Devices: []inspectDevice{},
		Chunks:  []inspectChunk{},
		Errors:  map[string]string{},
	}
	rep.NoBuildDate = rep.BuildTime == nil
	rep.Compat, rep.Incompat = info.FeatureNames()
	if info.HasChecksum {
		rep.Checksum = fmt.Sprintf("%#08x", info.Checksum)
	}
	for _, d := range img.Devices() {
		rep.Devices = append(rep.Devices, inspectDevice{d.ID, d.Tag, d.Blocks, d.MappedBlkAddr})
	}
	table, err := img.ChunkTable()
	rep.sectionErr("chunk_table", err, erofs.ErrNoChunkTable)
	for _, c := range table {
		rep.Chunks = append(rep.Chunks, inspectChunk{c.Device, c.BlkAddr, c.Length, "sha256:" + hex.EncodeToString(c.Digest[:])})
		rep.ChunkBytes += int64(c.Length)
	}
	set, err := img.StartSet()
	rep.sectionErr("start_set", err, erofs.ErrNoStartSet)
	for _, e := range set {
		rep.StartSet = append(rep.StartSet, inspectExtent{e.Device, e.BlkAddr, e.Blocks})
	}
	states, err := img.ChunkStates()
	rep.sectionErr("chunk_states", err, erofs.ErrNoChunkStates)
	for _, st := range states {
		if st != (sha256chain.State{}) {
			rep.ChunkStates++
		}
	}
	if info.FeatureIncompat&erofsIncompatComprCfgs != 0 {
		rep.Compression = &inspectZ{Algorithms: info.CompressionAlgorithms()}
	}
	if err := countEntries(ctx, img, rep); err != nil {
		rep.Errors["walk"] = err.Error()
	} else if fr, err := img.FscacheLinux61(ctx); err != nil {
		rep.Errors["fscache"] = err.Error()
	} else {
		rep.Fscache61 = &inspectFscache{Safe: fr.Safe(), HoleFiles: fr.HoleFiles, Problems: fr.Problems}
		if fr.CompressedInodes > 0 {
			z := rep.compression(info)
			z.Fscache = fmt.Sprintf("%d inode(s) are compressed: Linux before 6.9 cannot read them in fscache (on-demand) mode, where looking them up fails with EOPNOTSUPP; mounts from a block device or a file read them", fr.CompressedInodes)
		}
	}
	if z := rep.Compression; z != nil {
		slices.SortStableFunc(z.FileList, func(a, b inspectZFile) int { return cmp.Compare(b.Size, a.Size) })
	}
	if len(rep.Errors) == 0 {
		rep.Errors = nil
	}
	return rep, nil
}

// The range of seconds RFC 3339 can show (years 0 to 9999, UTC).
var (
	minDateSec = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	maxDateSec = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
)

// dateOf returns the time sec, nsec stand for in UTC, or nil if it is
// outside years 0-9999: time.Time's MarshalJSON fails there, and beyond
// about ±292 billion years time.Time cannot even hold it.
func dateOf(sec int64, nsec uint32) *time.Time {
	if sec < minDateSec || sec > maxDateSec {
		return nil
	}
	t := time.Unix(sec, int64(nsec)).UTC() // nsec may carry into the next second
	if y := t.Year(); y < 0 || y > 9999 {
		return nil
	}
	return &t
}

// formatBuildTime shows a build time, flagging one that is not a date.
func formatBuildTime(r *inspectReport) string {
	if r.BuildTime != nil {
		return r.BuildTime.Format(time.RFC3339Nano)
	}
	s := fmt.Sprintf("%d s", r.BuildSec)
	if r.BuildNsec != 0 {
		s += fmt.Sprintf(" + %d ns", r.BuildNsec)
	}
	return s + " from the Unix epoch (out of range: not a date in years 0-9999)"
}

func countEntries(ctx context.Context, img *erofs.Image, rep *inspectReport) error {
	seen := map[uint64]bool{}
	return fs.WalkDir(img, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*erofs.Stat)
		if seen[st.Nid] {
			if d.IsDir() {
				// fs.WalkDir would go round forever.
				return fmt.Errorf("%s: directory nid %d reached twice (a directory loop: run erofs-image check)", p, st.Nid)
			}
			rep.Counts["hardlinks"]++
			return nil
		}
		seen[st.Nid] = true
		switch t := d.Type(); {
		case t.IsDir():
			rep.Counts["dirs"]++
		case t.IsRegular():
			rep.Counts["files"]++
			rep.DataBytes += info.Size()
			if st.Layout == layoutCompressedFull || st.Layout == layoutCompressedCompact {
				l, err := img.Compression(p)
				if err != nil {
					return err
				}
				z := rep.compression(img.Info())
				z.Files++
				z.Size += l.Size
				z.Encoded += l.Encoded
				z.FileList = append(z.FileList, inspectZFile{Path: "/" + p, Size: l.Size, Encoded: l.Encoded, Indexes: l.Indexes,
					Algorithms: l.Algorithms, Extents: l.Extents, Plain: l.Plain, Inline: l.Inline, Fragments: l.Fragments, BigPclusters: l.BigPclusters})
			}
		case t&fs.ModeSymlink != 0:
			rep.Counts["symlinks"]++
		case t&fs.ModeDevice != 0:
			rep.Counts["devices"]++
		default:
			rep.Counts["others"]++
		}
		return nil
	})
}

// compression returns the report's compression summary, made on first use.
func (r *inspectReport) compression(info erofs.Info) *inspectZ {
	if r.Compression == nil {
		r.Compression = &inspectZ{Algorithms: info.CompressionAlgorithms()}
	}
	return r.Compression
}

// Data layouts of compressed inodes (erofs.Stat.Layout).
const (
	layoutCompressedFull    = 1
	layoutCompressedCompact = 3
	erofsIncompatComprCfgs  = 0x2
)

func printCompression(w io.Writer, z *inspectZ, maxFiles int) {
	fmt.Fprintf(w, "compression   algorithms: %s\n", strings.Join(z.Algorithms, " "))
	if z.Files == 0 {
		fmt.Fprintf(w, "              no compressed files\n")
	} else {
		fmt.Fprintf(w, "              %d compressed files: %s in %s of pclusters (ratio %s)\n", z.Files, humanBytes(z.Size), humanBytes(z.Encoded), ratio(z.Size, z.Encoded))
	}
	for i, f := range z.FileList {
		if maxFiles >= 0 && i >= maxFiles {
			fmt.Fprintf(w, "  ... %d more (--files -1 or --json for all)\n", len(z.FileList)-i)
			break
		}
		var notes []string
		if f.Plain > 0 {
			notes = append(notes, fmt.Sprintf("%d plain", f.Plain))
		}
		if f.Inline > 0 {
			notes = append(notes, "tail inline")
		}
		if f.Fragments > 0 {
			notes = append(notes, "fragment")
		}
		if f.BigPclusters > 0 {
			notes = append(notes, fmt.Sprintf("%d big pclusters", f.BigPclusters))
		}
		extra := ""
		if len(notes) > 0 {
			extra = ", " + strings.Join(notes, ", ")
		}
		algs := strings.Join(f.Algorithms, "+")
		if algs == "" {
			algs = "stored raw"
		}
		fmt.Fprintf(w, "  %s  %s -> %s (ratio %s), %s indexes, %s, %d extents%s\n", f.Path, humanBytes(f.Size), humanBytes(f.Encoded),
			ratio(f.Size, f.Encoded), f.Indexes, algs, f.Extents, extra)
	}
	if z.Fscache != "" {
		fmt.Fprintf(w, "fscache       %s\n", z.Fscache)
	}
}

func printInspect(w io.Writer, r *inspectReport, maxChunks, maxFiles int) {
	fmt.Fprintf(w, "image         %s (%s)\n", r.Image, humanBytes(r.Size))
	fmt.Fprintf(w, "uuid          %s\n", r.UUID)
	if r.Label != "" {
		fmt.Fprintf(w, "label         %s\n", r.Label)
	}
	fmt.Fprintf(w, "block size    %d\nblocks        %d (%s)\n", r.BlockSize, r.Blocks, humanBytes(int64(r.Blocks)*int64(r.BlockSize)))
	fmt.Fprintf(w, "inodes        %d\nbuild time    %s\n", r.Inodes, formatBuildTime(r))
	fmt.Fprintf(w, "features      compat: %s; incompat: %s\n", strings.Join(r.Compat, " "), strings.Join(r.Incompat, " "))
	fmt.Fprintf(w, "linux 6.1     %v\n", yesNo(r.Linux61))
	if f := r.Fscache61; f != nil {
		if f.Safe {
			fmt.Fprintf(w, "6.1 fscache   safe\n")
		} else {
			fmt.Fprintf(w, "6.1 fscache   NOT SAFE: %s\n", strings.Join(f.Problems, "; "))
		}
	}
	fmt.Fprintf(w, "root nid      %d\nmeta blkaddr  %d\nxattr blkaddr %d\n", r.RootNid, r.MetaBlkAddr, r.XattrBlk)
	if r.Checksum != "" {
		fmt.Fprintf(w, "checksum      %s (verified)\n", r.Checksum)
	}
	fmt.Fprintf(w, "entries       %d files, %d dirs, %d symlinks, %d devices, %d other, %d extra hard links\n",
		r.Counts["files"], r.Counts["dirs"], r.Counts["symlinks"], r.Counts["devices"], r.Counts["others"], r.Counts["hardlinks"])
	fmt.Fprintf(w, "file data     %s\n", humanBytes(r.DataBytes))
	fmt.Fprintf(w, "devices       %d\n", len(r.Devices))
	for _, d := range r.Devices {
		fmt.Fprintf(w, "  %d  %s  %d blocks (%s)\n", d.ID, d.Tag, d.Blocks, humanBytes(int64(d.Blocks)*int64(r.BlockSize)))
	}
	if len(r.Chunks) > 0 {
		fmt.Fprintf(w, "chunk table   %d chunks, %s\n", len(r.Chunks), humanBytes(r.ChunkBytes))
		for i, c := range r.Chunks {
			if maxChunks >= 0 && i >= maxChunks {
				fmt.Fprintf(w, "  ... %d more (--chunks -1 or --json for all)\n", len(r.Chunks)-i)
				break
			}
			fmt.Fprintf(w, "  dev %d  block %-8d %8d bytes  %s\n", c.Device, c.BlkAddr, c.Length, c.Digest)
		}
		if r.ChunkStates > 0 {
			fmt.Fprintf(w, "chunk states  %d of %d chunks: each is checked as a step of its blob's sha256\n", r.ChunkStates, len(r.Chunks))
		}
	}
	if len(r.StartSet) > 0 {
		var n int64
		for _, e := range r.StartSet {
			n += int64(e.Blocks) * int64(r.BlockSize)
		}
		fmt.Fprintf(w, "start set     %s in %d extents, fetched by erofsd at mount\n", humanBytes(n), len(r.StartSet))
		for _, e := range r.StartSet {
			fmt.Fprintf(w, "  dev %d  blocks %d-%d\n", e.Device, e.BlkAddr, uint64(e.BlkAddr)+uint64(e.Blocks)-1)
		}
	}
	if r.Compression != nil {
		printCompression(w, r.Compression, maxFiles)
	}
	for k, v := range r.Errors {
		fmt.Fprintf(w, "error         %s: %s\n", k, v)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// sectionErr records the error reading an optional section under key,
// unless it only says the image has none (absent).
func (r *inspectReport) sectionErr(key string, err, absent error) {
	if err != nil && !errors.Is(err, absent) {
		r.Errors[key] = err.Error()
	}
}
