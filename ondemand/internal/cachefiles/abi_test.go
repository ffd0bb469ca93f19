package cachefiles

import (
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	m, err := DecodeMsg(EncodeOpenMsg(7, 3, 42, "erofs,meta", "meta"))
	if err != nil || m.ID != 7 || m.Opcode != OpOpen || m.ObjectID != 3 {
		t.Fatalf("open header: %+v %v", m, err)
	}
	o, err := DecodeOpen(m.Payload)
	if err != nil || o.VolumeKey != "erofs,meta" || o.CookieKey != "meta" || o.Fd != 42 {
		t.Fatalf("open: %+v %v", o, err)
	}
	m, err = DecodeMsg(EncodeReadMsg(9, 3, 1<<40, 4096))
	if err != nil || m.Opcode != OpRead {
		t.Fatal(err)
	}
	r, err := DecodeRead(m.Payload)
	if err != nil || r.Off != 1<<40 || r.Len != 4096 {
		t.Fatalf("read: %+v %v", r, err)
	}
	m, err = DecodeMsg(EncodeCloseMsg(1, 3))
	if err != nil || m.Opcode != OpClose || len(m.Payload) != 0 {
		t.Fatalf("close: %+v %v", m, err)
	}
}

func TestMalformed(t *testing.T) {
	open := EncodeOpenMsg(1, 1, 5, "erofs,x", "x")
	bad := [][]byte{
		nil,
		make([]byte, 15),
		open[:len(open)-1], // length field says more than was read
	}
	for _, b := range bad {
		if _, err := DecodeMsg(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: %v", len(b), err)
		}
	}
	short := append([]byte{}, open...)
	short[8] = 8 // length below the header size
	if _, err := DecodeMsg(short); !errors.Is(err, ErrMalformed) {
		t.Error("length below header accepted")
	}
	m, _ := DecodeMsg(open)
	p := append([]byte{}, m.Payload...)
	p[0] = 200 // volume key size beyond the data
	if _, err := DecodeOpen(p); !errors.Is(err, ErrMalformed) {
		t.Error("oversized key accepted")
	}
	if _, err := DecodeOpen(p[:15]); !errors.Is(err, ErrMalformed) {
		t.Error("short OPEN accepted")
	}
	if _, err := DecodeRead(make([]byte, 15)); !errors.Is(err, ErrMalformed) {
		t.Error("short READ accepted")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(EncodeOpenMsg(1, 2, 3, "erofs,fsid", "blob"))
	f.Add(EncodeReadMsg(1, 2, 4096, 65536))
	f.Add(EncodeCloseMsg(1, 2))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMsg(b)
		if err != nil {
			return
		}
		switch m.Opcode {
		case OpOpen:
			if o, err := DecodeOpen(m.Payload); err == nil && (len(o.VolumeKey) > MaxKeySize+1 || len(o.CookieKey) > MaxKeySize) {
				t.Fatalf("oversized keys accepted: %d %d", len(o.VolumeKey), len(o.CookieKey))
			}
		case OpRead:
			DecodeRead(m.Payload)
		}
	})
}
