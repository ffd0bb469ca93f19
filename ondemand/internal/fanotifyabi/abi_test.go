package fanotifyabi

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEventRoundTrip(t *testing.T) {
	b := append(EncodeEvent(unix.FAN_PRE_ACCESS, 7, 4096, 65536), EncodeEvent(unix.FAN_PRE_ACCESS, 8, 0, 1)...)
	ev, n, err := Next(b)
	if err != nil || n != MetadataSize+RangeInfoSize || ev.Fd != 7 || !ev.HasRange || ev.Offset != 4096 || ev.Count != 65536 {
		t.Fatalf("first: %+v %d %v", ev, n, err)
	}
	ev, _, err = Next(b[n:])
	if err != nil || ev.Fd != 8 || ev.Count != 1 {
		t.Fatalf("second: %+v %v", ev, err)
	}
}

func TestMalformed(t *testing.T) {
	good := EncodeEvent(unix.FAN_PRE_ACCESS, 7, 0, 1)
	mutate := func(f func(b []byte)) []byte { b := append([]byte{}, good...); f(b); return b }
	for name, b := range map[string][]byte{
		"short":            good[:10],
		"bad version":      mutate(func(b []byte) { b[4] = 9 }),
		"event too long":   mutate(func(b []byte) { b[0] = 200 }),
		"meta too short":   mutate(func(b []byte) { b[6] = 8 }),
		"info len zero":    mutate(func(b []byte) { b[MetadataSize+2] = 0 }),
		"info len too big": mutate(func(b []byte) { b[MetadataSize+2] = 100 }),
		"range too short":  mutate(func(b []byte) { b[MetadataSize+2] = 8; b[0] = byte(MetadataSize + 8) }),
	} {
		if _, _, err := Next(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestResponse(t *testing.T) {
	if b := Response(5, true, 0); le.Uint32(b[0:]) != 5 || le.Uint32(b[4:]) != unix.FAN_ALLOW {
		t.Fatalf("allow: %x", b)
	}
	if b := Response(5, false, unix.EIO); le.Uint32(b[4:]) != unix.FAN_DENY|uint32(unix.EIO)<<24 {
		t.Fatalf("deny EIO: %x", b)
	}
}

func FuzzNext(f *testing.F) {
	f.Add(EncodeEvent(unix.FAN_PRE_ACCESS, 3, 0, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			_, n, err := Next(b)
			if err != nil {
				return
			}
			if n <= 0 || n > len(b) {
				t.Fatalf("Next consumed %d of %d bytes", n, len(b))
			}
			b = b[n:]
		}
	})
}
