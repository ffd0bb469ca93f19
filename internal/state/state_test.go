package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/erofsd/erofsd/internal/control"
	"github.com/erofsd/erofsd/prefetchlist"
)

// sample is a state with every field set somewhere.
func sample() *File {
	return &File{
		Version: Version,
		Images: []Image{
			{FSID: "img1", Bootstrap: "/var/lib/erofsd/bootstraps/ab12", BlobDir: "/srv/blobs"},
			{FSID: "img2", DomainID: "dom", Bootstrap: "/var/lib/erofsd/bootstraps/cd34", BlobDir: "oci+http://reg:5000/app",
				PlainHTTP: true, Insecure: true, Platform: "linux/arm64", ByMount: true, Source: "reg:5000/app@sha256:0123"},
			{FSID: "img3", Bootstrap: "sha256:" + strings.Repeat("0", 64)},
		},
		Mounts: []Mount{
			{Mountpoint: "/mnt/a", FSID: "img1", Frontend: "cachefiles"},
			{Mountpoint: "/mnt/with space", FSID: "img2", DomainID: "dom", Frontend: "fanotify",
				Prefetch: &Prefetch{Whole: true, Files: prefetchlist.Files("/usr/bin", "/etc/passwd")}},
			{Mountpoint: "/mnt/c", FSID: "img3", Frontend: "cachefiles", Prefetch: &Prefetch{Files: prefetchlist.Files("/x")}},
		},
	}
}

func encode(t testing.TB, f *File) []byte {
	t.Helper()
	out := *f
	out.Version = Version
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(data, '\n')
}

// v1File is state.json as erofsd wrote it before versions (savedState in
// cmd/erofsd/state.go, json.MarshalIndent).
const v1File = `{
  "images": [
    {
      "fsid": "img1",
      "bootstrap": "/var/lib/erofsd/bootstraps/ab12",
      "blob_dir": "/srv/blobs",
      "by_mount": false
    },
    {
      "fsid": "img2",
      "domain_id": "dom",
      "bootstrap": "/var/lib/erofsd/bootstraps/cd34",
      "blob_dir": "oci+http://reg:5000/app",
      "insecure": true,
      "by_mount": true,
      "source": "reg:5000/app@sha256:0123"
    }
  ],
  "mounts": [
    {
      "mountpoint": "/mnt/a",
      "fsid": "img1",
      "frontend": "cachefiles"
    },
    {
      "mountpoint": "/mnt/b",
      "fsid": "img2",
      "domain_id": "dom",
      "frontend": "fanotify",
      "prefetch": {
        "whole": true,
        "files": [
          "/usr"
        ]
      }
    }
  ]
}`

var v1Want = &File{
	Version: 1,
	Images: []Image{
		{FSID: "img1", Bootstrap: "/var/lib/erofsd/bootstraps/ab12", BlobDir: "/srv/blobs"},
		{FSID: "img2", DomainID: "dom", Bootstrap: "/var/lib/erofsd/bootstraps/cd34", BlobDir: "oci+http://reg:5000/app",
			Insecure: true, ByMount: true, Source: "reg:5000/app@sha256:0123"},
	},
	Mounts: []Mount{
		{Mountpoint: "/mnt/a", FSID: "img1", Frontend: "cachefiles"},
		{Mountpoint: "/mnt/b", FSID: "img2", DomainID: "dom", Frontend: "fanotify", Prefetch: &Prefetch{Whole: true, Files: prefetchlist.Files("/usr")}},
	},
}

// TestV1FromControlTypes writes a version 1 file the way erofsd did, with
// the control API's types embedded, so that the frozen v1 types here are
// checked against what the old daemon produced.
func TestV1FromControlTypes(t *testing.T) {
	type savedPrefetch struct {
		Whole bool     `json:"whole,omitempty"`
		Files []string `json:"files,omitempty"`
	}
	type savedMount struct {
		control.Mount
		Prefetch *savedPrefetch `json:"prefetch,omitempty"`
	}
	type savedImage struct {
		control.RegisterRequest
		ByMount bool   `json:"by_mount"`
		Source  string `json:"source,omitempty"`
	}
	type savedState struct {
		Images []savedImage `json:"images"`
		Mounts []savedMount `json:"mounts"`
	}
	st := savedState{
		Images: []savedImage{
			{RegisterRequest: control.RegisterRequest{FSID: "img1", Bootstrap: "/var/lib/erofsd/bootstraps/ab12", BlobDir: "/srv/blobs"}},
			{RegisterRequest: control.RegisterRequest{FSID: "img2", DomainID: "dom", Bootstrap: "/var/lib/erofsd/bootstraps/cd34",
				BlobDir: "oci+http://reg:5000/app", Insecure: true}, ByMount: true, Source: "reg:5000/app@sha256:0123"},
		},
		Mounts: []savedMount{
			{Mount: control.Mount{Mountpoint: "/mnt/a", FSID: "img1", Frontend: "cachefiles"}},
			{Mount: control.Mount{Mountpoint: "/mnt/b", FSID: "img2", DomainID: "dom", Frontend: "fanotify"},
				Prefetch: &savedPrefetch{Whole: true, Files: []string{"/usr"}}},
		},
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != v1File {
		t.Errorf("the old daemon's output differs from the v1 sample:\n%s", data)
	}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, problems, err := Load(path)
	if err != nil || len(problems) > 0 {
		t.Fatalf("Load: %v %v", problems, err)
	}
	if !reflect.DeepEqual(got, v1Want) {
		t.Errorf("got %+v\nwant %+v", got, v1Want)
	}
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	if err := Save(path, sample()); err != nil {
		t.Fatal(err)
	}
	got, problems, err := Load(path)
	if err != nil || len(problems) > 0 {
		t.Fatalf("Load: %v %v", problems, err)
	}
	if !reflect.DeepEqual(got, sample()) {
		t.Errorf("got %+v\nwant %+v", got, sample())
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode())
	}
	var raw map[string]any
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &raw); err != nil || raw["version"] != float64(Version) {
		t.Errorf("version field: %v (%v)", raw["version"], err)
	}

	// An empty state is written with empty lists, read back as nothing.
	if err := Save(path, &File{}); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if !strings.Contains(string(data), `"images": []`) || !strings.Contains(string(data), `"mounts": []`) {
		t.Errorf("empty state written as\n%s", data)
	}
	if got, problems, err := Load(path); err != nil || len(problems) > 0 || len(got.Images)+len(got.Mounts) > 0 {
		t.Errorf("empty state: %+v %v %v", got, problems, err)
	}
}

// problem is what a test expects among Load's problems: an error that is
// target and whose text has every one of texts.
type problem struct {
	target error
	texts  []string
}

func TestLoad(t *testing.T) {
	good := string(encode(t, sample()))
	older := &File{Version: Version, Mounts: []Mount{{Mountpoint: "/mnt/old", FSID: "old", Frontend: "cachefiles"}}}
	olderData := string(encode(t, older))
	cut := good[:strings.Index(good, `"mountpoint": "/mnt/c"`)]
	mount := func(mp, fsid, fe string) string {
		return fmt.Sprintf(`{"mountpoint": %q, "fsid": %q, "frontend": %q}`, mp, fsid, fe)
	}
	for _, tc := range []struct {
		name       string
		cur, prev  *string // nil: no such file
		want       *File
		problems   []problem
		fatal      error
		fatalTexts []string
	}{
		{name: "missing", want: &File{Version: Version}},
		{name: "missing, prev ignored", prev: &good, want: &File{Version: Version}},
		{name: "v2", cur: &good, want: sample()},
		{name: "v1", cur: ptr(v1File), want: v1Want},
		{name: "v1 with explicit version", cur: ptr(`{"version": 1, "mounts": [` + mount("/m", "f", "fanotify") + `]}`),
			want: &File{Version: 1, Mounts: []Mount{{Mountpoint: "/m", FSID: "f", Frontend: "fanotify"}}}},
		{name: "unknown fields ignored", cur: ptr(`{"version": 2, "future": {"x": [1]}, "mounts": [{"mountpoint": "/m", "fsid": "f", "frontend": "fanotify", "new": true}]}`),
			want: &File{Version: 2, Mounts: []Mount{{Mountpoint: "/m", FSID: "f", Frontend: "fanotify"}}}},
		{name: "newer version", cur: ptr(`{"version": 3, "mounts": []}`),
			fatal: ErrNewerVersion, fatalTexts: []string{"state.json", "version 3"}},
		{name: "newer version, prev ignored", cur: ptr(`{"version": 3, "mounts": []}`), prev: &good,
			fatal: ErrNewerVersion, fatalTexts: []string{"state.json:", "version 3"}},
		{name: "newer version in a cut file", cur: ptr(`{"version": 7, "mounts": [{"mountp`),
			fatal: ErrNewerVersion, fatalTexts: []string{"version 7"}},
		{name: "damaged, prev newer", cur: ptr(`{"vers`), prev: ptr(`{"version": 9}`),
			fatal: ErrNewerVersion, fatalTexts: []string{"state.json.prev", "version 9"}},
		{name: "empty file", cur: ptr(""), want: &File{Version: 1},
			problems: []problem{{ErrDamaged, []string{"state.json", "empty"}}}},
		{name: "garbage", cur: ptr("\x00\x01garbage"), want: &File{Version: 1},
			problems: []problem{{ErrDamaged, []string{"state.json", "at byte"}}}},
		{name: "not an object", cur: ptr(`[1, 2]`), want: &File{Version: 1},
			problems: []problem{{ErrDamaged, []string{"not a JSON object"}}}},
		{name: "version not a number", cur: ptr(`{"version": "2", "mounts": [` + mount("/m", "f", "fanotify") + `]}`),
			want:     &File{Version: 2, Mounts: []Mount{{Mountpoint: "/m", FSID: "f", Frontend: "fanotify"}}},
			problems: []problem{{ErrDamaged, []string{`version "2" is not a positive integer`}}}},
		{name: "version zero", cur: ptr(`{"version": 0}`), want: &File{Version: 2},
			problems: []problem{{ErrDamaged, []string{"version 0"}}}},
		{name: "data after the end", cur: ptr(good + `{}`), want: sample(),
			problems: []problem{{ErrDamaged, []string{"data after the end"}}}},
		{name: "truncated keeps entries before the cut", cur: &cut,
			want:     &File{Version: 2, Images: sample().Images, Mounts: sample().Mounts[:2]},
			problems: []problem{{ErrDamaged, []string{"state.json:", "mounts[2] and after lost", "keeping the entries"}}}},
		{name: "truncated, prev good", cur: &cut, prev: &olderData, want: older,
			problems: []problem{{ErrDamaged, []string{"state.json:", "using", "state.json.prev"}}}},
		{name: "both damaged", cur: &cut, prev: ptr(`{"version": 2, "mounts": [{`),
			want: &File{Version: 2, Images: sample().Images, Mounts: sample().Mounts[:2]},
			problems: []problem{
				{ErrDamaged, []string{"state.json:", "keeping the entries"}},
				{ErrDamaged, []string{"state.json.prev:", "mounts[0] and after lost"}},
			}},
		{name: "damaged, prev empty", cur: &cut, prev: ptr(""),
			want: &File{Version: 2, Images: sample().Images, Mounts: sample().Mounts[:2]},
			problems: []problem{
				{ErrDamaged, []string{"state.json:"}},
				{ErrDamaged, []string{"state.json.prev:", "empty"}},
			}},
		{name: "wrong type in an entry", cur: ptr(`{"version": 2, "images": [{"fsid": 5}], "mounts": [` + mount("/m", "f", "cachefiles") + `]}`),
			want: &File{Version: 2, Mounts: []Mount{{Mountpoint: "/m", FSID: "f", Frontend: "cachefiles"}}},
			problems: []problem{
				{ErrDamaged, []string{"images[0] does not decode"}},
				{ErrInvalidEntry, []string{"state.json:", "images[0]", "cannot unmarshal"}},
			}},
		{name: "wrong type in an entry, prev good", cur: ptr(`{"version": 2, "mounts": [5]}`), prev: &olderData, want: older,
			problems: []problem{{ErrDamaged, []string{"mounts[0] does not decode", "using"}}}},
		{name: "images not an array", cur: ptr(`{"version": 2, "images": {"fsid": "x"}, "mounts": []}`), want: &File{Version: 2},
			problems: []problem{{ErrDamaged, []string{"images is not an array"}}}},
		{name: "null lists", cur: ptr(`{"version": 2, "images": null, "mounts": null}`), want: &File{Version: 2}},
		{
			name: "invalid entries skipped, prev not used",
			cur: ptr(`{"version": 2, "images": [
				{"fsid": "", "bootstrap": "/b"},
				{"fsid": "a", "bootstrap": "relative/b"},
				{"fsid": "b", "bootstrap": "oci://reg/repo:tag"},
				{"fsid": "b", "bootstrap": "/other"},
				{"fsid": "b", "domain_id": "d", "bootstrap": "/other"}
			], "mounts": [` + strings.Join([]string{
				mount("relative", "f", "cachefiles"),
				mount("/mnt/../tmp", "f", "cachefiles"),
				mount("/mnt/x/", "f", "cachefiles"),
				mount("", "f", "cachefiles"),
				mount("/m", "", "cachefiles"),
				mount("/m", "f", "auto"),
				`{"mountpoint": "/m\u0000", "fsid": "f", "frontend": "cachefiles"}`,
				mount("/m", "f", "fanotify"),
				mount("/m", "g", "cachefiles"),
			}, ",") + `]}`),
			prev: &olderData,
			want: &File{Version: 2,
				Images: []Image{{FSID: "b", Bootstrap: "oci://reg/repo:tag"}, {FSID: "b", DomainID: "d", Bootstrap: "/other"}},
				Mounts: []Mount{{Mountpoint: "/m", FSID: "f", Frontend: "fanotify"}},
			},
			problems: []problem{
				{ErrInvalidEntry, []string{"state.json: images[0]", "empty fsid"}},
				{ErrInvalidEntry, []string{"images[1]", `bootstrap "relative/b"`}},
				{ErrInvalidEntry, []string{"images[3]", "listed before"}},
				{ErrInvalidEntry, []string{"mounts[0]", `mountpoint "relative"`}},
				{ErrInvalidEntry, []string{"mounts[1]", `"/mnt/../tmp" is not a clean absolute path`}},
				{ErrInvalidEntry, []string{"mounts[2]", "/mnt/x/"}},
				{ErrInvalidEntry, []string{"mounts[3]", "empty mountpoint"}},
				{ErrInvalidEntry, []string{"mounts[4]", "empty fsid"}},
				{ErrInvalidEntry, []string{"mounts[5]", `front end "auto"`}},
				{ErrInvalidEntry, []string{"mounts[6]", "NUL"}},
				{ErrInvalidEntry, []string{"mounts[8]", `"/m" listed before`}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			for p, s := range map[string]*string{path: tc.cur, path + ".prev": tc.prev} {
				if s != nil {
					if err := os.WriteFile(p, []byte(*s), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, problems, err := Load(path)
			if tc.fatal != nil {
				if !errors.Is(err, tc.fatal) {
					t.Fatalf("error %v, want %v", err, tc.fatal)
				}
				for _, s := range tc.fatalTexts {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				if got != nil {
					t.Errorf("state %+v with the error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			checkProblems(t, problems, tc.problems)
		})
	}
}

func ptr(s string) *string { return &s }

func checkProblems(t *testing.T, got []error, want []problem) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d: %q", len(got), len(want), got)
		return
	}
	for i, p := range want {
		if !errors.Is(got[i], p.target) {
			t.Errorf("problem %d: %v is not %v", i, got[i], p.target)
		}
		for _, s := range p.texts {
			if !strings.Contains(got[i].Error(), s) {
				t.Errorf("problem %d: %q lacks %q", i, got[i], s)
			}
		}
	}
}

// TestTruncated cuts a good file at every offset: Load never fails, keeps
// a prefix of the entries (never an altered one) and says the file is
// damaged unless the cut took only trailing space; with a good .prev it
// returns the whole of one file or the other.
func TestTruncated(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"v2", encode(t, sample())},
		{"v1", []byte(v1File)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full, problems, err := decodeFile(t, tc.data)
			if err != nil || len(problems) > 0 {
				t.Fatal(problems, err)
			}
			older := &File{Version: Version, Mounts: []Mount{{Mountpoint: "/mnt/old", FSID: "old", Frontend: "fanotify"}}}
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			prevData := encode(t, older)
			for n := 0; n <= len(tc.data); n++ {
				for _, withPrev := range []bool{false, true} {
					os.Remove(path + ".prev")
					if withPrev {
						writeFile(t, path+".prev", prevData)
					}
					writeFile(t, path, tc.data[:n])
					got, problems, err := Load(path)
					if err != nil {
						t.Fatalf("cut at %d: %v", n, err)
					}
					whole := len(strings.TrimSpace(string(tc.data[n:]))) == 0
					switch {
					case whole:
						if len(problems) > 0 || !reflect.DeepEqual(got, full) {
							t.Fatalf("cut at %d, only space lost: %+v %v", n, got, problems)
						}
					case withPrev:
						if !reflect.DeepEqual(got, older) || !errors.Is(problems[0], ErrDamaged) {
							t.Fatalf("cut at %d with prev: %+v %v", n, got, problems)
						}
					default:
						if len(problems) == 0 || !errors.Is(problems[0], ErrDamaged) {
							t.Fatalf("cut at %d: no damage reported: %v", n, problems)
						}
						if !isPrefix(got.Images, full.Images) || !isPrefix(got.Mounts, full.Mounts) ||
							len(got.Mounts) > 0 && len(got.Images) < len(full.Images) {
							t.Fatalf("cut at %d: not a prefix: %+v", n, got)
						}
					}
				}
			}
			// A cut after the last entry keeps every entry.
			got, _, _ := decodeFile(t, tc.data[:len(tc.data)-4])
			if !reflect.DeepEqual(got.Mounts, full.Mounts) {
				t.Errorf("cut in the closing brackets lost mounts: %+v", got.Mounts)
			}
		})
	}
}

func decodeFile(t *testing.T, data []byte) (*File, []error, error) {
	t.Helper()
	return load("state.json", func(p string) ([]byte, error) {
		if p == "state.json" {
			return data, nil
		}
		return nil, fs.ErrNotExist
	})
}

func isPrefix[T any](got, full []T) bool {
	return len(got) <= len(full) && reflect.DeepEqual(got, full[:len(got)]) || len(got) == 0
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	good := encode(t, sample())
	// A good file followed by spaces up to more than MaxSize: damaged
	// only by its size, and the entries in the first MaxSize bytes kept.
	big := append(good[:len(good)-2:len(good)-2], make([]byte, MaxSize)...)
	for i := len(good) - 2; i < len(big); i++ {
		big[i] = ' '
	}
	writeFile(t, path, append(big, "}\n"...))
	got, problems, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	checkProblems(t, problems, []problem{{ErrTooLarge, []string{"state.json", "more than 16777216 bytes", "keeping the entries"}}})
	if !reflect.DeepEqual(got, sample()) {
		t.Errorf("got %+v", got)
	}
	// Exactly MaxSize is not too large.
	writeFile(t, path, append(big[:MaxSize-2], "}\n"...))
	if _, problems, err := Load(path); err != nil || len(problems) > 0 {
		t.Errorf("MaxSize bytes: %v %v", problems, err)
	}
}

func TestUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Load of a directory: %v", err)
	}
}

// TestSaveSteps fails Save at every step, as a crash there would stop it
// (nothing after the step runs, not even the cleanup), and checks before
// every step, i.e. at every instant a crash could leave, that path loads
// whole as the old or the new state and .prev as the previous or the old.
func TestSaveSteps(t *testing.T) {
	older := &File{Version: Version, Mounts: []Mount{{Mountpoint: "/mnt/older", FSID: "f", Frontend: "cachefiles"}}}
	old := &File{Version: Version, Mounts: []Mount{{Mountpoint: "/mnt/old", FSID: "f", Frontend: "cachefiles"}}}
	next := sample()
	wantSteps := []string{"mkdir", "check", "create", "write", "sync", "close", "link", "rename-prev", "rename", "sync-dir"}
	errCrash := errors.New("crash")
	for crashAt := 0; crashAt <= len(wantSteps); crashAt++ {
		name := "no crash"
		if crashAt < len(wantSteps) {
			name = "crash at " + wantSteps[crashAt]
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			for _, f := range []*File{older, old} {
				if err := Save(path, f); err != nil {
					t.Fatal(err)
				}
			}
			check := func(when string) {
				got, problems, err := Load(path)
				if err != nil || len(problems) > 0 || !reflect.DeepEqual(got, old) && !reflect.DeepEqual(got, next) {
					t.Fatalf("%s: %s: %+v %v %v", when, path, got, problems, err)
				}
				prev, problems, err := Load(path + ".prev")
				if err != nil || len(problems) > 0 || !reflect.DeepEqual(prev, older) && !reflect.DeepEqual(prev, old) {
					t.Fatalf("%s: .prev: %+v %v %v", when, prev, problems, err)
				}
			}
			var steps []string
			crashed := false
			err := save(path, next, func(step string) error {
				check("before " + step)
				if crashed {
					return errCrash
				}
				steps = append(steps, step)
				if len(steps)-1 == crashAt {
					crashed = true
					return errCrash
				}
				return nil
			})
			check("after")
			if crashAt == len(wantSteps) {
				if err != nil || !reflect.DeepEqual(steps, wantSteps) {
					t.Fatalf("steps %q, error %v", steps, err)
				}
				got, _, _ := Load(path)
				prev, _, _ := Load(path + ".prev")
				if !reflect.DeepEqual(got, next) || !reflect.DeepEqual(prev, old) {
					t.Errorf("after a save: %+v, prev %+v", got, prev)
				}
				return
			}
			if !errors.Is(err, errCrash) {
				t.Fatalf("error %v", err)
			}
			// What a crash leaves behind does not disturb the next save.
			if err := Save(path, next); err != nil {
				t.Fatal(err)
			}
			if got, problems, err := Load(path); err != nil || len(problems) > 0 || !reflect.DeepEqual(got, next) {
				t.Errorf("next save: %+v %v %v", got, problems, err)
			}
		})
	}
}

func TestSaveKeepsGoodPrev(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	old := &File{Version: Version, Mounts: []Mount{{Mountpoint: "/mnt/old", FSID: "f", Frontend: "cachefiles"}}}
	writeFile(t, path+".prev", encode(t, old))
	writeFile(t, path, []byte(`{"version": 2, "mounts": [{"mou`))
	if err := Save(path, sample()); err != nil {
		t.Fatal(err)
	}
	if prev, problems, err := Load(path + ".prev"); err != nil || len(problems) > 0 || !reflect.DeepEqual(prev, old) {
		t.Errorf("a damaged file replaced the good .prev: %+v %v %v", prev, problems, err)
	}
	// No .prev from a first save.
	path2 := filepath.Join(dir, "first.json")
	if err := Save(path2, sample()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path2 + ".prev"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf(".prev after a first save: %v", err)
	}
	// No temporary files left.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestSaveRefusesNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	newer := `{"version": 3, "mounts": [{"what": "we cannot know"}]}`
	writeFile(t, path, []byte(newer))
	err := Save(path, sample())
	if !errors.Is(err, ErrNewerVersion) || !strings.Contains(err.Error(), path) {
		t.Errorf("Save over a newer file: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != newer {
		t.Errorf("newer file overwritten: %s", data)
	}
}

func TestSaveErrorNamesFile(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	writeFile(t, blocker, nil)
	path := filepath.Join(blocker, "state.json") // a directory that is a file
	if err := Save(path, sample()); err == nil || !strings.Contains(err.Error(), "state: saving "+path) {
		t.Errorf("Save: %v", err)
	}
}

// FuzzLoad: whatever the two files hold, Load does not panic, returns
// only valid entries, and what it returns saves and loads back unchanged.
func FuzzLoad(f *testing.F) {
	good := encode(f, sample())
	for _, seed := range [][2]string{
		{string(good), ""},
		{v1File, ""},
		{string(good[:len(good)/2]), v1File},
		{`{"version": 2, "mounts": [5, {"mountpoint": "/m", "fsid": "f", "frontend": "fanotify"}]}`, ""},
		{`{"version": 3}`, ""},
		{"", `{"mounts": [{"mountpoint": "/a/../b", "fsid": "f", "frontend": "cachefiles"}]}`},
		{`{"images": [{"fsid": "x", "bootstrap": "sha256:1"}], "images": null}`, "garbage"},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]), seed[1] != "")
	}
	f.Fuzz(func(t *testing.T, cur, prev []byte, hasPrev bool) {
		got, problems, err := load("state.json", func(p string) ([]byte, error) {
			switch {
			case p == "state.json":
				return cur, nil
			case p == "state.json.prev" && hasPrev:
				return prev, nil
			}
			return nil, fs.ErrNotExist
		})
		if err != nil {
			if !errors.Is(err, ErrNewerVersion) || got != nil {
				t.Fatalf("unexpected error %v (state %+v)", err, got)
			}
			return
		}
		for _, p := range problems {
			if !errors.Is(p, ErrDamaged) && !errors.Is(p, ErrInvalidEntry) {
				t.Errorf("problem of no kind: %v", p)
			}
		}
		seen := map[string]bool{}
		for _, m := range got.Mounts {
			if why := validMount(&m); why != "" || seen[m.Mountpoint] {
				t.Fatalf("invalid mount returned: %+v: %s", m, why)
			}
			seen[m.Mountpoint] = true
		}
		for _, im := range got.Images {
			if why := validImage(&im); why != "" {
				t.Fatalf("invalid image returned: %+v: %s", im, why)
			}
		}
		again, problems, err := decodeFile(t, encode(t, got))
		if err != nil || len(problems) > 0 {
			t.Fatalf("what Load returned does not load back: %v %v", problems, err)
		}
		if !sameEntries(again, got) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", got, again)
		}
	})
}

// sameEntries compares entries, nil and empty lists alike.
func sameEntries(a, b *File) bool {
	norm := func(f *File) string {
		data, _ := json.Marshal(File{Images: append([]Image{}, f.Images...), Mounts: append([]Mount{}, f.Mounts...)})
		return string(data)
	}
	return norm(a) == norm(b)
}
