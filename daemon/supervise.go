package daemon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/erofsd/erofsd/internal/fdhold"
	"github.com/erofsd/erofsd/internal/sdnotify"
	"github.com/erofsd/erofsd/ondemand/fanotify"
)

// Supervise runs "erofsd [args]" as a child and keeps the child's kernel
// fds (and its journal of requests in progress) across the child's
// death: when it crashes it is started again and picks them up, so
// readers of its mounts wait instead of failing or reading zeros. SIGHUP
// restarts the child gracefully from the binary on disk (a live upgrade);
// SIGTERM or SIGINT stop both. Under systemd the held fds also go to
// its fd store, so that a restart of the whole service resumes too.
func Supervise(args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	holder := fdhold.NewHolder()
	defer holder.Close()
	// Under systemd the held fds also go to its fd store
	// (FileDescriptorStoreMax= in the unit): if this supervisor dies
	// too, the restarted service gets them back through $LISTEN_FDS.
	stored, err := fdhold.FromSystemd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "erofsd supervise:", err)
	}
	if len(stored) > 0 {
		holder.Adopt(stored)
		if _, ok := stored["fanotify"]; ok {
			// The journal of events being answered died with the
			// previous supervisor: the daemon recovers as from a
			// lost batch.
			holder.Note(fanotify.LostBatch, "supervisor restarted from the fd store")
		}
		fmt.Fprintf(os.Stderr, "erofsd supervise: resuming with %d fds from systemd's fd store\n", len(stored))
	}
	if sdnotify.Available() && os.Getenv("FDSTORE") != "0" {
		holder.SetMirror(fdhold.SystemdStore{}, func(err error) { fmt.Fprintln(os.Stderr, "erofsd supervise:", err) })
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	backoff := 100 * time.Millisecond
	for {
		sup, dmn, err := fdhold.Pair()
		if err != nil {
			return err
		}
		cmd := exec.Command(self, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.ExtraFiles = []*os.File{dmn} // fd 3 in the child
		// The child talks to systemd itself (NotifyAccess=all): READY,
		// STATUS, STOPPING, and the watchdog, which is meant for it.
		cmd.Env = append(withoutEnv(os.Environ(), "WATCHDOG_PID"), fdhold.EnvFD+"=3")
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting erofsd: %w", err)
		}
		dmn.Close()
		served := make(chan error, 1)
		go func() { served <- holder.Serve(sup) }()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		fmt.Fprintf(os.Stderr, "erofsd supervise: started erofsd pid %d (holding %v)\n", cmd.Process.Pid, holder.Held())

		var exitErr error
		stopping, upgrading := false, false
	wait:
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGHUP {
					upgrading = true
					cmd.Process.Signal(syscall.SIGUSR2) // stop to hand over
					continue
				}
				stopping = true
				cmd.Process.Signal(sig)
			case exitErr = <-exited:
				break wait
			}
		}
		<-served
		sup.Close()
		switch {
		case stopping:
			// Stopping for good: systemd must not keep the kernel
			// waiting for a daemon that will not come.
			holder.Unmirror()
			return exitErr
		case upgrading:
			fmt.Fprintln(os.Stderr, "erofsd supervise: restarting erofsd (SIGHUP)")
			continue
		case exitErr == nil:
			// A clean exit the supervisor did not ask for: someone
			// stopped the daemon on purpose.
			holder.Unmirror()
			return nil
		}
		var ee *exec.ExitError
		if errors.As(exitErr, &ee) {
			fmt.Fprintf(os.Stderr, "erofsd supervise: erofsd ended (%v); restarting, holding %v\n", ee.ProcessState, holder.Held())
		}
		// Readers wait while no daemon runs: a daemon that served the
		// kernel is restarted at once, however often it dies (its fds
		// are held, requests may be waiting); only one that dies before
		// it serves (a crash loop at start) is restarted after a growing
		// delay.
		// While kernel fds are held (mounts may wait for a daemon) the
		// delay stays under a second.
		delay := time.Duration(0)
		if !holder.Served() {
			limit := 30 * time.Second
			if len(holder.Held()) > 0 {
				limit = time.Second
			}
			delay = min(backoff, limit)
			backoff = min(2*backoff, limit)
		} else {
			backoff = 100 * time.Millisecond
		}
		select {
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				holder.Unmirror()
				return nil
			}
		case <-time.After(delay):
		}
	}
}

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}
