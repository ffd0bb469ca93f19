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
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/erofsd/erofsd/internal/control"
)

const usage = `usage: erofsctl [--socket PATH] <command> [flags] ...

commands:
  mount [--fsid ID] [--domain-id ID] [--blob-dir DIR] [--frontend auto|cachefiles|fanotify]
        [--plain-http] [--insecure] [--platform OS/ARCH] [--prefetch off|whole] [--prefetch-list FILE] IMAGE MOUNTPOINT
                   register IMAGE with erofsd and mount it; file data is
                   fetched lazily. IMAGE is a file, sha256:DIGEST of an image
                   in the blob store, or oci://HOST/REPO:TAG (or @DIGEST) of
                   an image made by erofs-image convert, whose blobs then
                   come from that repository. --prefetch then fetches the
                   listed files (paths in the image, one a line) and with
                   whole every blob in the background
  umount MOUNTPOINT
  register [--fsid ID] [--domain-id ID] [--blob-dir DIR] [--plain-http] [--insecure] [--platform OS/ARCH] IMAGE
                   register IMAGE without mounting it (a later mount --fsid ID uses it)
  unregister [--domain-id ID] FSID
                   remove a registered image that no mount uses
  ls [--json]      registered images and their mounts
  status [--json]  daemon status and counters
  image pull [--address SOCKET] [--namespace NS] [--snapshotter NAME] [--plain-http] [--hosts-dir DIR] REF
                   pull REF into containerd through erofsd's snapshotter: an
                   image made by erofs-image convert is mounted lazily (none of
                   its layers downloaded), others are unpacked as usual; then
                   ctr run --snapshotter erofsd REF ID starts it
  trace [--duration D] [--output FILE] MOUNTPOINT|--container ID [-- COMMAND [ARG...]]
                   record with eBPF (root) which files of the EROFS mount at
                   MOUNTPOINT (or the image under a container of erofsd's
                   snapshotter) are read, in first-read order and by byte
                   range, while COMMAND runs (its output goes to stderr unless
                   --output is given), for --duration, or until interrupted;
                   write them as a prefetch list (for mount --prefetch-list,
                   erofs-image build/convert/optimize --prefetch-list)
`

// callTimeout bounds a call to the daemon; pulls have their own.
const callTimeout = 2 * time.Minute

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
	if args[0] == "image" {
		return cmdImage(ctx, args[1:], stdout, stderr)
	}
	if args[0] == "trace" { // no call timeout; the daemon only for --container
		return cmdTrace(ctx, control.NewClient(*socket), args[1:], stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
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
	case "register":
		return cmdRegister(ctx, c, args[1:], stdout, stderr)
	case "unregister":
		fs := flag.NewFlagSet("erofsctl unregister", flag.ContinueOnError)
		fs.SetOutput(stderr)
		domain := fs.String("domain-id", "", "the image's `domain`")
		if err := parseInterspersed(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: erofsctl unregister [--domain-id ID] FSID")
		}
		return c.Unregister(ctx, fs.Arg(0), *domain)
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

// imageFlags are the flags that name an image and where its blobs are.
type imageFlags struct {
	fsid, domain, blobDir, platform *string
	plainHTTP, insecure             *bool
}

func addImageFlags(fs *flag.FlagSet) *imageFlags {
	return &imageFlags{
		fsid:      fs.String("fsid", "", "fsid of the image (default: derived from the image path)"),
		domain:    fs.String("domain-id", "", "share blobs with other images of this `domain`"),
		blobDir:   fs.String("blob-dir", "", "blob store: a `dir`, an http(s):// URL or an oci:// repository (default: the daemon's --blob-dir)"),
		plainHTTP: fs.Bool("plain-http", false, "oci:// images: talk plain HTTP to the registry (a test registry); never the default"),
		insecure:  fs.Bool("insecure", false, "skip TLS certificate verification of the registry or blob store; never the default"),
		platform:  fs.String("platform", "", "oci:// multi-platform images: `os/arch` to use (default: the daemon's)"),
	}
}

// request turns the flags and the IMAGE argument into a registration.
func (f *imageFlags) request(image string) (control.RegisterRequest, error) {
	isOCI := strings.HasPrefix(image, "oci://")
	if (*f.plainHTTP || *f.platform != "") && !isOCI {
		return control.RegisterRequest{}, errors.New("--plain-http and --platform apply to oci:// images")
	}
	var err error
	if !strings.HasPrefix(image, "sha256:") && !isOCI {
		if image, err = filepath.Abs(image); err != nil {
			return control.RegisterRequest{}, err
		}
		if _, err := os.Stat(image); err != nil {
			return control.RegisterRequest{}, err
		}
	}
	blobDir := *f.blobDir
	if blobDir != "" && !strings.Contains(blobDir, "://") {
		if blobDir, err = filepath.Abs(blobDir); err != nil {
			return control.RegisterRequest{}, err
		}
	}
	fsid := *f.fsid
	if fsid == "" {
		fsid = defaultFSID(image)
	}
	return control.RegisterRequest{FSID: fsid, DomainID: *f.domain, Bootstrap: image, BlobDir: blobDir,
		PlainHTTP: *f.plainHTTP, Insecure: *f.insecure, Platform: *f.platform}, nil
}

func cmdRegister(ctx context.Context, c *control.Client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("erofsctl register", flag.ContinueOnError)
	fs.SetOutput(stderr)
	img := addImageFlags(fs)
	if err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: erofsctl register [--fsid ID] [--domain-id ID] [--blob-dir DIR] [--plain-http] [--insecure] [--platform P] IMAGE")
	}
	req, err := img.request(fs.Arg(0))
	if err != nil {
		return err
	}
	im, err := c.Register(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered %s (fsid %s, %d blobs)\n", req.Bootstrap, im.FSID, len(im.Blobs))
	return nil
}

func cmdMount(ctx context.Context, c *control.Client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("erofsctl mount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	img := addImageFlags(fs)
	frontend := fs.String("frontend", "auto", "kernel front end: auto (cachefiles if the kernel has on-demand mode, else fanotify), cachefiles or fanotify")
	prefetch := fs.String("prefetch", "", "after the mount, fetch in the background: off or whole (default: the daemon's --prefetch)")
	prefetchList := fs.String("prefetch-list", "", "`file` of paths in the image, one a line: their data is fetched first, in this order")
	if err := parseInterspersed(fs, args); err != nil {
		return err
	}
	list, err := readPrefetchList(*prefetchList)
	if err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: erofsctl mount [--fsid ID] [--domain-id ID] [--blob-dir DIR] [--frontend F] [--plain-http] [--insecure] [--platform P] [--prefetch off|whole] [--prefetch-list FILE] IMAGE MOUNTPOINT")
	}
	req, err := img.request(fs.Arg(0))
	if err != nil {
		return err
	}
	mp, err := filepath.Abs(fs.Arg(1))
	if err != nil {
		return err
	}
	m, err := c.Mount(ctx, control.MountRequest{RegisterRequest: req, Mountpoint: mp, Frontend: *frontend, Prefetch: *prefetch, PrefetchList: list})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mounted %s on %s (fsid %s, %s)\n", req.Bootstrap, m.Mountpoint, m.FSID, m.Frontend)
	return nil
}

// parseInterspersed lets flags follow the arguments, as in
// "mount IMAGE DIR --plain-http".
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// defaultFSID names a mount after its image: the file name, made safe,
// plus a hash of the full path so two images called alike differ.
func defaultFSID(image string) string {
	if hex, ok := strings.CutPrefix(image, "sha256:"); ok && len(hex) >= 16 {
		return "sha256-" + hex[:16]
	}
	name := strings.TrimSuffix(filepath.Base(image), filepath.Ext(image))
	if ref, ok := strings.CutPrefix(image, "oci://"); ok {
		// The repository's last element with its tag ("app:v1").
		name = ref[strings.LastIndexByte(ref, '/')+1:]
	}
	base := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
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
	fmt.Fprintln(tw, "FSID\tDOMAIN\tBLOBS\tOPEN OBJECTS\tMOUNTS\tCONTAINERS\tIMAGE")
	for _, im := range images {
		image := im.Bootstrap
		if im.Source != "" {
			image = "oci://" + im.Source
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", im.FSID, dash(im.DomainID), len(im.Blobs), im.OpenObjects, dash(strings.Join(im.Mounts, ",")),
			dash(strings.Join(im.Containers, ",")), image)
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
