// Command erofsctl controls a running erofsd: it registers and mounts
// images in fscache mode, unmounts them, and lists what is served.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/erofsd/erofsd/internal/control"
)

const usage = `usage: erofsctl [--socket PATH] <command> [flags] ...

commands:
  mount [--fsid ID] [--domain-id ID] [--blob-dir DIR] [--frontend auto|cachefiles|fanotify]
        [--prefetch off|whole] [--prefetch-list FILE] IMAGE MOUNTPOINT
                   register IMAGE (a file, or sha256:DIGEST of an image in the
                   blob store) with erofsd and mount it in fscache mode; then
                   fetch the listed files (paths in the image, one a line)
                   and with whole every blob in the background
  umount MOUNTPOINT
  ls [--json]      registered images and their mounts
  status [--json]  daemon status and counters
`

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "erofsctl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("erofsctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	socket := global.String("socket", control.DefaultSocket, "erofsd control socket `path`")
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := global.Parse(args); err != nil {
		return err
	}
	args = global.Args()
	if len(args) == 0 {
		global.Usage()
		return errors.New("no command")
	}
	c := control.NewClient(*socket)
	switch args[0] {
	case "mount":
		return cmdMount(ctx, c, args[1:], stdout, stderr)
	case "umount", "unmount":
		if len(args) != 2 {
			return errors.New("usage: erofsctl umount MOUNTPOINT")
		}
		mp, err := filepath.Abs(args[1])
		if err != nil {
			return err
		}
		return c.Unmount(ctx, mp)
	case "ls", "list":
		return cmdList(ctx, c, args[1:], stdout, stderr)
	case "status":
		return cmdStatus(ctx, c, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	global.Usage()
	return fmt.Errorf("unknown command %q", args[0])
}

func cmdMount(ctx context.Context, c *control.Client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("erofsctl mount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fsid := fs.String("fsid", "", "fsid of the mount (default: derived from the image path)")
	domain := fs.String("domain-id", "", "share blobs with other images of this `domain`")
	blobDir := fs.String("blob-dir", "", "blob store: a `dir`, or an http(s):// URL (default: the daemon's --blob-dir)")
	frontend := fs.String("frontend", "auto", "kernel front end: auto (cachefiles if the kernel has on-demand mode, else fanotify), cachefiles or fanotify")
	prefetch := fs.String("prefetch", "", "after the mount, fetch in the background: off or whole (default: the daemon's --prefetch)")
	prefetchList := fs.String("prefetch-list", "", "`file` of paths in the image, one a line: their data is fetched first, in this order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list, err := readPrefetchList(*prefetchList)
	if err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: erofsctl mount [--fsid ID] [--domain-id ID] [--blob-dir DIR] [--frontend F] [--prefetch off|whole] [--prefetch-list FILE] IMAGE MOUNTPOINT")
	}
	image := fs.Arg(0)
	if !strings.HasPrefix(image, "sha256:") {
		if image, err = filepath.Abs(image); err != nil {
			return err
		}
		if _, err := os.Stat(image); err != nil {
			return err
		}
	}
	mp, err := filepath.Abs(fs.Arg(1))
	if err != nil {
		return err
	}
	if *blobDir != "" && !strings.Contains(*blobDir, "://") {
		if *blobDir, err = filepath.Abs(*blobDir); err != nil {
			return err
		}
	}
	if *fsid == "" {
		*fsid = defaultFSID(image)
	}
	m, err := c.Mount(ctx, control.MountRequest{
		RegisterRequest: control.RegisterRequest{FSID: *fsid, DomainID: *domain, Bootstrap: image, BlobDir: *blobDir},
		Mountpoint:      mp,
		Frontend:        *frontend,
		Prefetch:        *prefetch,
		PrefetchList:    list,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mounted %s on %s (fsid %s, %s)\n", image, m.Mountpoint, m.FSID, m.Frontend)
	return nil
}

// defaultFSID names a mount after its image: the file name, made safe,
// plus a hash of the full path so two images called alike differ.
func defaultFSID(image string) string {
	if hex, ok := strings.CutPrefix(image, "sha256:"); ok && len(hex) >= 16 {
		return "sha256-" + hex[:16]
	}
	base := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, strings.TrimSuffix(filepath.Base(image), filepath.Ext(image)))
	if len(base) > 48 {
		base = base[:48]
	}
	sum := sha256.Sum256([]byte(image))
	return base + "-" + hex.EncodeToString(sum[:4])
}

func cmdList(ctx context.Context, c *control.Client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("erofsctl ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	images, err := c.Images(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, images)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FSID\tDOMAIN\tBLOBS\tOPEN OBJECTS\tMOUNTS\tIMAGE")
	for _, im := range images {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", im.FSID, dash(im.DomainID), len(im.Blobs), im.OpenObjects, dash(strings.Join(im.Mounts, ",")), im.Bootstrap)
	}
	return tw.Flush()
}

func cmdStatus(ctx context.Context, c *control.Client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("erofsctl status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "erofsd %s, pid %d, up %s\nfrontend  %s\ncache dir %s\nimages    %d\nmounts    %d\n",
		st.Version, st.PID, time.Since(st.Started).Round(time.Second), st.Frontend, st.CacheDir, st.Images, st.Mounts)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, k := range sortedKeys(st.Counters) {
		fmt.Fprintf(tw, "  %s\t%d\n", k, st.Counters[k])
	}
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys(m map[string]int64) []string { return slices.Sorted(maps.Keys(m)) }
