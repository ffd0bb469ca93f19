// Command erofs-image builds, inspects, checks and extracts EROFS images
// whose file data may live in separate, content-addressed blobs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: erofs-image <command> [flags] ...

commands:
  build    [-z ALGO[,LEVEL] [-C BYTES]] [--chunk-size SIZE] [--blob-dir DIR [--prefetch-list FILE]] [--mkfs-time T] [--all-root] [--json] -o IMAGE SOURCE
  inspect  [--json] IMAGE
  check    [--blob-dir DIR] IMAGE
  extract  [--blob-dir DIR] IMAGE DEST
  convert  [-z ALGO[,LEVEL] [-C BYTES]] [--platform P|all] [--prefetch-list FILE] [--plain-http] [--insecure] [--json] SRC DST
  optimize --prefetch-list FILE [--blob-dir DIR] [--out-blob-dir DIR] [--json] SRC DST

Run 'erofs-image <command> -h' for the flags of a command.
`

// errUsage marks errors caused by how the command was called (exit 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "erofs-image:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "erofs-image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmds := map[string]func(context.Context, []string, io.Reader, io.Writer, io.Writer) error{
		"build":    cmdBuild,
		"inspect":  cmdInspect,
		"check":    cmdCheck,
		"extract":  cmdExtract,
		"convert":  cmdConvert,
		"optimize": cmdOptimize,
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	return cmd(ctx, args[1:], stdin, stdout, stderr)
}

// newFlagSet returns a flag set that reports errors as usage errors.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("erofs-image "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses interspersed flags and positional arguments, so that
// "build -o img dir --json" works like most Unix tools.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
