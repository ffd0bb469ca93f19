// Package fanotifyabi decodes the fanotify events erofsd reads (the
// event metadata and its range info record, include/uapi/linux/fanotify.h)
// and encodes permission responses. Decoders check every length first.
package fanotifyabi

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Sizes of the wire structures.
const (
	MetadataSize   = unix.FAN_EVENT_METADATA_LEN // struct fanotify_event_metadata
	InfoHeaderSize = 4                           // struct fanotify_event_info_header
	RangeInfoSize  = 24                          // struct fanotify_event_info_range
	ResponseSize   = 8                           // struct fanotify_response
)

// ErrMalformed reports an event that does not decode.
var ErrMalformed = errors.New("fanotify: malformed event")

var le = binary.LittleEndian

// Event is one decoded event.
type Event struct {
	Mask uint64
	Fd   int32 // an fd of the accessed file, opened for the listener
	Pid  int32
	// HasRange reports a range info record: the access is to
	// [Offset, Offset+Count) of the file.
	HasRange      bool
	Offset, Count uint64
}

// Next decodes the first event in b and returns it with the number of
// bytes it occupies.
func Next(b []byte) (Event, int, error) {
	if len(b) < MetadataSize {
		return Event{}, 0, fmt.Errorf("%w: %d bytes left", ErrMalformed, len(b))
	}
	evLen := int(le.Uint32(b[0:]))
	vers, metaLen := b[4], int(le.Uint16(b[6:]))
	if vers != unix.FANOTIFY_METADATA_VERSION {
		return Event{}, 0, fmt.Errorf("%w: metadata version %d", ErrMalformed, vers)
	}
	if metaLen < MetadataSize || evLen < metaLen || evLen > len(b) {
		return Event{}, 0, fmt.Errorf("%w: event length %d, metadata length %d, %d bytes", ErrMalformed, evLen, metaLen, len(b))
	}
	ev := Event{Mask: le.Uint64(b[8:]), Fd: int32(le.Uint32(b[16:])), Pid: int32(le.Uint32(b[20:]))}
	for info := b[metaLen:evLen]; len(info) > 0; {
		if len(info) < InfoHeaderSize {
			return ev, evLen, fmt.Errorf("%w: truncated info header", ErrMalformed)
		}
		typ, n := info[0], int(le.Uint16(info[2:]))
		if n < InfoHeaderSize || n > len(info) {
			return ev, evLen, fmt.Errorf("%w: info record of %d bytes in %d", ErrMalformed, n, len(info))
		}
		if typ == unix.FAN_EVENT_INFO_TYPE_RANGE {
			if n < RangeInfoSize {
				return ev, evLen, fmt.Errorf("%w: range record of %d bytes", ErrMalformed, n)
			}
			ev.HasRange, ev.Offset, ev.Count = true, le.Uint64(info[8:]), le.Uint64(info[16:])
		}
		info = info[n:]
	}
	return ev, evLen, nil
}

// Response encodes a permission response for the event's fd: allow, or
// deny with errno (0: plain deny, which readers see as EPERM).
func Response(fd int32, allow bool, errno unix.Errno) []byte {
	b := make([]byte, ResponseSize)
	le.PutUint32(b[0:], uint32(fd))
	r := uint32(unix.FAN_ALLOW)
	if !allow {
		r = unix.FAN_DENY | (uint32(errno)&unix.FAN_ERRNO_MASK)<<unix.FAN_ERRNO_SHIFT
	}
	le.PutUint32(b[4:], r)
	return b
}

// EncodeEvent builds an event with a range record, for tests and fuzzing.
func EncodeEvent(mask uint64, fd int32, off, count uint64) []byte {
	b := make([]byte, MetadataSize+RangeInfoSize)
	le.PutUint32(b[0:], uint32(len(b)))
	b[4] = unix.FANOTIFY_METADATA_VERSION
	le.PutUint16(b[6:], MetadataSize)
	le.PutUint64(b[8:], mask)
	le.PutUint32(b[16:], uint32(fd))
	r := b[MetadataSize:]
	r[0] = unix.FAN_EVENT_INFO_TYPE_RANGE
	le.PutUint16(r[2:], RangeInfoSize)
	le.PutUint64(r[8:], off)
	le.PutUint64(r[16:], count)
	return b
}
