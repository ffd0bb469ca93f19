package fdhold

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/erofsd/erofsd/internal/sdnotify"
	"golang.org/x/sys/unix"
)

// SystemdStore mirrors held fds into systemd's fd store
// (FileDescriptorStoreMax= in the unit): a restarted service gets them
// back through $LISTEN_FDS (see FromSystemd). Names are escaped with
// StoreName to fit $LISTEN_FDNAMES.
type SystemdStore struct{}

// Store implements Mirror.
func (SystemdStore) Store(name string, fd int) error {
	if err := sdnotify.StoreFDs(StoreName(name), fd); err != nil {
		return fmt.Errorf("fd store: keeping %s: %w", name, err)
	}
	return nil
}

// Remove implements Mirror.
func (SystemdStore) Remove(name string) error {
	if err := sdnotify.RemoveFDs(StoreName(name)); err != nil {
		return fmt.Errorf("fd store: removing %s: %w", name, err)
	}
	return nil
}

// StoreName escapes a held fd's name for systemd, which allows only
// printable ASCII without ':' in fd names: '%', ':' and every other byte
// outside that range become %XX.
func StoreName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < ' ' || c > '~' || c == ':' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// HeldName reverses StoreName.
func HeldName(stored string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(stored); i++ {
		if stored[i] != '%' {
			b.WriteByte(stored[i])
			continue
		}
		if i+2 >= len(stored) {
			return "", fmt.Errorf("fd name %q: truncated escape", stored)
		}
		c, err := strconv.ParseUint(stored[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("fd name %q: bad escape at %d", stored, i)
		}
		b.WriteByte(byte(c))
		i += 2
	}
	return b.String(), nil
}

// FromSystemd returns the fds systemd passed this process from its fd
// store ($LISTEN_FDS), by held name, and removes the $LISTEN_*
// variables so that children do not take the fds for theirs. Fds whose
// names are not StoreName escapes are closed and reported in the error,
// with the others still returned.
func FromSystemd() (map[string]int, error) {
	lfds, err := sdnotify.ListenFDs(true)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	var bad []string
	for _, f := range lfds {
		name, err := HeldName(f.Name)
		if _, dup := out[name]; err != nil || dup {
			bad = append(bad, f.Name)
			unix.Close(f.FD)
			continue
		}
		out[name] = f.FD
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("fd store: closed fds with unusable or duplicate names %q", bad)
	}
	return out, nil
}
