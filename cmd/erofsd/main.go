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
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/ondemand"
	"github.com/erofsd/erofsd/ondemand/cachefiles"
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
	fs := flag.NewFlagSet("erofsd", flag.ContinueOnError)
	cacheDir := fs.String("cache-dir", "/var/cache/erofsd", "cachefiles cache `dir` (on a filesystem with user xattrs: ext4, xfs)")
	blobDir := fs.String("blob-dir", "", "default local blob store `dir` (blobs named by sha256 hex digest)")
	stateDir := fs.String("state-dir", "/var/lib/erofsd", "`dir` for the daemon's state: images fetched by digest")
	socket := fs.String("socket", control.DefaultSocket, "control API unix socket `path` (mode 0600)")
	tag := fs.String("tag", "erofsd", "cachefiles cache tag")
	workers := fs.Int("workers", 16, "READ requests handled at once")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	reg := ondemand.NewRegistry()
	defer reg.Close()
	d := &daemon{reg: reg, cacheDir: *cacheDir, blobDir: *blobDir, stateDir: *stateDir, log: log, started: time.Now(),
		meta: map[string]*imageMeta{}, mounts: map[string]*control.Mount{}}

	srv, err := cachefiles.Open(*cacheDir, *tag, reg, cachefiles.Config{Workers: *workers, Logger: log})
	if err != nil {
		// Keep serving the API, so that erofsctl can say why mounts
		// fail, but make the reason loud.
		d.srvErr = err
		log.WithError(err).Error("cannot serve the kernel through cachefiles")
	} else {
		d.srv = srv
		defer srv.Release()
	}

	l, err := control.Listen(*socket)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer os.Remove(*socket)
	hs := &http.Server{Handler: control.Handler(d), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	log.WithFields(logrus.Fields{"socket": *socket, "cache_dir": *cacheDir, "version": version}).Info("erofsd ready")

	serveErr := make(chan error, 1)
	if d.srv != nil {
		go func() { serveErr <- d.srv.Serve(ctx) }()
	}
	serving := d.srv != nil
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-serveErr:
		serving = false
		log.WithError(err).Error("cachefiles loop ended")
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(shutCtx)
	if d.srv != nil {
		d.srv.Close()
		if serving {
			select {
			case <-serveErr:
			case <-shutCtx.Done():
			}
		}
		if n := len(d.mounts); n > 0 {
			log.WithField("mounts", n).Warn("exiting with images mounted: their unread data fails until they are remounted")
		}
	}
	return nil
}
