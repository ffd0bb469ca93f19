package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/erofsd/erofsd/snapshotter/pull"
)

// cmdImage runs "erofsctl image pull".
func cmdImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "pull" {
		return errors.New("usage: erofsctl image pull [flags] REF")
	}
	fs := flag.NewFlagSet("erofsctl image pull", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg pull.Config
	fs.StringVar(&cfg.Address, "address", pull.DefaultAddress, "containerd's socket `path`")
	fs.StringVar(&cfg.Namespace, "namespace", pull.DefaultNamespace, "containerd `namespace` (ctr -n)")
	fs.StringVar(&cfg.Snapshotter, "snapshotter", pull.DefaultSnapshotter, "`name` of erofsd's proxy plugin in containerd's configuration")
	fs.BoolVar(&cfg.PlainHTTP, "plain-http", false, "containerd talks plain HTTP to the registry (a test registry); erofsd follows its snapshotter_plain_http_hosts")
	fs.StringVar(&cfg.HostsDir, "hosts-dir", "", "containerd hosts.toml `dir` (certs.d) with the registry's mirrors and TLS settings")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this `duration`")
	if err := parseInterspersed(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: erofsctl image pull [flags] REF")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := pull.Image(ctx, fs.Arg(0), cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s (%.2fs)\n", res.Name, res.Digest, res.Took.Seconds())
	return nil
}
