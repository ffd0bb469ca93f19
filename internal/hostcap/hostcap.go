// Package hostcap is the one way erofsd says that this host cannot do
// something: a kernel feature, a privilege or a tool is missing. Probes
// return a *Missing, which callers tell apart from a failure with
// errors.Is(err, ErrMissing); a daemon turns a front end off with its
// reason, and tests skip with it (internal/testutil/require).
package hostcap

import (
	"errors"
	"fmt"
	"os"
)

// ErrMissing matches every *Missing.
var ErrMissing = errors.New("not available on this host")

// Missing says what this host lacks and why.
type Missing struct {
	What string // "fanotify pre-content events"
	Why  string // what was found: "fanotify_init: invalid argument (Linux 6.14+ ...)"
	// Installable is set when installing a package would supply it (a
	// tool), as opposed to a kernel feature or the privilege to run.
	Installable bool
	// Err is the error behind Why, if any.
	Err error
}

func (m *Missing) Error() string { return m.What + ": " + m.Why }

// Is makes errors.Is(err, ErrMissing) true.
func (m *Missing) Is(target error) bool { return target == ErrMissing }

// Unwrap returns the error behind the missing capability.
func (m *Missing) Unwrap() error { return m.Err }

// Missingf returns a *Missing for what, explained by format and args
// (with %w, the error is kept).
func Missingf(what, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Missing{What: what, Why: err.Error(), Err: errors.Unwrap(err)}
}

// Root reports whether this process runs as root; what names what needs
// it.
func Root(what string) error {
	if uid := os.Geteuid(); uid != 0 {
		return &Missing{What: what, Why: fmt.Sprintf("needs root (euid is %d)", uid)}
	}
	return nil
}
