// Command erofsd serves EROFS images to the kernel lazily: mounted in
// fscache mode, the kernel asks erofsd for ranges of an image and its
// blobs through /dev/cachefiles, and erofsd answers from a blob store,
// verifying every chunk against its digest. erofsctl drives it through a
// unix-socket API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/fdhold"
	"github.com/erofsd/erofsd/internal/lograte"
	"github.com/erofsd/erofsd/internal/sdnotify"
	"github.com/erofsd/erofsd/internal/units"
	"github.com/erofsd/erofsd/metrics"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "erofsd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "supervise" {
		return supervise(args[1:])
	}
	fs := flag.NewFlagSet("erofsd", flag.ContinueOnError)
	cacheDir := fs.String("cache-dir", "/var/cache/erofsd", "cachefiles cache `dir` (on a filesystem with user xattrs: ext4, xfs)")
	blobDir := fs.String("blob-dir", "", "default blob store: a `dir` of blobs named by sha256 hex digest, or an http(s):// URL serving URL/<digest> with range requests")
	blobCA := fs.String("blob-ca-file", "", "extra CA certificates (PEM) for https blob stores and registries")
	var minFetch, window, mountRA units.Bytes = 0, 16 << 20, 4 << 20
	fs.Var(&mountRA, "mount-readahead", "readahead of erofsd's mounts in `bytes` (K, M suffixes): the size of the kernel's reads of blobs, each answered by erofsd while data is missing (0: the kernel's 128K)")
	fs.Var(&minFetch, "min-fetch", "least `bytes` a fill reads from a blob store (K, M suffixes): later chunks ride along (0: what is asked; at most 8M)")
	fs.Var(&window, "readahead-window", "`bytes` background readahead keeps fetched ahead of a sequential reader (K, M suffixes), in runs of up to 8M (0: the next chunk only)")
	mirrors := fs.String("registry-mirrors", "", "comma-separated `HOST=MIRROR` pairs: MIRROR (host[:port] or URL) is tried before registry HOST, in order")
	stateDir := fs.String("state-dir", "/var/lib/erofsd", "`dir` for the daemon's state: images fetched by digest")
	socket := fs.String("socket", control.DefaultSocket, "control API unix socket `path` (mode 0600)")
	tag := fs.String("tag", "erofsd", "cachefiles cache tag")
	workers := fs.Int("workers", 16, "kernel requests handled at once")
	frontend := fs.String("frontend", "auto", "kernel front ends to enable: auto (every one this kernel supports), cachefiles or fanotify")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9851", "`address` serving /metrics, /healthz and /readyz (empty: off)")
	prefetchMode := fs.String("prefetch", "off", "after a mount, fetch in the background: off, or whole (every blob; a mount's prefetch list comes first either way)")
	var prefetchRate units.Bytes
	fs.Var(&prefetchRate, "prefetch-rate", "bandwidth `limit` of all prefetch together, bytes/s with K, M or G (binary): 0 is unlimited (prefetch yields to kernel reads either way)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	configPath := fs.String("config", defaultConfig, "TOML config `file`: keys are these flags' names with _ (flags win)")
	cacheCfg := addCacheFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	if err := loadConfig(fs, *configPath, explicit); err != nil {
		return err
	}
	mirrorMap, err := parseMirrors(*mirrors)
	if err != nil {
		return err
	}
	if mountRA != 0 && mountRA < 4<<10 {
		return fmt.Errorf("mount-readahead: %d, want 0 (the kernel's) or at least 4K", mountRA)
	}
	if minFetch > ondemand.MaxRun {
		return fmt.Errorf("min-fetch: %d, want at most %d", minFetch, ondemand.MaxRun)
	}
	if err := checkPrefetchMode(*prefetchMode); err != nil {
		return err
	}
	if *workers <= 0 {
		return fmt.Errorf("workers: %d, want at least 1", *workers)
	}
	if err := cacheCfg.validate(); err != nil {
		return err
	}
	switch *frontend {
	case "auto", "cachefiles", "fanotify":
	default:
		return fmt.Errorf("frontend %q: want auto, cachefiles or fanotify", *frontend)
	}
	if *showVersion {
		fmt.Println("erofsd", version)
		return nil
	}
	log := logrus.New()
	lvl, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		return err
	}
	log.SetLevel(lvl)
	switch *logFormat {
	case "text":
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return fmt.Errorf("--log-format %q: want text or json", *logFormat)
	}
	// One line per failed request names its image, blob and offset;
	// repeats of one failure (same message, image and blob) are limited
	// to a burst and then one per interval, with a count of the rest.
	logLimit := lograte.New(logBurst, logEvery, 4096)
	log.SetFormatter(&lograte.Formatter{Formatter: log.Formatter, Limiter: logLimit,
		Key: lograte.SimilarKey("off", "len", "pid", "msg", "object", "event")})

	// SIGTERM and SIGINT stop erofsd for good; SIGUSR2 (from erofsd
	// supervise, for an upgrade) stops it to hand over to a new daemon.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2)
	defer stop()
	handover := make(chan os.Signal, 1)
	signal.Notify(handover, syscall.SIGUSR2)
	go logSuppressed(ctx, log, logLimit)

	reg := ondemand.NewRegistry()
	reg.MinFetch, reg.ReadaheadWindow = int64(minFetch), int64(window)
	defer reg.Close()
	d := &daemon{reg: reg, cacheDir: *cacheDir, blobDir: *blobDir, stateDir: *stateDir, log: log, started: time.Now(),
		httpOpts: blobstore.HTTPOptions{CAFile: *blobCA}, mirrors: mirrorMap, backends: &blobstore.Stats{}, mountRA: int64(mountRA),
		meta: map[string]*imageMeta{}, mounts: map[string]*mountRec{}}
	d.kernelRelease = cachefiles.KernelRelease()
	d.fscacheHoleBug = cachefiles.HolesReadWrong(d.kernelRelease)
	d.pf = newPrefetcher(reg, *prefetchMode, int64(prefetchRate), log)
	defer d.pf.stopAll()
	if err := os.MkdirAll(*cacheDir, 0o700); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	useCachefiles := *frontend == "auto" || *frontend == "cachefiles"
	useFanotify := *frontend == "auto" || *frontend == "fanotify"
	if !useCachefiles && !useFanotify {
		return fmt.Errorf("--frontend %q: want auto, cachefiles or fanotify", *frontend)
	}

	// Under "erofsd supervise", the supervisor keeps our kernel fds: a
	// restarted daemon takes them back and carries on.
	sup, err := fdhold.FromEnv()
	if err != nil {
		return err
	}
	held := &fdhold.State{FDs: map[string]int{}, Journal: map[string]string{}}
	// Unsupervised under systemd, systemd's fd store keeps the
	// cachefiles fd (the supervisor, if any, stores what it holds).
	var fdStore fdhold.Mirror
	if sup != nil {
		if held, err = sup.Get(); err != nil {
			return fmt.Errorf("supervisor: %w", err)
		}
	} else {
		fds, err := fdhold.FromSystemd()
		if err != nil {
			log.WithError(err).Warn("fds from systemd's fd store")
		}
		maps.Copy(held.FDs, fds)
		if sdnotify.Available() && os.Getenv("FDSTORE") != "0" {
			fdStore = fdhold.SystemdStore{}
		}
	}
	restarted := len(held.FDs) > 0
	var journal fanotify.Journal
	if sup != nil {
		journal = sup
	}

	// Front ends that cannot work here stay off; the API keeps running so
	// that erofsctl can say why mounts fail, and the reason is logged.
	d.srvErr, d.fanErr = errors.New("disabled by --frontend"), errors.New("disabled by --frontend")
	promReg := prometheus.NewRegistry()
	hist := metrics.NewHistograms(promReg)
	reg.FetchLatency = hist.BackendFetch
	cfCfg := cachefiles.Config{Workers: *workers, Logger: log, ReadLatency: hist.CachefilesRead,
		Limits: cacheCfg.lim, CacheDir: *cacheDir, CullInterval: cacheCfg.interval, Wanted: reg.Wants}
	fanCfg := fanotify.Config{Workers: *workers, Logger: log, Journal: journal, ReadLatency: hist.FanotifyRead,
		CacheDir: filepath.Join(*cacheDir, "fanotify"), CacheLimit: int64(cacheCfg.fanLimit)}
	if fd, ok := held.FDs["cachefiles"]; ok {
		d.srv, d.srvErr = cachefiles.Resume(fd, reg, cfCfg)
	} else if useCachefiles {
		if d.srv, d.srvErr = cachefiles.Open(*cacheDir, *tag, reg, cfCfg); d.srvErr == nil && sup != nil {
			sup.Hold("cachefiles", d.srv.FD())
		} else if d.srvErr == nil && fdStore != nil {
			if err := fdStore.Store("cachefiles", d.srv.FD()); err != nil {
				log.WithError(err).Warn("the cachefiles fd is not kept across a crash")
			}
		}
	}
	if d.srvErr != nil && useCachefiles {
		log.WithError(d.srvErr).Warn("cachefiles front end unavailable")
	} else if d.srv != nil {
		defer d.srv.Release()
	}
	if fd, ok := held.FDs["fanotify"]; ok {
		d.fan, d.fanErr = fanotify.FromFD(fd, fanCfg)
	} else if useFanotify && sup == nil {
		// Without another holder of the group, a crash would let the
		// kernel read missing data as zeros: refuse rather than risk it.
		d.fanErr = errors.New("fanotify needs a holder of its group fd so that reads fail closed if erofsd dies: run erofsd supervise")
	} else if useFanotify {
		if d.fanErr = fanotify.Supported(*cacheDir); d.fanErr == nil {
			if d.fan, d.fanErr = fanotify.New(fanCfg); d.fanErr == nil && sup != nil {
				sup.Hold("fanotify", d.fan.FD())
			}
		}
	}
	if d.fanErr != nil && useFanotify {
		log.WithError(d.fanErr).Warn("fanotify front end unavailable")
	} else if d.fan != nil {
		defer d.fan.Release()
		writers := map[string]int{}
		for name, fd := range held.FDs {
			if p, ok := strings.CutPrefix(name, "fanotify-writer:"); ok {
				writers[p] = fd
			}
		}
		d.fan.AdoptWriters(writers)
	}
	if restarted {
		// Serve again what the previous daemon served, then finish the
		// reads it had taken but not answered, before reading new ones.
		if err := d.restoreState(ctx); err != nil {
			log.WithError(err).Error("restoring state after a restart")
		}
		if d.fan != nil {
			d.fan.Replay(ctx, held.Journal)
		}
		log.WithFields(logrus.Fields{"images": len(reg.Images()), "replayed": len(held.Journal)}).Info("resumed after a restart")
	}
	if d.srv == nil && d.fan == nil {
		log.Error("no front end can serve this kernel: mounts will fail (see the warnings above)")
	}

	metrics.Register(promReg, metrics.Sources{Registry: reg, Cachefiles: d.srv, Fanotify: d.fan, Version: version, Backends: d.backends,
		Mounts: func() int { d.mu.Lock(); defer d.mu.Unlock(); return len(d.mounts) }})
	if *metricsAddr != "" {
		ml, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics address: %w", err)
		}
		ms := &http.Server{Handler: metricsHandler(promReg, d), ReadHeaderTimeout: 10 * time.Second}
		go ms.Serve(ml)
		defer ms.Close()
	}

	l, err := control.Listen(*socket)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer os.Remove(*socket)
	hs := &http.Server{Handler: control.Handler(d), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	log.WithFields(logrus.Fields{"socket": *socket, "cache_dir": *cacheDir, "version": version,
		"cachefiles": d.srv != nil, "fanotify": d.fan != nil}).Info("erofsd ready")

	type loop interface {
		Serve(context.Context) error
		Close() error
	}
	var loops []loop
	if d.srv != nil {
		loops = append(loops, d.srv)
	}
	if d.fan != nil {
		loops = append(loops, d.fan)
	}
	loopCtx, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()
	ended := make(chan error, len(loops))
	for _, l := range loops {
		go func() { ended <- l.Serve(loopCtx) }()
	}
	running := len(loops)
	d.maintainCache(loopCtx, cacheCfg.interval)
	status := fmt.Sprintf("STATUS=serving: cachefiles %v, fanotify %v", d.srv != nil, d.fan != nil)
	if err := sdnotify.Notify("READY=1\n" + status); err != nil {
		log.WithError(err).Warn("sd_notify")
	}
	if iv := sdnotify.WatchdogInterval(); iv > 0 {
		go func() {
			t := time.NewTicker(iv / 2)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					sdnotify.Notify("WATCHDOG=1")
				case <-loopCtx.Done():
					return
				}
			}
		}()
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-ended:
		running--
		log.WithError(err).Error("a front end loop ended")
	}
	// No prefetch may write into cache files from here on (poisoned
	// files must stay truncated).
	d.pf.stopAll()
	select {
	case <-handover:
		log.Info("handing over to the next daemon")
	default:
		if fdStore != nil && d.srv != nil {
			// Stopping for good: mounts fail instead of waiting.
			fdStore.Remove("cachefiles")
		}
		if d.fan != nil {
			// Stopping for good: incomplete cache files would read as
			// zeros once the group is gone; make them fail instead
			// (while the loop still runs: truncating raises an event).
			if n, err := d.fan.PoisonIncomplete(); n > 0 || err != nil {
				log.WithError(err).WithField("files", n).Warn("incomplete fanotify cache files truncated: their mounts now fail reads with EIO")
			}
		}
	}
	sdnotify.Notify("STOPPING=1")
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(shutCtx)
	for _, l := range loops {
		l.Close()
	}
	stopLoops()
	for ; running > 0; running-- {
		select {
		case <-ended:
		case <-shutCtx.Done():
			running = 0
		}
	}
	d.mu.Lock()
	n := len(d.mounts)
	d.mu.Unlock()
	if n > 0 {
		log.WithField("mounts", n).Warn("exiting with images mounted: reads of data not yet fetched fail until erofsd serves them again")
	}
	return nil
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

// Log rate limit for similar warnings and errors: a burst of logBurst
// lines, then one per logEvery.
const (
	logBurst = 10
	logEvery = 10 * time.Second
)

// logSuppressed logs, every logEvery, how many lines the limiter held
// back for failures that have stopped since.
func logSuppressed(ctx context.Context, log logrus.FieldLogger, l *lograte.Limiter) {
	t := time.NewTicker(logEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range l.Flush() {
			like := s.Key
			if like == "" {
				like = "(too many kinds of messages to tell apart)"
			}
			log.WithFields(logrus.Fields{"suppressed_like": like, "suppressed": s.Count}).Warnf("suppressed %d similar messages", s.Count)
		}
	}
}

// metricsHandler serves /metrics, /healthz (the process answers) and
// /readyz (a kernel front end is serving).
func metricsHandler(reg *prometheus.Registry, d *daemon) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if d.srv == nil && d.fan == nil {
			http.Error(w, fmt.Sprintf("no kernel front end: cachefiles: %v; fanotify: %v", d.srvErr, d.fanErr), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
