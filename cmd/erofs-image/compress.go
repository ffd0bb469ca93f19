package main

import (
	"flag"
	"fmt"
)

// compressNote is the help text shared by the commands that compress.
const compressNote = `Compression (-z) stores each regular file that shrinks in compressed
extents, as mkfs.erofs does (its spellings -zlz4hc,12 and -C65536 are
taken too). Linux before 6.9 cannot read compressed files in fscache
(on-demand) mode, so images erofsd serves to 6.1 kernels through
cachefiles must stay uncompressed. Mounted from a file or block device,
Linux 6.1 reads lz4 and lzma images; deflate and zstd need newer kernels
(about 6.6 and 6.10).`

// compressFlags are -z and --pcluster-size (also -C).
type compressFlags struct {
	spec     *string
	pcluster *string
}

func addCompressFlags(fs *flag.FlagSet) compressFlags {
	c := compressFlags{
		spec:     fs.String("z", "", "compress files: `ALGO[,LEVEL]` as mkfs.erofs spells it: lz4, lz4hc[,1-12], lzma[,0-9], deflate[,1-9], zstd[,1-22]"),
		pcluster: fs.String("pcluster-size", "", "largest compressed physical cluster, `bytes` (a multiple of 4K up to 1M; default 4K); -C is the same"),
	}
	fs.StringVar(c.pcluster, "C", "", "same as --pcluster-size")
	return c
}

// values returns the compression spec and pcluster size (0: default).
func (c compressFlags) values() (string, int, error) {
	if *c.pcluster == "" {
		return *c.spec, 0, nil
	}
	if *c.spec == "" {
		return "", 0, fmt.Errorf("%w: --pcluster-size needs -z", errUsage)
	}
	n, err := parseSize(*c.pcluster)
	if err != nil || n%4096 != 0 || n > 1<<20 {
		return "", 0, fmt.Errorf("%w: --pcluster-size %s: must be a multiple of 4K up to 1M", errUsage, *c.pcluster)
	}
	return *c.spec, int(n), nil
}
