package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"github.com/erofsd/erofsd/erofstrace"
	"github.com/erofsd/erofsd/internal/control"
)

const traceUsage = "usage: erofsctl trace [--duration D] [--output FILE] MOUNTPOINT|--container ID [-- COMMAND [ARG...]]"

// commandWaitDelay is how long a traced command has to exit after
// SIGTERM, once erofsctl is interrupted, before it is killed.
const commandWaitDelay = 10 * time.Second

// cmdTrace records which files of the EROFS mount at MOUNTPOINT are read,
// and in which order, while COMMAND runs, for --duration, or until
// SIGINT or SIGTERM (ctx), and writes them as a prefetch list.
func cmdTrace(ctx context.Context, c *control.Client, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("erofsctl trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 0, "stop tracing after this long (default: when COMMAND exits, or on SIGINT or SIGTERM)")
	output := fs.String("output", "", "write the prefetch list to `file` (default: standard output)")
	container := fs.String("container", "", "trace the image under the container (containerd snapshot) `ID` of erofsd's snapshotter: created, not yet started")
	// What follows "--" is the command, flags and all.
	var command []string
	i := slices.Index(args, "--")
	if i >= 0 {
		args, command = args[:i], args[i+1:]
	}
	if err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 && *container == "" || fs.NArg() != 0 && *container != "" || *duration < 0 || i >= 0 && len(command) == 0 {
		return errors.New(traceUsage)
	}
	mountpoint := fs.Arg(0)
	if *container != "" {
		mp, err := containerMount(ctx, c, *container)
		if err != nil {
			return err
		}
		mountpoint = mp
	}

	m, err := erofstrace.StatMount(mountpoint)
	if err != nil {
		return err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Failing
	// to raise it (without privilege) is not the error to report: Open
	// then fails and says why.
	_ = rlimit.RemoveMemlock()
	tr, err := erofstrace.Open(m.Dev, nil)
	if err != nil {
		return err
	}
	defer tr.Close()

	traceCtx, stopTrace := context.WithCancel(ctx)
	defer stopTrace()
	if *duration > 0 {
		var cancel context.CancelFunc
		traceCtx, cancel = context.WithTimeout(traceCtx, *duration)
		defer cancel()
	}
	var cmdDone chan error
	if len(command) > 0 {
		// The command ends with erofsctl: on SIGINT or SIGTERM, and when
		// tracing fails.
		cmdCtx, stopCmd := context.WithCancel(ctx)
		defer stopCmd()
		cmd := exec.CommandContext(cmdCtx, command[0], command[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
		if *output == "" {
			cmd.Stdout = stderr // standard output carries the list
		}
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = commandWaitDelay
		if err := cmd.Start(); err != nil {
			return err
		}
		cmdDone = make(chan error, 1)
		go func() {
			cmdDone <- cmd.Wait()
			stopTrace()
		}()
	} else if *duration == 0 {
		fmt.Fprintf(stderr, "tracing reads on %s; interrupt to stop\n", m.Path)
	}

	trace, err := tr.Run(traceCtx)
	if err != nil {
		return err
	}
	if err := tr.Close(); err != nil {
		return err
	}
	list, st, err := erofstrace.Resolve(m.Path, trace, nil)
	if err != nil {
		return err
	}
	if *output == "" || *output == "-" {
		_, err = stdout.Write(list.Encode())
	} else {
		err = writeReplacing(*output, list.Encode())
	}
	if err != nil {
		return fmt.Errorf("trace: write the list: %w", err)
	}

	summary := fmt.Sprintf("%d files, %d bytes, %d events, %d unresolved nids", st.Files, st.Bytes, st.Events, st.Unresolved)
	if st.Lost+st.Dropped > 0 {
		summary += fmt.Sprintf(", %d events lost (the list is incomplete)", st.Lost+st.Dropped)
	}
	if st.WalkLimited {
		summary += fmt.Sprintf(", search for files stopped after %d entries", st.Walked)
	}
	var cmdErr error
	if cmdDone != nil {
		// With --duration shorter than the command, the list is out
		// already; the command's status still decides ours.
		cmdErr = <-cmdDone
		summary += ", command " + exitStatus(cmdErr)
	}
	fmt.Fprintln(stderr, "trace:", summary)
	if cmdErr != nil {
		return fmt.Errorf("trace: command %s", exitStatus(cmdErr))
	}
	return nil
}

// exitStatus describes how a command ended.
func exitStatus(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited with status 0"
	case errors.As(err, &ee) && ee.Exited():
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	case errors.As(err, &ee):
		return ee.String() // "signal: terminated"
	}
	return "failed: " + err.Error()
}

// containerMount returns the mount of the image under a container's
// snapshot, as erofsd's snapshotter made it.
func containerMount(ctx context.Context, c *control.Client, id string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ims, err := c.Images(ctx)
	if err != nil {
		return "", err
	}
	return mountUnder(ims, id)
}

// mountUnder picks the mount of the image under container id from the
// daemon's image list.
func mountUnder(ims []control.Image, id string) (string, error) {
	// containerd names a container's snapshot NAMESPACE/N/ID in the
	// snapshotter; with CRI and ctr run, ID is the container's id. The
	// same id in two namespaces is ambiguous: NAMESPACE/N/ID picks one.
	var found []string
	var keys []string
	for _, im := range ims {
		for _, key := range im.Containers {
			if (key == id || strings.HasSuffix(key, "/"+id)) && len(im.Mounts) > 0 {
				found, keys = append(found, im.Mounts[0]), append(keys, key)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no image of erofsd's snapshotter is under container %q (erofsctl ls lists them)", id)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("container %q is ambiguous: snapshots %q; give one of them", id, keys)
}

// writeReplacing writes data to name through a new file renamed over it:
// as root, an existing name that is a symlink is replaced, never followed.
func writeReplacing(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}
