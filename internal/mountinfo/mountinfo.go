// Package mountinfo reads what is mounted where from /proc/self/mountinfo
// (proc(5)), so that erofsd can check a mount point before it adopts or
// unmounts what it finds there: a state file that names a mount point
// proves nothing about what is mounted on it now.
package mountinfo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrFormat is a line that is not mountinfo.
var ErrFormat = errors.New("bad mountinfo line")

// maxLine bounds a line: super options of an overlayfs with many layers
// run to kilobytes, not megabytes.
const maxLine = 1 << 20

// Entry is one line of mountinfo. Root, MountPoint and Source are
// decoded; Options and SuperOptions are as the kernel shows them, octal
// escapes included, because an escaped comma inside an option value must
// not split it: SuperOption decodes after splitting.
type Entry struct {
	ID, Parent   int
	Dev          string   // major:minor of the filesystem
	Root         string   // the directory of the filesystem mounted here
	MountPoint   string   // relative to the reading process's root
	Options      string   // per-mount options: ro, nosuid, ...
	Optional     []string // shared:N, master:N, propagate_from:N, unbindable
	FSType       string   // "erofs", "fuse.sshfs", ...
	Source       string   // as given to mount; "none" when none was
	SuperOptions string   // the filesystem's options: "ro,fsid=...", ...
}

// Read parses /proc/self/mountinfo.
func Read() ([]Entry, error) {
	const path = "/proc/self/mountinfo"
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}

// Parse reads mountinfo text; a line that does not parse is an error
// naming its number (from 1). Empty lines are skipped.
func Parse(r io.Reader) ([]Entry, error) {
	var entries []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	sc.Split(scanLines)
	n := 0
	for sc.Scan() {
		n++
		if len(sc.Bytes()) == 0 {
			continue
		}
		e, err := parseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo line %d: %w", n+1, err)
	}
	return entries, nil
}

// scanLines splits at newlines only: bufio.ScanLines would also drop a
// carriage return ending the super options, which the kernel does not
// escape.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func parseLine(line string) (Entry, error) {
	// Single spaces separate fields (the kernel escapes spaces within
	// them), and a field can be empty: a mount whose source is "".
	f := strings.Split(line, " ")
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %q", ErrFormat, fmt.Sprintf(format, args...), line)
	}
	if len(f) < 10 {
		return Entry{}, bad("%d fields, want at least 10", len(f))
	}
	var e Entry
	var err error
	if e.ID, err = strconv.Atoi(f[0]); err != nil || e.ID < 0 {
		return Entry{}, bad("mount ID %q", f[0])
	}
	if e.Parent, err = strconv.Atoi(f[1]); err != nil || e.Parent < 0 {
		return Entry{}, bad("parent ID %q", f[1])
	}
	if !isDev(f[2]) {
		return Entry{}, bad("device %q is not major:minor", f[2])
	}
	e.Dev, e.Root, e.MountPoint, e.Options = f[2], unescape(f[3]), unescape(f[4]), f[5]
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 {
		return Entry{}, bad(`no "-" after the optional fields`)
	}
	if len(f) < sep+4 {
		return Entry{}, bad(`%d fields after "-", want 3`, len(f)-sep-1)
	}
	if sep > 6 {
		e.Optional = f[6:sep]
	}
	// Fields after the super options would be a newer kernel's: ignored.
	e.FSType, e.Source, e.SuperOptions = unescape(f[sep+1]), unescape(f[sep+2]), f[sep+3]
	return e, nil
}

func isDev(s string) bool {
	major, minor, ok := strings.Cut(s, ":")
	return ok && isDigits(major) && isDigits(minor)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// unescape decodes the kernel's octal escapes (\040 space, \011 tab, \012
// newline, \134 backslash, and any other \ooo up to \377). A backslash
// not starting one is kept: the kernel escapes its own backslashes, so
// there is nothing else it could mean.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] <= '3' && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// SuperOption returns the value of the super option key of e ("" for a
// flag such as "ro") and whether e has it.
func SuperOption(e Entry, key string) (string, bool) {
	for _, opt := range strings.Split(e.SuperOptions, ",") {
		k, v, _ := strings.Cut(opt, "=")
		if unescape(k) == key {
			return unescape(v), true
		}
	}
	return "", false
}

// Top returns the entry visible at mountpoint, the one a path lookup (and
// so umount) reaches there, and false when mountpoint is not a mount
// point or what is mounted there is hidden.
//
// Mount points repeat: mounts stacked on one mount point each have the
// one below as parent, and a mount on a parent directory made later hides
// the mounts below it, which stay listed. So Top walks down from the root
// as a lookup does: at each mount, of its children on mountpoint or on a
// directory above it, the one nearest the root is what the lookup meets
// first (one on a deeper directory was mounted before it and is hidden).
func Top(entries []Entry, mountpoint string) (Entry, bool) {
	mp := filepath.Clean(mountpoint)
	ids := make(map[int]bool, len(entries))
	children := map[int][]int{} // by parent ID: indexes in entries
	for _, e := range entries {
		ids[e.ID] = true
	}
	const outside = -1 // the parent of roots: not listed, or itself
	for i, e := range entries {
		p := e.Parent
		if p == e.ID || !ids[p] {
			p = outside
		}
		children[p] = append(children[p], i)
	}
	cur := -1 // index in entries; -1: above the roots
	// Each step goes one mount down; a cycle in bad input ends here.
	for range len(entries) + 1 {
		id := outside
		if cur >= 0 {
			id = entries[cur].ID
		}
		next := -1
		for _, i := range children[id] {
			c := entries[i]
			if !under(mp, c.MountPoint) {
				continue
			}
			// Nearest the root wins; among equals (only at the roots, or
			// in bad input) the later line, as later mounts come last.
			if next < 0 || len(c.MountPoint) <= len(entries[next].MountPoint) {
				next = i
			}
		}
		if next < 0 {
			break
		}
		cur = next
	}
	if cur < 0 || entries[cur].MountPoint != mp {
		return Entry{}, false
	}
	return entries[cur], true
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}
