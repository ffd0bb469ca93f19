package mountinfo

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Lines as kernels print them: from proc(5), from Linux 6.18 (a
// file-backed erofs mount of "/tmp/mi/img file.erofs" on "/tmp/mi/mnt
// point", made with mount(2)), and an fscache erofs mount as Linux 6.1
// shows one made with the fsopen API and no source.
const (
	procLine     = `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
	fileBacked   = `47 27 0:42 / /tmp/mi/mnt\040point ro,relatime - erofs /tmp/mi/img\040file.erofs ro,user_xattr,acl,cache_strategy=readaround`
	fscacheLine  = `120 27 0:45 / /mnt/img ro,nosuid,nodev,relatime shared:80 - erofs none ro,user_xattr,acl,cache_strategy=readaround,fsid=img1,domain_id=dom`
	rootLine     = `27 1 254:0 / / rw,relatime shared:1 master:2 - ext4 /dev/vda rw,discard`
	overlayLine  = `200 27 0:60 / /merged rw,relatime - overlay overlay rw,lowerdir=/l\054a:/l2,upperdir=/u,workdir=/w`
	escapedLine  = `201 27 0:61 /dir\040a\011b /mnt/x\012y\134z rw - tmpfs src\040\\9\400\ rw`
	emptySrcLine = `202 27 0:62 / /mnt/e rw - tmpfs  rw,size=4k`
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want Entry
	}{
		{"proc(5)", procLine, Entry{ID: 36, Parent: 35, Dev: "98:0", Root: "/mnt1", MountPoint: "/mnt2", Options: "rw,noatime",
			Optional: []string{"master:1"}, FSType: "ext3", Source: "/dev/root", SuperOptions: "rw,errors=continue"}},
		{"erofs file-backed", fileBacked, Entry{ID: 47, Parent: 27, Dev: "0:42", Root: "/", MountPoint: "/tmp/mi/mnt point",
			Options: "ro,relatime", FSType: "erofs", Source: "/tmp/mi/img file.erofs", SuperOptions: "ro,user_xattr,acl,cache_strategy=readaround"}},
		{"erofs fscache", fscacheLine, Entry{ID: 120, Parent: 27, Dev: "0:45", Root: "/", MountPoint: "/mnt/img",
			Options: "ro,nosuid,nodev,relatime", Optional: []string{"shared:80"}, FSType: "erofs", Source: "none",
			SuperOptions: "ro,user_xattr,acl,cache_strategy=readaround,fsid=img1,domain_id=dom"}},
		{"two optional fields", rootLine, Entry{ID: 27, Parent: 1, Dev: "254:0", Root: "/", MountPoint: "/", Options: "rw,relatime",
			Optional: []string{"shared:1", "master:2"}, FSType: "ext4", Source: "/dev/vda", SuperOptions: "rw,discard"}},
		{"escapes", escapedLine, Entry{ID: 201, Parent: 27, Dev: "0:61", Root: "/dir a\tb", MountPoint: "/mnt/x\ny\\z", Options: "rw",
			FSType: "tmpfs", Source: `src \\9\400\`, SuperOptions: "rw"}},
		{"empty source", emptySrcLine, Entry{ID: 202, Parent: 27, Dev: "0:62", Root: "/", MountPoint: "/mnt/e", Options: "rw",
			FSType: "tmpfs", Source: "", SuperOptions: "rw,size=4k"}},
		{"fields after the super options", procLine + " future", Entry{ID: 36, Parent: 35, Dev: "98:0", Root: "/mnt1", MountPoint: "/mnt2",
			Options: "rw,noatime", Optional: []string{"master:1"}, FSType: "ext3", Source: "/dev/root", SuperOptions: "rw,errors=continue"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.line + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
				t.Errorf("got  %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, line, why string
	}{
		{"empty fields", "1 2 3", "3 fields"},
		{"nine fields", "1 2 0:1 / /m rw - tmpfs tmpfs", "9 fields"},
		{"no separator", "1 2 0:1 / /m rw shared:1 x tmpfs tmpfs rw", `no "-"`},
		{"separator too late", "1 2 0:1 / /m rw shared:1 master:2 - tmpfs tmpfs", `2 fields after "-"`},
		{"separator as options", "1 2 0:1 / /m - tmpfs tmpfs rw x", `no "-"`},
		{"bad ID", "x 2 0:1 / /m rw - tmpfs tmpfs rw", `mount ID "x"`},
		{"negative ID", "-1 2 0:1 / /m rw - tmpfs tmpfs rw", `mount ID "-1"`},
		{"bad parent", "1 p 0:1 / /m rw - tmpfs tmpfs rw", `parent ID "p"`},
		{"bad device", "1 2 0x1 / /m rw - tmpfs tmpfs rw", `device "0x1"`},
		{"empty minor", "1 2 0: / /m rw - tmpfs tmpfs rw", `device "0:"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The bad line is the third: the error names it.
			_, err := Parse(strings.NewReader(rootLine + "\n\n" + tc.line + "\n" + procLine + "\n"))
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "line 3:") || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %v, want line 3 and %q", err, tc.why)
			}
		})
	}
	long := strings.Repeat("x", maxLine+1)
	if _, err := Parse(strings.NewReader(rootLine + "\n" + long + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("long line: %v", err)
	}
}

func TestParseEmpty(t *testing.T) {
	got, err := Parse(strings.NewReader(""))
	if err != nil || len(got) != 0 {
		t.Errorf("%v %v", got, err)
	}
}

func TestSuperOption(t *testing.T) {
	e := Entry{SuperOptions: `ro,user_xattr,fsid=img1,domain_id=dom,lowerdir=/l\054a:/l2,empty=,we\075ird=x`}
	for _, tc := range []struct {
		key, want string
		ok        bool
	}{
		{"ro", "", true},
		{"fsid", "img1", true},
		{"domain_id", "dom", true},
		{"lowerdir", "/l,a:/l2", true},
		{"empty", "", true},
		{"we=ird", "x", true},
		{"dom", "", false},
		{"rw", "", false},
	} {
		got, ok := SuperOption(e, tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("SuperOption(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

// mounts parses lines given as "ID PARENT MOUNTPOINT FSTYPE".
func mounts(t *testing.T, lines ...string) []Entry {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		var id, parent int
		var mp, fstype string
		if _, err := fmt.Sscan(l, &id, &parent, &mp, &fstype); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%d %d 0:%d / %s rw - %s src%d rw\n", id, parent, id, mp, fstype, id)
	}
	entries, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func TestTop(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		mp    string
		want  int // ID; 0: none, -1: any
	}{
		{"root", []string{"1 0 / ext4", "2 1 /proc proc"}, "/", 1},
		{"self-parent root", []string{"1 1 / ext4", "2 1 /mnt tmpfs"}, "/mnt", 2},
		{"single", []string{"1 0 / ext4", "2 1 /mnt tmpfs"}, "/mnt", 2},
		{"unclean argument", []string{"1 0 / ext4", "2 1 /mnt tmpfs"}, "/mnt/", 2},
		{"not a mount point", []string{"1 0 / ext4", "2 1 /mnt tmpfs"}, "/mnt/sub", 0},
		{"prefix is not a parent dir", []string{"1 0 / ext4", "2 1 /mnt tmpfs"}, "/mn", 0},
		{"stacked", []string{"1 0 / ext4", "2 1 /mnt tmpfs", "3 2 /mnt erofs", "4 3 /mnt tmpfs"}, "/mnt", 4},
		{"stacked, listed in any order", []string{"4 3 /mnt tmpfs", "1 0 / ext4", "3 2 /mnt erofs", "2 1 /mnt tmpfs"}, "/mnt", 4},
		{"stacked, top removed", []string{"1 0 / ext4", "2 1 /mnt tmpfs", "3 2 /mnt erofs"}, "/mnt", 3},
		{"stacked on root", []string{"1 0 / ext4", "2 1 / tmpfs", "3 2 /mnt erofs", "4 1 /mnt tmpfs"}, "/mnt", 3},
		{
			// 2 on /a/b, then 3 on /a hides it, then 4 on /a/b lands
			// in 3: a lookup of /a/b meets 3, then 4.
			"hidden by a mount above", []string{"1 0 / ext4", "2 1 /a/b erofs", "3 1 /a tmpfs", "4 3 /a/b tmpfs"}, "/a/b", 4,
		},
		{"hidden, nothing above", []string{"1 0 / ext4", "2 1 /a/b erofs", "3 1 /a tmpfs"}, "/a/b", 0},
		{"nested", []string{"1 0 / ext4", "2 1 /a tmpfs", "3 2 /a/b erofs"}, "/a/b", 3},
		{"under a chroot: roots elsewhere", []string{"5 9 /a tmpfs", "6 9 /b tmpfs", "7 6 /b/c erofs"}, "/b/c", 7},
		{"cycle", []string{"1 0 / ext4", "2 3 /m tmpfs", "3 2 /m tmpfs"}, "/m", 0},
		// Bad input making a loop through a reused ID: any answer, in time.
		{"duplicate IDs", []string{"1 0 / ext4", "1 1 /m tmpfs", "2 1 /m tmpfs", "1 2 /m tmpfs"}, "/m", -1},
		{"empty", nil, "/", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := Top(mounts(t, tc.lines...), tc.mp)
			switch tc.want {
			case -1:
				return
			case 0:
				if ok {
					t.Errorf("got %d, want none", e.ID)
				}
				return
			}
			if !ok || e.ID != tc.want {
				t.Errorf("got %d (%v), want %d", e.ID, ok, tc.want)
			}
		})
	}
}

func TestCheckErofs(t *testing.T) {
	parse := func(line string) Entry {
		entries, err := Parse(strings.NewReader(line))
		if err != nil {
			t.Fatal(err)
		}
		return entries[0]
	}
	fscache := parse(fscacheLine)
	noDomain := parse(`121 27 0:46 / /mnt/n ro - erofs none ro,user_xattr,acl,fsid=img1`)
	file := parse(fileBacked)
	tmpfs := parse(`122 27 0:47 / /mnt/img rw - tmpfs tmpfs rw,size=4k`)
	for _, tc := range []struct {
		name  string
		e     Entry
		want  Erofs
		texts []string // none: a match
	}{
		{"fscache", fscache, Erofs{FSID: "img1", DomainID: "dom"}, nil},
		{"fscache, no domain", noDomain, Erofs{FSID: "img1"}, nil},
		{"file-backed", file, Erofs{Source: "/tmp/mi/img file.erofs"}, nil},
		{"wrong fsid", fscache, Erofs{FSID: "img2", DomainID: "dom"}, []string{"/mnt/img", "fsid=img1, want fsid=img2"}},
		{"domain expected", noDomain, Erofs{FSID: "img1", DomainID: "dom"}, []string{`domain_id="", want "dom"`}},
		{"domain not expected", fscache, Erofs{FSID: "img1"}, []string{`domain_id="dom", want ""`}},
		{"fscache expected, file-backed found", file, Erofs{FSID: "img1"}, []string{"no fsid"}},
		{"file-backed expected, fscache found", fscache, Erofs{Source: "/img"}, []string{"fscache mount fsid=img1", `source "none", want "/img"`}},
		{"wrong source", file, Erofs{Source: "/tmp/mi/other.erofs"}, []string{`source "/tmp/mi/img file.erofs", want "/tmp/mi/other.erofs"`}},
		{"tmpfs", tmpfs, Erofs{FSID: "img1", DomainID: "dom"}, []string{"/mnt/img", `tmpfs mount of "tmpfs"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckErofs(tc.e, tc.want)
			if tc.texts == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("error %v, want ErrMismatch", err)
			}
			for _, s := range tc.texts {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q lacks %q", err, s)
				}
			}
		})
	}
	if err := CheckErofs(fscache, Erofs{}); err == nil || errors.Is(err, ErrMismatch) {
		t.Errorf("nothing to check against: %v", err)
	}
}

// format writes entries back as mountinfo, escaping as the kernel does.
func format(entries []Entry) string {
	esc := strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`)
	var b strings.Builder
	for _, e := range entries {
		f := []string{fmt.Sprint(e.ID), fmt.Sprint(e.Parent), e.Dev, esc.Replace(e.Root), esc.Replace(e.MountPoint), e.Options}
		f = append(f, e.Optional...)
		f = append(f, "-", esc.Replace(e.FSType), esc.Replace(e.Source), e.SuperOptions)
		b.WriteString(strings.Join(f, " ") + "\n")
	}
	return b.String()
}

// FuzzParse: Parse never panics, what it returns writes back and parses
// to the same, and Top finds each mount point's entry without looping.
func FuzzParse(f *testing.F) {
	for _, s := range []string{procLine, fileBacked, fscacheLine, rootLine, overlayLine, escapedLine, emptySrcLine,
		rootLine + "\n" + fscacheLine + "\n121 120 0:46 / /mnt/img rw - tmpfs x rw\n", "1 2 3", "\\", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		entries, err := Parse(strings.NewReader(s))
		if err != nil {
			if !errors.Is(err, ErrFormat) && !strings.Contains(err.Error(), "too long") {
				t.Fatalf("error of no kind: %v", err)
			}
			return
		}
		again, err := Parse(strings.NewReader(format(entries)))
		if err != nil {
			t.Fatalf("written back: %v\n%s", err, format(entries))
		}
		if !reflect.DeepEqual(again, entries) && !(len(again) == 0 && len(entries) == 0) {
			t.Fatalf("round trip:\n%#v\n%#v", entries, again)
		}
		for _, e := range entries {
			if top, ok := Top(entries, e.MountPoint); ok && top.MountPoint != filepath.Clean(e.MountPoint) {
				t.Fatalf("Top(%q) = %q", e.MountPoint, top.MountPoint)
			}
			SuperOption(e, "fsid")
			_ = CheckErofs(e, Erofs{FSID: "x", Source: "y"})
		}
	})
}
