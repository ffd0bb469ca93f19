package erofstrace

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxFormat bounds a format file; real ones are about 1 KiB.
const maxFormat = 64 << 10

// maxRecord bounds the offsets and sizes accepted from a format file: a
// trace record fits in a page.
const maxRecord = 1 << 16

// errNoField is wrapped when an event lacks a field the program reads.
var errNoField = errors.New("no such field")

// formatField is a field of a tracepoint's record, from the event's
// format file in tracefs.
type formatField struct {
	Offset, Size int
	Signed       bool
}

// parseFormat reads the fields of an event's format file, lines like
//
//	field:unsigned long start;	offset:24;	size:8;	signed:0;
//
// by name. Other lines (name, ID, print fmt) are skipped; a field line
// that does not parse, and a name given twice, are errors.
func parseFormat(data []byte) (map[string]formatField, error) {
	if len(data) > maxFormat {
		return nil, fmt.Errorf("format: %d bytes, at most %d", len(data), maxFormat)
	}
	fields := map[string]formatField{}
	for n, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if !strings.HasPrefix(s, "field:") {
			continue
		}
		name, f, err := parseField(s)
		if err != nil {
			return nil, fmt.Errorf("format: line %d: %w", n+1, err)
		}
		if _, ok := fields[name]; ok {
			return nil, fmt.Errorf("format: line %d: field %q given twice", n+1, name)
		}
		fields[name] = f
	}
	return fields, nil
}

func parseField(line string) (string, formatField, error) {
	var f formatField
	var name string
	var haveOff, haveSize bool
	for _, part := range strings.Split(line, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			continue // the empty tail after the last ';'
		}
		switch k {
		case "field":
			// "unsigned long start", "char comm[16]", "__data_loc char[] name".
			decl := strings.Fields(v)
			if len(decl) < 2 {
				return "", f, fmt.Errorf("field %q: want a type and a name", v)
			}
			name, _, _ = strings.Cut(decl[len(decl)-1], "[")
			if name == "" {
				return "", f, fmt.Errorf("field %q: empty name", v)
			}
		case "offset", "size", "signed":
			x, err := strconv.Atoi(v)
			if err != nil || x < 0 || x > maxRecord {
				return "", f, fmt.Errorf("%s %q: want 0..%d", k, v, maxRecord)
			}
			switch k {
			case "offset":
				f.Offset, haveOff = x, true
			case "size":
				f.Size, haveSize = x, true
			default:
				f.Signed = x != 0
			}
		}
	}
	if name == "" || !haveOff || !haveSize {
		return "", f, fmt.Errorf("%q: want field, offset and size", line)
	}
	if f.Size == 0 || f.Offset+f.Size > maxRecord {
		return "", f, fmt.Errorf("field %s: offset %d and size %d out of a %d-byte record", name, f.Offset, f.Size, maxRecord)
	}
	return name, f, nil
}

// intField returns the offset and size of the integer field name, which
// the program reads as 1, 2, 4 or 8 bytes.
func intField(fields map[string]formatField, name string) (off, size uint32, err error) {
	f, ok := fields[name]
	if !ok {
		return 0, 0, fmt.Errorf("%w %q", errNoField, name)
	}
	switch f.Size {
	case 1, 2, 4, 8:
	default:
		return 0, 0, fmt.Errorf("field %q: %d bytes, want an integer of 1, 2, 4 or 8", name, f.Size)
	}
	return uint32(f.Offset), uint32(f.Size), nil
}

// Which of the two kinds of events a layout is for.
const (
	readahead = iota // dev, nid, start, nrpage
	readFolio        // dev, nid, index, dir: one page
)

// field and layout mirror struct field and struct layout in
// bpf/trace.c: where the program finds what it reads of an event.
type field struct{ Off, Size uint32 }

type layout struct{ Dev, Nid, Index, Count, Dir field }

// layoutOf finds in an event's format what the BPF program reads of it;
// a missing field is an error wrapping errNoField.
func layoutOf(format []byte, kind int) (layout, error) {
	var l layout
	fields, err := parseFormat(format)
	if err != nil {
		return l, err
	}
	get := func(name string, f *field) {
		if err == nil {
			f.Off, f.Size, err = intField(fields, name)
		}
	}
	get("dev", &l.Dev)
	get("nid", &l.Nid)
	if kind == readahead {
		get("start", &l.Index)
		get("nrpage", &l.Count)
	} else {
		get("index", &l.Index)
		get("dir", &l.Dir)
	}
	return l, err
}
