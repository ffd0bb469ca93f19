// Package daemon is erofsd: it registers images, mounts them through a
// kernel front end (cachefiles on-demand or fanotify pre-content events)
// and serves their data lazily from blob stores, with a control API on a
// unix socket, Prometheus metrics, prefetch, cache upkeep, and a state
// file that lets a restarted daemon carry on with the mounts of the one
// before. cmd/erofsd turns flags and a TOML file into a Config and runs
// New(cfg).Run(ctx); Supervise is "erofsd supervise".
package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erofsd/erofsd/blobstore"
	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/fdhold"
	"github.com/erofsd/erofsd/internal/keylock"
	"github.com/erofsd/erofsd/internal/sdnotify"
	"github.com/erofsd/erofsd/metrics"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"github.com/erofsd/erofsd/ondemand/fanotify"
	"github.com/erofsd/erofsd/snapshotter"
	"github.com/erofsd/erofsd/snapshotter/criproxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// Daemon is one erofsd. Create it with New, run it with Run; it serves
// the control API (control.Backend) while it runs.
type Daemon struct {
	cfg Config
	reg *ondemand.Registry
	// frontends serve the kernel, cachefiles first (auto prefers it);
	// off says why the others are off.
	frontends []ondemand.Frontend
	off       map[string]error
	httpOpts  blobstore.HTTPOptions
	backends  *blobstore.Stats // blob store counters by kind
	log       logrus.FieldLogger
	started   time.Time
	pf        *prefetcher              // background prefetch after mounts
	lat       *readLatency             // kernel read latency per mount; nil: off
	sn        *snapshotter.Snapshotter // containerd's snapshotter, if on
	snap      *snapshotter.Server      // and its gRPC server
	creds     *criproxy.Credentials    // pull secrets from the CRI proxy, if on
	credsHold sync.Mutex               // one copy of creds to the supervisor at a time

	sup       *fdhold.Client // the supervisor holding our kernel fds, if any
	held      *fdhold.State  // what it held for us at start
	fdStore   fdhold.Mirror  // systemd's fd store, unsupervised under systemd
	promReg   *prometheus.Registry
	handover  atomic.Bool           // Run ends to hand over to a new daemon, not for good
	replay    func(context.Context) // fanotify: answers the events the previous daemon had taken
	stopping  chan struct{}         // closed when Run begins to stop
	lingerWG  sync.WaitGroup        // waits for filesystems unmounted but still in use
	closeOnce sync.Once

	bootLocks keylock.Map // by bootstrap path: a fetch and its registration against its removal
	storesMu  sync.Mutex
	stores    map[string]blobstore.Store // by spec and TLS setting
	resolvers map[bool]http.RoundTripper // manifest requests' transports, by Insecure
	resolved  map[string]*ociResolved    // manifests named by digest, resolved

	mu        sync.Mutex
	mounts    map[string]*mountRec // by mountpoint; mounted == nil while being mounted
	restoring bool                 // restoreState runs: saveState waits for its end
	stateMu   sync.Mutex           // one state file write at a time
}

// New opens the kernel front ends the configuration and the kernel allow
// (taking back the fds a supervisor or systemd's fd store kept for a
// restarted daemon) and prepares the daemon; Run starts serving. A front
// end that cannot work here stays off with the reason logged, so that
// the API can say why mounts fail.
func New(cfg Config) (*Daemon, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	reg := ondemand.NewRegistry()
	reg.MinFetch, reg.ReadaheadWindow, reg.ReadaheadAcrossFiles = cfg.MinFetch, cfg.ReadaheadWindow, cfg.ReadaheadAcrossFiles
	d := &Daemon{cfg: cfg, reg: reg, log: log, started: time.Now(), off: map[string]error{},
		httpOpts: blobstore.HTTPOptions{CAFile: cfg.BlobCAFile}, backends: &blobstore.Stats{},
		mounts: map[string]*mountRec{}, resolvers: map[bool]http.RoundTripper{}, resolved: map[string]*ociResolved{}, promReg: prometheus.NewRegistry(), stopping: make(chan struct{})}
	d.pf = newPrefetcher(reg, cfg, log)
	if cfg.Snapshotter.CRIProxySocket != "" {
		d.creds = criproxy.NewCredentials()
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		reg.Close()
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	if err := d.openFrontends(); err != nil {
		d.release()
		return nil, err
	}
	d.keepCredentials()
	return d, nil
}

// openFrontends opens cachefiles and fanotify as configured.
func (d *Daemon) openFrontends() error {
	cfg, log := d.cfg, d.log
	useCachefiles := cfg.Frontend == "auto" || cfg.Frontend == "cachefiles"
	useFanotify := cfg.Frontend == "auto" || cfg.Frontend == "fanotify"

	// Under "erofsd supervise", the supervisor keeps our kernel fds: a
	// restarted daemon takes them back and carries on.
	d.sup = cfg.Supervisor
	d.held = &fdhold.State{FDs: map[string]int{}, Journal: map[string]string{}}
	if d.sup != nil {
		held, err := d.sup.Get()
		if err != nil {
			return fmt.Errorf("supervisor: %w", err)
		}
		d.held = held
	} else if cfg.Systemd {
		// Unsupervised under systemd, systemd's fd store keeps the
		// cachefiles fd (the supervisor, if any, stores what it holds).
		fds, err := fdhold.FromSystemd()
		if err != nil {
			log.WithError(err).Warn("fds from systemd's fd store")
		}
		maps.Copy(d.held.FDs, fds)
		d.fdStore = fdhold.SystemdStore{}
	}
	var journal fanotify.Journal
	if d.sup != nil {
		journal = d.sup
	}

	disabled := errors.New("disabled by --frontend")
	hist := metrics.NewHistograms(d.promReg)
	d.reg.FetchLatency = hist.BackendFetch
	cfCfg := cachefiles.Config{Workers: cfg.Workers, RequestTimeout: cfg.RequestTimeout, Logger: log, ReadLatency: hist.CachefilesRead,
		Limits: cfg.CachefilesLimits, CacheDir: cfg.CacheDir, CullInterval: cfg.CacheCheckInterval, Wanted: d.reg.Wants}
	fanCfg := fanotify.Config{Workers: cfg.Workers, RequestTimeout: cfg.RequestTimeout, Logger: log, Journal: journal, ReadLatency: hist.FanotifyRead,
		CacheDir: filepath.Join(cfg.CacheDir, "fanotify"), CacheLimit: cfg.FanotifyCacheLimit, CacheCheckInterval: cfg.CacheCheckInterval,
		Resolver: d.reg, MountReadahead: cfg.MountReadahead}

	var srv *cachefiles.Server
	srvErr := disabled
	if fd, ok := d.held.FDs["cachefiles"]; ok {
		srv, srvErr = cachefiles.Resume(fd, d.reg, cfCfg)
	} else if useCachefiles {
		if srv, srvErr = cachefiles.Open(cfg.CacheDir, cfg.CachefilesTag, d.reg, cfCfg); srvErr == nil && d.sup != nil {
			d.sup.Hold("cachefiles", srv.FD())
		} else if srvErr == nil && d.fdStore != nil {
			if err := d.fdStore.Store("cachefiles", srv.FD()); err != nil {
				log.WithError(err).Warn("the cachefiles fd is not kept across a crash")
			}
		}
	}
	if srvErr != nil {
		d.off["cachefiles"] = srvErr
		if useCachefiles {
			log.WithError(srvErr).Warn("cachefiles front end unavailable")
		}
	} else {
		d.frontends = append(d.frontends, srv)
	}

	var fan *fanotify.Server
	fanErr := disabled
	if fd, ok := d.held.FDs["fanotify"]; ok {
		fan, fanErr = fanotify.FromFD(fd, fanCfg)
	} else if useFanotify && d.sup == nil {
		// Without another holder of the group, a crash would let the
		// kernel read missing data as zeros: refuse rather than risk it.
		fanErr = errors.New("fanotify needs a holder of its group fd so that reads fail closed if erofsd dies: run erofsd supervise")
	} else if useFanotify {
		if fanErr = fanotify.Supported(cfg.CacheDir); fanErr == nil {
			if fan, fanErr = fanotify.New(fanCfg); fanErr == nil && d.sup != nil {
				d.sup.Hold("fanotify", fan.FD())
			}
		}
	}
	if fanErr != nil {
		d.off["fanotify"] = fanErr
		if useFanotify {
			log.WithError(fanErr).Warn("fanotify front end unavailable")
		}
	} else {
		writers := map[string]int{}
		for name, fd := range d.held.FDs {
			if p, ok := strings.CutPrefix(name, "fanotify-writer:"); ok {
				writers[p] = fd
			}
		}
		fan.AdoptWriters(writers)
		d.replay = func(ctx context.Context) { fan.Replay(ctx, d.held.Journal) }
		d.frontends = append(d.frontends, fan)
	}
	return nil
}

// HandOver makes Run, when its context ends, stop for a new daemon that
// takes over (a live upgrade): mounts keep waiting for it instead of
// being made to fail.
func (d *Daemon) HandOver() { d.handover.Store(true) }

// Run serves until ctx ends: the front ends, the control API on the
// socket, metrics, cache upkeep. A restarted daemon first serves again
// what the previous one served. It returns after shutting down.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.release()
	cfg, log := d.cfg, d.log
	// Serve again what the previous daemon served (mounts still there
	// are adopted, whether the daemon was restarted holding its fds or
	// started anew), then finish the reads it had taken but not
	// answered, before reading new ones.
	if err := d.restoreState(ctx); err != nil {
		log.WithError(err).Error("restoring state")
	}
	if len(d.held.FDs) > 0 {
		if d.replay != nil {
			d.replay(ctx)
		}
		log.WithFields(logrus.Fields{"images": len(d.reg.Images()), "replayed": len(d.held.Journal)}).Info("resumed after a restart")
	}
	if len(d.frontends) == 0 {
		log.Error("no front end can serve this kernel: mounts will fail (see the warnings above)")
	}

	stopSnapshotter := d.startSnapshotter(ctx)
	defer stopSnapshotter()
	stopCRIProxy := d.startCRIProxy()
	defer stopCRIProxy()

	metrics.Register(d.promReg, cfg.Version, d.counterSources()...)
	if cfg.KernelReadLatency {
		if d.lat = newReadLatency(d.mountNames, log); d.lat != nil {
			d.promReg.MustRegister(d.lat)
			d.lat.sync()
			defer d.lat.Close()
		}
	}
	if cfg.MetricsAddr != "" {
		ml, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics address: %w", err)
		}
		ms := &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go ms.Serve(ml)
		defer ms.Close()
	}

	l, err := d.listen(cfg.Socket)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer d.unlinkForGood(cfg.Socket)
	hs := &http.Server{Handler: control.Handler(d), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	var names []string
	for _, fe := range d.frontends {
		names = append(names, fe.Name())
	}
	log.WithFields(logrus.Fields{"socket": cfg.Socket, "cache_dir": cfg.CacheDir, "version": cfg.Version,
		"frontends": strings.Join(names, ",")}).Info("erofsd ready")
	if d.sup != nil {
		d.sup.Serving() // the supervisor restarts a daemon that served at once
	}

	loopCtx, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()
	ended := make(chan error, len(d.frontends))
	for _, fe := range d.frontends {
		go func() { ended <- fe.Serve(loopCtx) }()
		go fe.KeepCache(loopCtx)
	}
	running := len(d.frontends)
	if cfg.Systemd {
		status := fmt.Sprintf("STATUS=serving: %s", strings.Join(names, ", "))
		if err := sdnotify.Notify("READY=1\n" + status); err != nil {
			log.WithError(err).Warn("sd_notify")
		}
		if iv := sdnotify.WatchdogInterval(); iv > 0 {
			go watchdog(loopCtx, iv)
		}
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-ended:
		running--
		log.WithError(err).Error("a front end loop ended")
	}
	close(d.stopping)
	stopCRIProxy()
	stopSnapshotter() // containerd's calls end before the front ends stop
	d.lingerWG.Wait()
	// No prefetch may write into cache files from here on (poisoned
	// files must stay truncated).
	d.pf.stopAll()
	forGood := !d.handover.Load()
	if forGood {
		if _, off := d.off["cachefiles"]; d.fdStore != nil && !off {
			// Stopping for good: mounts fail instead of waiting.
			d.fdStore.Remove("cachefiles")
		}
	} else {
		log.Info("handing over to the next daemon")
	}
	for _, fe := range d.frontends {
		// For good: requests being served fail (EIO) and fanotify
		// files that are not complete are made to fail; the loops still
		// run for that.
		if err := fe.Stop(forGood); err != nil {
			log.WithError(err).WithField("frontend", fe.Name()).Warn("stopping")
		}
	}
	if forGood && d.sup != nil {
		// Nobody is to wait for a next daemon: the supervisor lets the
		// kernel fds go, so that reads fail instead of waiting (the
		// fanotify files that could read as zeros are truncated above).
		if err := d.sup.DropAll(); err != nil {
			log.WithError(err).Warn("asking the supervisor to let the kernel fds go")
		}
	}
	if cfg.Systemd {
		sdnotify.Notify("STOPPING=1")
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(shutCtx)
	for _, fe := range d.frontends {
		fe.Close()
	}
	stopLoops()
	for ; running > 0; running-- {
		select {
		case <-ended:
		case <-shutCtx.Done():
			running = 0
		}
	}
	if n := d.mountCount(); n > 0 {
		log.WithField("mounts", n).Warn("exiting with images mounted: reads of data not yet fetched fail until erofsd serves them again")
	}
	return nil
}

// listen listens on the unix socket path (mode 0600). Under a
// supervisor the listening socket outlives the daemon: the supervisor
// holds it and hands it to the next daemon, so that clients (containerd
// above all) connecting during a restart or an upgrade wait in its
// backlog instead of finding no socket.
func (d *Daemon) listen(path string) (net.Listener, error) {
	key := "listener:" + path
	if fd, ok := d.held.FDs[key]; ok {
		f := os.NewFile(uintptr(fd), path)
		l, err := net.FileListener(f)
		f.Close()
		if err == nil {
			return l, nil
		}
		d.log.WithError(err).WithField("socket", path).Warn("the held listening socket does not work: listening anew")
	}
	l, err := control.Listen(path)
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok || d.sup == nil {
		return l, nil
	}
	ul.SetUnlinkOnClose(false) // the next daemon listens on it
	// Through the raw fd, not File().Fd(): that would put the shared
	// socket in blocking mode, and Close could no longer end an Accept.
	rc, err := ul.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { err = d.sup.Hold(key, int(fd)) })
		err = errors.Join(cerr, err)
	}
	if err != nil {
		d.log.WithError(err).WithField("socket", path).Warn("the supervisor does not hold the listening socket: connections during a restart fail")
	}
	return l, nil
}

// unlinkForGood removes a socket when the daemon stops for good, not
// when it hands over.
func (d *Daemon) unlinkForGood(path string) {
	if !d.handover.Load() {
		os.Remove(path)
	}
}

// release gives up the kernel fds and the registry (once).
func (d *Daemon) release() {
	d.closeOnce.Do(func() {
		d.pf.stopAll()
		for _, fe := range d.frontends {
			fe.Release()
		}
		d.reg.Close()
	})
}

func watchdog(ctx context.Context, iv time.Duration) {
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			sdnotify.Notify("WATCHDOG=1")
		case <-ctx.Done():
			return
		}
	}
}

// metricsHandler serves /metrics, /healthz (the process answers) and
// /readyz (a kernel front end is serving).
func (d *Daemon) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.promReg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if len(d.frontends) == 0 {
			http.Error(w, "no kernel front end: "+d.whyOff(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
