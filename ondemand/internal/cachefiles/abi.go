// Package cachefiles holds the kernel ABI of the cachefiles on-demand
// protocol (include/uapi/linux/cachefiles.h): the messages read from
// /dev/cachefiles and the READ_COMPLETE ioctl. Decoders check every
// length before reading; fields are native-endian in the kernel, which
// is little-endian on every architecture erofsd supports.
package cachefiles

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Opcodes of cachefiles_msg.
const (
	OpOpen  = 0
	OpClose = 1
	OpRead  = 2
)

// Sizes of the wire structures.
const (
	MsgHeaderSize  = 16   // struct cachefiles_msg without data
	OpenHeaderSize = 16   // struct cachefiles_open without data
	ReadSize       = 16   // struct cachefiles_read
	MsgMaxSize     = 1024 // CACHEFILES_MSG_MAX_SIZE: a read buffer of this size holds any message
	MaxKeySize     = 255  // fscache volume and cookie key limits
)

// IocReadComplete is CACHEFILES_IOC_READ_COMPLETE = _IOW(0x98, 1, int);
// the message id is passed as the ioctl argument value.
const IocReadComplete = 0x40049801

// ErrMalformed reports a message that does not decode.
var ErrMalformed = errors.New("cachefiles: malformed message")

var le = binary.LittleEndian

// Msg is a decoded message header with its payload.
type Msg struct {
	ID       uint32
	Opcode   uint32
	ObjectID uint32
	Payload  []byte // aliases the input buffer
}

// DecodeMsg decodes one message as returned by a single read(2).
func DecodeMsg(b []byte) (Msg, error) {
	if len(b) < MsgHeaderSize {
		return Msg{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrMalformed, len(b), MsgHeaderSize)
	}
	m := Msg{ID: le.Uint32(b[0:]), Opcode: le.Uint32(b[4:]), ObjectID: le.Uint32(b[12:])}
	n := le.Uint32(b[8:])
	if n < MsgHeaderSize || uint64(n) > uint64(len(b)) {
		return Msg{}, fmt.Errorf("%w: length field %d, read %d bytes", ErrMalformed, n, len(b))
	}
	m.Payload = b[MsgHeaderSize:n]
	return m, nil
}

// Open is the payload of an OPEN message.
type Open struct {
	VolumeKey string // without its trailing NUL
	CookieKey string
	Fd        int32 // the anonymous fd the kernel installed in the reader
	Flags     uint32
}

// DecodeOpen decodes an OPEN payload.
func DecodeOpen(p []byte) (Open, error) {
	if len(p) < OpenHeaderSize {
		return Open{}, fmt.Errorf("%w: OPEN payload of %d bytes", ErrMalformed, len(p))
	}
	vks, cks := le.Uint32(p[0:]), le.Uint32(p[4:])
	o := Open{Fd: int32(le.Uint32(p[8:])), Flags: le.Uint32(p[12:])}
	data := p[OpenHeaderSize:]
	if vks > MaxKeySize+1 || cks > MaxKeySize || uint64(vks)+uint64(cks) > uint64(len(data)) {
		return o, fmt.Errorf("%w: OPEN keys of %d+%d bytes in %d", ErrMalformed, vks, cks, len(data))
	}
	vk := data[:vks]
	if len(vk) > 0 && vk[len(vk)-1] == 0 {
		vk = vk[:len(vk)-1]
	}
	o.VolumeKey = string(vk)
	o.CookieKey = string(data[vks : vks+cks])
	return o, nil
}

// Read is the payload of a READ message: a byte range of the object.
type Read struct {
	Off uint64
	Len uint64
}

// DecodeRead decodes a READ payload.
func DecodeRead(p []byte) (Read, error) {
	if len(p) < ReadSize {
		return Read{}, fmt.Errorf("%w: READ payload of %d bytes", ErrMalformed, len(p))
	}
	return Read{Off: le.Uint64(p[0:]), Len: le.Uint64(p[8:])}, nil
}

// EncodeOpenMsg builds an OPEN message, for tests and fuzz seeds.
func EncodeOpenMsg(id, object uint32, fd int32, volumeKey, cookieKey string) []byte {
	vk := append([]byte(volumeKey), 0)
	b := make([]byte, MsgHeaderSize+OpenHeaderSize+len(vk)+len(cookieKey))
	putHeader(b, id, OpOpen, object)
	p := b[MsgHeaderSize:]
	le.PutUint32(p[0:], uint32(len(vk)))
	le.PutUint32(p[4:], uint32(len(cookieKey)))
	le.PutUint32(p[8:], uint32(fd))
	copy(p[OpenHeaderSize:], vk)
	copy(p[OpenHeaderSize+len(vk):], cookieKey)
	return b
}

// EncodeReadMsg builds a READ message, for tests and fuzz seeds.
func EncodeReadMsg(id, object uint32, off, n uint64) []byte {
	b := make([]byte, MsgHeaderSize+ReadSize)
	putHeader(b, id, OpRead, object)
	le.PutUint64(b[MsgHeaderSize:], off)
	le.PutUint64(b[MsgHeaderSize+8:], n)
	return b
}

// EncodeCloseMsg builds a CLOSE message, for tests and fuzz seeds.
func EncodeCloseMsg(id, object uint32) []byte {
	b := make([]byte, MsgHeaderSize)
	putHeader(b, id, OpClose, object)
	return b
}

func putHeader(b []byte, id, op, object uint32) {
	le.PutUint32(b[0:], id)
	le.PutUint32(b[4:], op)
	le.PutUint32(b[8:], uint32(len(b)))
	le.PutUint32(b[12:], object)
}
