// Command erofsd serves EROFS images to the kernel lazily (package
// daemon): it turns its flags and TOML config file into a daemon.Config
// and runs the daemon, or, as "erofsd supervise", the supervisor that
// keeps the daemon's kernel fds across crashes and upgrades.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/daemon"
	"github.com/erofsd/erofsd/internal/fdhold"
	"github.com/erofsd/erofsd/internal/lograte"
	"github.com/erofsd/erofsd/internal/sdnotify"
	"github.com/erofsd/erofsd/internal/units"
	"github.com/erofsd/erofsd/internal/version"
	"github.com/sirupsen/logrus"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "erofsd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "supervise" {
		return daemon.Supervise(args[1:])
	}
	cfg, err := parseConfig(args)
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errVersionShown) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.Supervisor, err = fdhold.FromEnv(); err != nil {
		return err
	}
	cfg.Systemd = sdnotify.Available() && os.Getenv("FDSTORE") != "0"

	// SIGTERM and SIGINT stop erofsd for good; SIGUSR2 (from erofsd
	// supervise, for an upgrade) stops it to hand over to a new daemon.
	// SIGUSR2 is not one of the context's signals: its stop must follow
	// HandOver, or a race could make it a stop for good.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	handover := make(chan os.Signal, 1)
	signal.Notify(handover, syscall.SIGUSR2)
	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-handover:
			d.HandOver()
			stop()
		case <-ctx.Done():
		}
	}()
	return d.Run(ctx)
}

var errVersionShown = errors.New("version shown")

// parseConfig turns the command line and the TOML file it names into a
// daemon.Config, with the logger it asks for.
func parseConfig(args []string) (daemon.Config, error) {
	var cfg daemon.Config
	def := daemon.DefaultConfig()
	fs := flag.NewFlagSet("erofsd", flag.ContinueOnError)
	fs.StringVar(&cfg.CacheDir, "cache-dir", def.CacheDir, "cache `dir`: cachefiles' cache (on a filesystem with user xattrs: ext4, xfs) and the fanotify cache files")
	fs.StringVar(&cfg.BlobDir, "blob-dir", "", "default blob store: a `dir` of blobs named by sha256 hex digest, an http(s):// URL serving URL/<digest> with range requests, or oci://HOST/REPO")
	fs.StringVar(&cfg.BlobCAFile, "blob-ca-file", "", "extra CA certificates (PEM) for https blob stores and registries")
	minFetch, window, mountRA := units.Bytes(def.MinFetch), units.Bytes(def.ReadaheadWindow), units.Bytes(def.MountReadahead)
	fs.Var(&mountRA, "mount-readahead", "readahead of erofsd's mounts in `bytes` (K, M suffixes): the size of the kernel's reads of blobs, each answered by erofsd while data is missing (0: the kernel's 128K)")
	fs.Var(&minFetch, "min-fetch", "least `bytes` a fill reads from a blob store (K, M suffixes): later chunks ride along (0: what is asked; at most 8M)")
	fs.BoolVar(&cfg.ReadaheadAcrossFiles, "readahead-across-files", false, "let readahead go by blob offsets into the next files' data, as erofsd did before it mapped files: fewer round trips for images without a start set on high-latency links, at several times the bytes")
	fs.Var(&window, "readahead-window", "`bytes` background readahead keeps fetched ahead of a sequential reader (K, M suffixes), in runs of up to 8M (0: the next chunk only); reads that do not continue the last one get none")
	mirrors := fs.String("registry-mirrors", "", "comma-separated `HOST=MIRROR` pairs: MIRROR (host[:port] or URL) is tried before registry HOST, in order")
	fs.StringVar(&cfg.StateDir, "state-dir", def.StateDir, "`dir` for the daemon's state: state.json and images fetched by digest")
	fs.StringVar(&cfg.Socket, "socket", def.Socket, "control API unix socket `path` (mode 0600)")
	fs.StringVar(&cfg.CachefilesTag, "tag", def.CachefilesTag, "cachefiles cache tag")
	fs.IntVar(&cfg.Workers, "workers", def.Workers, "kernel requests handled at once")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", def.RequestTimeout, "a kernel request not served within this `duration` fails with EIO and the blob store request behind it is cancelled")
	fs.StringVar(&cfg.Frontend, "frontend", def.Frontend, "kernel front ends to enable: auto (every one this kernel supports), cachefiles or fanotify")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", def.MetricsAddr, "`address` serving /metrics, /healthz and /readyz (empty: off)")
	fs.StringVar(&cfg.Prefetch, "prefetch", def.Prefetch, "after a mount, fetch in the background: off, or whole (every blob; a mount's prefetch list comes first either way)")
	fs.BoolVar(&cfg.PrefetchStart, "prefetch-start", def.PrefetchStart, "at a mount of an image that records a start set (erofs-image build --prefetch-list), fetch it at once in large requests, alongside the kernel's reads")
	fs.BoolVar(&cfg.KernelReadLatency, "kernel-read-latency", false, "export erofsd_kernel_read_seconds, per mount: how long read system calls on its files take in the kernel (eBPF; costs every system call on the machine a few hundred ns)")
	startMax := units.Bytes(def.PrefetchStartMax)
	fs.Var(&startMax, "prefetch-start-max", "`bytes` of one image's start set fetched at once (K, M, G); the rest is prefetched paced, yielding to the kernel (0: no bound)")
	var prefetchRate units.Bytes
	fs.Var(&prefetchRate, "prefetch-rate", "bandwidth `limit` of all prefetch together, bytes/s with K, M or G (binary): 0 is unlimited (prefetch yields to kernel reads either way)")
	fs.StringVar(&cfg.Snapshotter.Socket, "snapshotter-socket", "", "serve containerd's snapshots API on this unix socket `path` (mode 0600; containerd's proxy_plugins address): containerd then runs erofsd images lazily (empty: off)")
	fs.StringVar(&cfg.Snapshotter.Root, "snapshotter-root", "", "`dir` of the snapshotter's snapshots and metadata, on ext4 or xfs (default: STATE-DIR/snapshotter)")
	fs.StringVar(&cfg.Snapshotter.CRIProxySocket, "cri-image-proxy-socket", "", "serve kubelet's CRI image service on this unix socket `path` (kubelet --image-service-endpoint): calls go on to containerd, and the pull secrets of PullImage reach erofsd (empty: off)")
	fs.StringVar(&cfg.Snapshotter.CRIUpstream, "cri-image-proxy-upstream", def.Snapshotter.CRIUpstream, "containerd's CRI socket `path`, where the CRI image proxy forwards")
	plainHosts := fs.String("snapshotter-plain-http-hosts", "", "comma-separated registry `hosts` (HOST[:PORT]) the snapshotter reaches over plain HTTP, as containerd's hosts.toml does (others: verified TLS)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	configPath := fs.String("config", defaultConfig, "TOML config `file`: keys are these flags' names with _ (flags win)")
	cacheCfg := addCacheFlags(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	if err := loadConfig(fs, *configPath, explicit); err != nil {
		return cfg, err
	}
	var err error
	if cfg.RegistryMirrors, err = parseMirrors(*mirrors); err != nil {
		return cfg, err
	}
	for _, h := range strings.Split(*plainHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.Snapshotter.PlainHTTPHosts = append(cfg.Snapshotter.PlainHTTPHosts, h)
		}
	}
	cfg.MinFetch, cfg.ReadaheadWindow, cfg.MountReadahead, cfg.PrefetchRate = int64(minFetch), int64(window), int64(mountRA), int64(prefetchRate)
	cfg.PrefetchStartMax = int64(startMax)
	cfg.CachefilesLimits, cfg.CacheCheckInterval, cfg.FanotifyCacheLimit = cacheCfg.lim, cacheCfg.interval, int64(cacheCfg.fanLimit)
	if cfg.Workers <= 0 {
		return cfg, fmt.Errorf("workers: %d, want at least 1", cfg.Workers)
	}
	// daemon.Config takes a zero interval as its default; here zero was
	// asked for, and is refused.
	if err := cacheCfg.validate(); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	if *showVersion {
		fmt.Println("erofsd", version.String())
		return cfg, errVersionShown
	}
	cfg.Version = version.String()
	log, err := newLogger(*logLevel, *logFormat)
	if err != nil {
		return cfg, err
	}
	cfg.Logger = log
	return cfg, nil
}

// newLogger makes the daemon's logger. One line per failed request names
// its image, blob and offset; repeats of one failure (same message,
// image and blob) are limited to a burst and then one per interval, with
// a count of the rest.
func newLogger(level, format string) (*logrus.Logger, error) {
	log := logrus.New()
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	log.SetLevel(lvl)
	switch format {
	case "text":
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	limit := lograte.New(logBurst, logEvery, 4096)
	log.SetFormatter(&lograte.Formatter{Formatter: log.Formatter, Limiter: limit,
		Key: lograte.SimilarKey("off", "len", "pid", "msg", "object", "event")})
	go logSuppressed(log, limit)
	return log, nil
}

// Log rate limit for similar warnings and errors: a burst of logBurst
// lines, then one per logEvery.
const (
	logBurst = 10
	logEvery = 10 * time.Second
)

// logSuppressed logs, every logEvery, how many lines the limiter held
// back for failures that have stopped since.
func logSuppressed(log logrus.FieldLogger, l *lograte.Limiter) {
	t := time.NewTicker(logEvery)
	defer t.Stop()
	for range t.C {
		for _, s := range l.Flush() {
			like := s.Key
			if like == "" {
				like = "(too many kinds of messages to tell apart)"
			}
			log.WithFields(logrus.Fields{"suppressed_like": like, "suppressed": s.Count}).Warnf("suppressed %d similar messages", s.Count)
		}
	}
}

// parseMirrors reads "HOST=MIRROR,HOST=MIRROR2": mirrors per registry
// host, in the order given.
func parseMirrors(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		host, mirror, ok := strings.Cut(pair, "=")
		if !ok || host == "" || mirror == "" || strings.ContainsAny(host, "/ ") {
			return nil, fmt.Errorf("registry-mirrors: %q: want HOST=MIRROR", pair)
		}
		if host == "docker.io" || host == "registry-1.docker.io" {
			host = "index.docker.io" // how Docker Hub references name it
		}
		out[host] = append(out[host], mirror)
	}
	return out, nil
}
