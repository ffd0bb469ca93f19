package daemon

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/internal/fdhold"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
	"github.com/sirupsen/logrus"
)

// Config is everything a Daemon is told. A zero field takes its default
// (see the Default constants), except where its comment gives zero a
// meaning of its own (MinFetch, ReadaheadWindow, MountReadahead,
// PrefetchRate, FanotifyCacheLimit, the cachefiles limits: zero is "off"
// or "the kernel's"); DefaultConfig has every default set.
type Config struct {
	// CacheDir holds the kernel's cache: cachefiles' cache (on a
	// filesystem with user xattrs) and the fanotify cache files.
	CacheDir string
	// StateDir holds state.json and fetched bootstraps.
	StateDir string
	// Socket is the control API's unix socket (mode 0600).
	Socket string
	// MetricsAddr serves /metrics, /healthz and /readyz; empty: off.
	MetricsAddr string

	// BlobDir is the default blob store (a directory, an http(s):// URL
	// or an oci:// repository); empty: none.
	BlobDir string
	// BlobCAFile adds CA certificates for https stores and registries.
	BlobCAFile string
	// RegistryMirrors lists mirrors per registry host, tried in order.
	RegistryMirrors map[string][]string

	// Frontend is "auto" (every front end this kernel supports),
	// "cachefiles" or "fanotify".
	Frontend string
	// CachefilesTag is the cachefiles cache's tag.
	CachefilesTag string
	// Workers is the number of kernel requests handled at once.
	Workers int

	// MinFetch is the least a fill reads from a blob store (at most
	// ondemand.MaxRun; 0: what is asked); ReadaheadWindow what is kept
	// fetched ahead of a sequential reader (0: the next chunk only;
	// isolated reads get none);
	// MountReadahead the readahead of erofsd's file-backed mounts (0:
	// the kernel's).
	MinFetch, ReadaheadWindow, MountReadahead int64
	// ReadaheadAcrossFiles lets readahead cross from the file read into
	// the next files' chunks (ondemand.Registry.ReadaheadAcrossFiles).
	ReadaheadAcrossFiles bool
	// RequestTimeout bounds a kernel request: one not served within it
	// fails with EIO and the store request behind it is cancelled.
	RequestTimeout time.Duration

	// Prefetch is the default of mounts that do not say: "off" or
	// "whole"; PrefetchRate caps all prefetch together (bytes/s, 0:
	// none).
	Prefetch     string
	PrefetchRate int64
	// PrefetchStart fetches, at each mount of an image that records a
	// start set (erofs-image build --prefetch-list), that set in large
	// requests right away, alongside the kernel's reads and without the
	// rate limit: it is what the workload reads next. A mount's prefetch
	// "off" disables it for that mount.
	PrefetchStart bool
	// KernelReadLatency exports, per mount, how long read system calls
	// on its files take in the kernel (eBPF on the syscall tracepoints;
	// every system call on the machine then runs a small BPF program, a
	// few hundred ns). Where BPF is not allowed erofsd serves without it.
	KernelReadLatency bool
	// PrefetchStartMax bounds the bytes of one image's start set fetched
	// that way (0: no bound); the rest is prefetched like a mount's
	// prefetch list, paced and yielding to the kernel.
	PrefetchStartMax int64

	// CachefilesLimits are cachefiles' culling thresholds.
	CachefilesLimits cachefiles.Limits
	// FanotifyCacheLimit caps the fanotify cache files' bytes (0: none).
	FanotifyCacheLimit int64
	// CacheCheckInterval is how often cache space is checked.
	CacheCheckInterval time.Duration

	// Supervisor is the "erofsd supervise" holding the kernel fds across
	// a crash (fdhold.FromEnv); nil: none.
	Supervisor *fdhold.Client
	// Systemd makes the daemon talk to systemd: readiness, status and
	// watchdog notifications, and (unsupervised) its fd store.
	Systemd bool

	// Snapshotter configures the containerd snapshotter; it is off
	// unless Snapshotter.Socket is set.
	Snapshotter SnapshotterConfig

	// Version is reported in status and metrics.
	Version string
	// Logger receives the daemon's logs; nil discards them.
	Logger logrus.FieldLogger
}

// SnapshotterConfig configures erofsd's containerd remote snapshotter
// (package snapshotter), which containerd reaches as a proxy plugin.
type SnapshotterConfig struct {
	// Socket is the snapshots gRPC API's unix socket (mode 0600), the
	// address of containerd's proxy_plugins entry; empty: off.
	Socket string
	// Root holds the snapshots and their metadata (default: the state
	// directory's "snapshotter"); it must be on a filesystem that
	// overlayfs takes as upper directory (ext4, xfs).
	Root string
	// PlainHTTPHosts are registry hosts (HOST[:PORT]) reached over plain
	// HTTP, as containerd's hosts.toml lets it reach them; others use
	// verified TLS.
	PlainHTTPHosts []string
	// CRIProxySocket serves a CRI image service for kubelet
	// (--image-service-endpoint) that forwards to containerd's CRI at
	// CRIUpstream and hands the pull secrets of PullImage to erofsd;
	// empty: off.
	CRIProxySocket string
	// CRIUpstream is containerd's socket (default
	// DefaultCRIUpstream).
	CRIUpstream string
}

// DefaultCRIUpstream is containerd's socket.
const DefaultCRIUpstream = "/run/containerd/containerd.sock"

// DefaultConfig returns a Config with every field at the value erofsd's
// flags default to.
func DefaultConfig() Config {
	return Config{CacheDir: DefaultCacheDir, StateDir: DefaultStateDir, Socket: control.DefaultSocket, MetricsAddr: DefaultMetricsAddr,
		Frontend: "auto", CachefilesTag: "erofsd", Workers: DefaultWorkers, ReadaheadWindow: DefaultReadaheadWindow,
		MountReadahead: DefaultMountReadahead, RequestTimeout: DefaultRequestTimeout, Prefetch: "off", PrefetchStart: true, PrefetchStartMax: DefaultPrefetchStartMax,
		CachefilesLimits: cachefiles.DefaultLimits, CacheCheckInterval: DefaultCacheCheckInterval,
		Snapshotter: SnapshotterConfig{CRIUpstream: DefaultCRIUpstream}}
}

// Defaults of fields.
const (
	DefaultCacheDir           = "/var/cache/erofsd"
	DefaultStateDir           = "/var/lib/erofsd"
	DefaultMetricsAddr        = "127.0.0.1:9851"
	DefaultWorkers            = 16
	DefaultReadaheadWindow    = 32 << 20
	DefaultPrefetchStartMax   = 512 << 20
	DefaultMountReadahead     = 4 << 20
	DefaultRequestTimeout     = 60 * time.Second
	DefaultCacheCheckInterval = 30 * time.Second
)

// ErrConfig is wrapped by every error of an invalid Config.
var ErrConfig = errors.New("invalid configuration")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Validate checks the configuration as New would.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns c with its zero fields set to their defaults and
// checks it.
func (c Config) withDefaults() (Config, error) {
	if c.CacheDir == "" {
		c.CacheDir = DefaultCacheDir
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Socket == "" {
		c.Socket = control.DefaultSocket
	}
	if c.Frontend == "" {
		c.Frontend = "auto"
	}
	if c.CachefilesTag == "" {
		c.CachefilesTag = "erofsd"
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Prefetch == "" {
		c.Prefetch = "off"
	}
	if c.CacheCheckInterval == 0 {
		c.CacheCheckInterval = DefaultCacheCheckInterval
	}
	if c.Snapshotter.CRIUpstream == "" {
		c.Snapshotter.CRIUpstream = DefaultCRIUpstream
	}
	if c.Snapshotter.Root == "" {
		c.Snapshotter.Root = filepath.Join(c.StateDir, "snapshotter")
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		l := logrus.New()
		l.Out = discard{}
		c.Logger = l
	}
	switch c.Frontend {
	case "auto", "cachefiles", "fanotify":
	default:
		return c, configErr("frontend %q: want auto, cachefiles or fanotify", c.Frontend)
	}
	if c.Workers < 0 {
		return c, configErr("workers %d: want at least 1", c.Workers)
	}
	if c.MinFetch < 0 || c.MinFetch > ondemand.MaxRun {
		return c, configErr("min_fetch (--min-fetch) %d: want 0 to %d", c.MinFetch, ondemand.MaxRun)
	}
	if c.ReadaheadWindow < 0 {
		return c, configErr("readahead_window (--readahead-window) %d: want 0 or more", c.ReadaheadWindow)
	}
	if c.MountReadahead != 0 && c.MountReadahead < 4<<10 {
		return c, configErr("mount_readahead (--mount-readahead) %d: want 0 (the kernel's) or at least 4K", c.MountReadahead)
	}
	if c.RequestTimeout < time.Second {
		return c, configErr("request_timeout (--request-timeout) %v: want at least 1s", c.RequestTimeout)
	}
	if err := checkPrefetchMode(c.Prefetch); err != nil { // names "prefetch"
		return c, configErr("%v", err)
	}
	if c.PrefetchRate < 0 {
		return c, configErr("prefetch_rate (--prefetch-rate) %d: want 0 (unlimited) or more", c.PrefetchRate)
	}
	if err := c.CachefilesLimits.Validate(); err != nil {
		return c, configErr("cachefiles_brun, _bcull, _bstop, _frun, _fcull, _fstop (--cachefiles-brun ...): %v", err)
	}
	if c.CacheCheckInterval < time.Second {
		return c, configErr("cache_check_interval (--cache-check-interval) %v: want at least 1s", c.CacheCheckInterval)
	}
	for _, h := range c.Snapshotter.PlainHTTPHosts {
		if h == "" || strings.ContainsAny(h, "/ \t") {
			return c, configErr("snapshotter_plain_http_hosts (--snapshotter-plain-http-hosts) %q: want HOST[:PORT]", h)
		}
	}
	if c.Snapshotter.CRIProxySocket != "" && c.Snapshotter.CRIProxySocket == c.Snapshotter.CRIUpstream {
		return c, configErr("cri_image_proxy_socket (--cri-image-proxy-socket) %q: the proxy cannot forward to itself", c.Snapshotter.CRIProxySocket)
	}
	if c.Snapshotter.Socket != "" && !filepath.IsAbs(c.Snapshotter.Root) {
		return c, configErr("snapshotter_root (--snapshotter-root) %q: want an absolute path", c.Snapshotter.Root)
	}
	if c.FanotifyCacheLimit < 0 {
		return c, configErr("fanotify_cache_limit (--fanotify-cache-limit) %d: want 0 (none) or more", c.FanotifyCacheLimit)
	}
	return c, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
