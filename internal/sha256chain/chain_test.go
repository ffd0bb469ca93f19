package sha256chain

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestInitial(t *testing.T) {
	s, err := Of(sha256.New())
	if err != nil {
		t.Fatal(err)
	}
	if s != Initial {
		t.Fatalf("state of an empty hash %x, want %x", s, Initial)
	}
}

// TestSteps checks that resuming at every recorded boundary and hashing
// the rest gives the digest of the whole message, and that each step
// from one state reaches the next.
func TestSteps(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	msg := make([]byte, 10_000)
	for i := range msg {
		msg[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(msg)
	h := sha256.New()
	var states []State
	for off := 0; off < len(msg); off += BlockSize {
		s, err := Of(h)
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, s)
		h.Write(msg[off:min(off+BlockSize, len(msg))])
	}
	for i, s := range states {
		off := i * BlockSize
		r, err := Resume(s, int64(off))
		if err != nil {
			t.Fatal(err)
		}
		r.Write(msg[off:])
		if got := r.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("resumed at %d: %x, want %x", off, got, want)
		}
		if i+1 < len(states) {
			r, _ := Resume(s, int64(off))
			r.Write(msg[off : off+BlockSize])
			if next, err := Of(r); err != nil || next != states[i+1] {
				t.Fatalf("step from %d: %x (%v), want %x", off, next, err, states[i+1])
			}
		}
	}
}

func TestUnaligned(t *testing.T) {
	if _, err := Resume(Initial, 65); !errors.Is(err, ErrUnaligned) {
		t.Fatalf("Resume at 65: %v, want ErrUnaligned", err)
	}
	if _, err := Resume(Initial, -64); !errors.Is(err, ErrUnaligned) {
		t.Fatalf("Resume at -64: %v, want ErrUnaligned", err)
	}
	h := sha256.New()
	h.Write([]byte("abc"))
	if _, err := Of(h); !errors.Is(err, ErrUnaligned) {
		t.Fatalf("Of after 3 bytes: %v, want ErrUnaligned", err)
	}
	if _, err := Of(sha256.New224()); err == nil {
		t.Fatal("Of accepted a sha224 state")
	}
}
