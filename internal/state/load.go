package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/erofsd/erofsd/prefetchlist"
)

// Load reads the state file at path. A missing file is an empty state.
//
// Problems are what Load worked around, each naming its file: a damaged
// file replaced by path+".prev" (ErrDamaged), entries skipped
// (ErrInvalidEntry). When both files are damaged, Load keeps every entry
// of path that still parses: the entries before a cut, those of the right
// shape elsewhere. The error is for what cannot be worked around: a file
// that cannot be read, or one from a newer erofsd (ErrNewerVersion).
func Load(path string) (*File, []error, error) {
	return load(path, readFile)
}

// load is Load reading through read, for tests and fuzzing.
func load(path string, read func(string) ([]byte, error)) (*File, []error, error) {
	cur, exists, err := loadOne(path, read)
	if err != nil {
		return nil, nil, err
	}
	if !exists {
		return &File{Version: Version}, nil, nil
	}
	if cur.damage == nil {
		return cur.file, cur.problems, nil
	}
	prevPath := path + ".prev"
	prev, prevExists, err := loadOne(prevPath, read)
	var prevProblem error
	switch {
	case errors.Is(err, ErrNewerVersion):
		return nil, nil, err
	case err != nil:
		prevProblem = err // unreadable: the damaged file is all there is
	case prevExists && prev.damage == nil:
		problems := []error{fmt.Errorf("%w; using %s, saved one write earlier", cur.damage, prevPath)}
		return prev.file, append(problems, prev.problems...), nil
	case prevExists:
		prevProblem = prev.damage
	}
	problems := []error{fmt.Errorf("%w; keeping the entries that parse", cur.damage)}
	problems = append(problems, cur.problems...)
	if prevProblem != nil {
		problems = append(problems, prevProblem)
	}
	return cur.file, problems, nil
}

// loadOne reads and decodes one file; exists is false for a missing one.
func loadOne(path string, read func(string) ([]byte, error)) (d decoded, exists bool, err error) {
	data, err := read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return decoded{}, false, nil
	}
	if err != nil && !errors.Is(err, ErrTooLarge) {
		return decoded{}, true, fmt.Errorf("state: %w", err) // os errors name the file
	}
	d, derr := decode(path, data)
	if derr != nil {
		return decoded{}, true, derr
	}
	if err != nil {
		// The prefix read parses as a cut file; the size is the news.
		d.damage = err
	}
	return d, true, nil
}

// readFile reads path, at most MaxSize bytes: a larger file is
// ErrTooLarge, returned with its first MaxSize bytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return data[:MaxSize], fmt.Errorf("state: %s: %w: %w: more than %d bytes", path, ErrDamaged, ErrTooLarge, MaxSize)
	}
	return data, nil
}

// decoded is one file read: its entries, the ones skipped, and why it
// does not parse as a whole (nil when it does).
type decoded struct {
	file     *File
	problems []error
	damage   error
}

// decode reads a state file of any known version element by element, so
// that damage costs only the entries it touches. It fails only for a
// newer version: guessing what a newer daemon meant could adopt or drop
// the wrong mounts.
func decode(name string, data []byte) (decoded, error) {
	var (
		version        json.RawMessage
		images, mounts []json.RawMessage
		damage         []string
	)
	dec := json.NewDecoder(bytes.NewReader(data))
	where := func(err error) string {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Sprintf("at byte %d: %v", dec.InputOffset(), err)
	}
	// array collects the elements of the array at the decoder, stopping
	// at the first one that is not JSON: nothing after it can be trusted
	// to be where it seems.
	array := func(key string, into *[]json.RawMessage) error {
		*into = nil // a repeated key replaces, as in json.Unmarshal
		tok, err := dec.Token()
		if err != nil || tok == nil {
			return err
		}
		if tok != json.Delim('[') {
			return fmt.Errorf("%s is not an array", key)
		}
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return fmt.Errorf("%s[%d] and after lost: %w", key, len(*into), err)
			}
			*into = append(*into, raw)
		}
		_, err = dec.Token()
		return err
	}
	walk := func() error {
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			if err == nil {
				err = errors.New("not a JSON object")
			}
			return err
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			switch key, _ := tok.(string); key {
			case "images":
				err = array(key, &images)
			case "mounts":
				err = array(key, &mounts)
			case "version":
				err = dec.Decode(&version)
			default:
				var skip json.RawMessage
				err = dec.Decode(&skip)
			}
			if err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		if _, err := dec.Token(); err != io.EOF {
			return errors.New("data after the end")
		}
		return nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		damage = append(damage, "empty")
	} else if err := walk(); err != nil {
		damage = append(damage, where(err))
	}

	v := 1 // no version field: the format before versions
	if version != nil {
		if err := json.Unmarshal(version, &v); err != nil || v < 1 {
			// Damage, not a newer format: read the entries as ours.
			damage = append(damage, fmt.Sprintf("version %s is not a positive integer", version))
			v = Version
		}
	}
	if v > Version {
		return decoded{}, fmt.Errorf("state: %s: %w: version %d, this erofsd knows up to %d", name, ErrNewerVersion, v, Version)
	}

	d := decoded{file: &File{Version: v}}
	skip := func(list string, i int, why string) {
		d.problems = append(d.problems, fmt.Errorf("state: %s: %s[%d]: %w: %s", name, list, i, ErrInvalidEntry, why))
	}
	seenImages := map[[2]string]bool{}
	for i, raw := range images {
		im, err := decodeImage(v, raw)
		if err != nil {
			damage = append(damage, fmt.Sprintf("images[%d] does not decode", i))
			skip("images", i, err.Error())
			continue
		}
		key := [2]string{im.FSID, im.DomainID}
		why := validImage(&im)
		if why == "" && seenImages[key] {
			why = fmt.Sprintf("fsid %q domain %q listed before", im.FSID, im.DomainID)
		}
		if why != "" {
			skip("images", i, why)
			continue
		}
		seenImages[key] = true
		d.file.Images = append(d.file.Images, im)
	}
	seenMounts := map[string]bool{}
	for i, raw := range mounts {
		m, err := decodeMount(v, raw)
		if err != nil {
			damage = append(damage, fmt.Sprintf("mounts[%d] does not decode", i))
			skip("mounts", i, err.Error())
			continue
		}
		why := validMount(&m)
		if why == "" && seenMounts[m.Mountpoint] {
			why = fmt.Sprintf("mountpoint %q listed before", m.Mountpoint)
		}
		if why != "" {
			skip("mounts", i, why)
			continue
		}
		seenMounts[m.Mountpoint] = true
		d.file.Mounts = append(d.file.Mounts, m)
	}
	if len(damage) > 0 {
		d.damage = fmt.Errorf("state: %s: %w: %s", name, ErrDamaged, strings.Join(damage, "; "))
	}
	return d, nil
}

func decodeImage(version int, raw json.RawMessage) (Image, error) {
	if version == 1 {
		var im v1Image
		err := json.Unmarshal(raw, &im)
		return im.convert(), err
	}
	var im Image
	err := json.Unmarshal(raw, &im)
	return im, err
}

func decodeMount(version int, raw json.RawMessage) (Mount, error) {
	if version == 1 {
		var m v1Mount
		err := json.Unmarshal(raw, &m)
		return m.convert(), err
	}
	var m Mount
	err := json.Unmarshal(raw, &m)
	return m, err
}

// v1Image and v1Mount are the unversioned format of erofsd before this
// package: control.RegisterRequest and control.Mount embedded, with a few
// fields beside. They are frozen copies, so that the API can change
// without changing what a version 1 file means.
type v1Image struct {
	FSID      string `json:"fsid"`
	DomainID  string `json:"domain_id,omitempty"`
	Bootstrap string `json:"bootstrap"`
	BlobDir   string `json:"blob_dir,omitempty"`
	PlainHTTP bool   `json:"plain_http,omitempty"`
	Insecure  bool   `json:"insecure,omitempty"`
	Platform  string `json:"platform,omitempty"`
	ByMount   bool   `json:"by_mount"`
	Source    string `json:"source,omitempty"`
}

type v1Mount struct {
	Mountpoint string `json:"mountpoint"`
	FSID       string `json:"fsid"`
	DomainID   string `json:"domain_id,omitempty"`
	Frontend   string `json:"frontend"`
	Prefetch   *struct {
		Whole bool     `json:"whole,omitempty"`
		Files []string `json:"files,omitempty"`
	} `json:"prefetch,omitempty"`
}

func (im v1Image) convert() Image {
	return Image{
		FSID: im.FSID, DomainID: im.DomainID, Bootstrap: im.Bootstrap, BlobDir: im.BlobDir,
		PlainHTTP: im.PlainHTTP, Insecure: im.Insecure, Platform: im.Platform,
		ByMount: im.ByMount, Source: im.Source,
	}
}

func (m v1Mount) convert() Mount {
	out := Mount{Mountpoint: m.Mountpoint, FSID: m.FSID, DomainID: m.DomainID, Frontend: m.Frontend}
	if m.Prefetch != nil {
		out.Prefetch = &Prefetch{Whole: m.Prefetch.Whole}
		for _, f := range m.Prefetch.Files {
			if f != "" { // as the current format refuses it
				out.Prefetch.Files = append(out.Prefetch.Files, prefetchlist.Entry{Path: f})
			}
		}
	}
	return out
}
