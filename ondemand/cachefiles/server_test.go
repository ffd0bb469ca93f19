package cachefiles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/erofsd/erofsd/ondemand"
	abi "github.com/erofsd/erofsd/ondemand/internal/cachefiles"
)

// fakeKernel plays the kernel's side: it queues messages, records copen
// replies and READ_COMPLETEs, and keeps each object's written bytes.
type fakeKernel struct {
	mu        sync.Mutex
	queue     [][]byte
	wakeCh    chan struct{}
	replies   map[uint32]int64 // msg id -> copen size
	completed map[uint32]bool  // READ msg ids completed
	data      map[int32][]byte // per anon fd
	closed    map[int32]bool
	done      chan struct{} // closed when all expected answers arrived
	expect    int
	discard   bool // count writes but keep no data (benchmarks)
}

func newFakeKernel(expect int) *fakeKernel {
	return &fakeKernel{wakeCh: make(chan struct{}, 1), replies: map[uint32]int64{}, completed: map[uint32]bool{},
		data: map[int32][]byte{}, closed: map[int32]bool{}, done: make(chan struct{}), expect: expect}
}

func (k *fakeKernel) push(msg []byte) {
	k.mu.Lock()
	k.queue = append(k.queue, msg)
	k.mu.Unlock()
	k.wake()
}

func (k *fakeKernel) wait() error {
	<-k.wakeCh
	return nil
}

func (k *fakeKernel) wake() {
	select {
	case k.wakeCh <- struct{}{}:
	default:
	}
}

func (k *fakeKernel) read(buf []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.queue) == 0 {
		return 0, nil
	}
	n := copy(buf, k.queue[0])
	k.queue = k.queue[1:]
	return n, nil
}

func (k *fakeKernel) answered() {
	if len(k.replies)+len(k.completed) == k.expect {
		close(k.done)
	}
}

func (k *fakeKernel) command(cmd string) error {
	var id uint32
	var size int64
	if _, err := fmt.Sscanf(cmd, "copen %d,%d", &id, &size); err != nil {
		return fmt.Errorf("unexpected command %q", cmd)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.replies[id] = size
	k.answered()
	return nil
}

func (k *fakeKernel) object(fd int32) (objectIO, error) { return &fakeObject{k: k, fd: fd}, nil }

type fakeObject struct {
	k  *fakeKernel
	fd int32
}

func (o *fakeObject) pwrite(p []byte, off int64) error {
	if off%4096 != 0 || len(p)%4096 != 0 {
		return fmt.Errorf("unaligned write %d at %d", len(p), off)
	}
	if o.k.discard {
		return nil
	}
	o.k.mu.Lock()
	defer o.k.mu.Unlock()
	d := o.k.data[o.fd]
	if need := int(off) + len(p); need > len(d) {
		d = append(d, make([]byte, need-len(d))...)
	}
	copy(d[off:], p)
	o.k.data[o.fd] = d
	return nil
}

func (o *fakeObject) complete(id uint32) error {
	o.k.mu.Lock()
	defer o.k.mu.Unlock()
	o.k.completed[id] = true
	o.k.answered()
	return nil
}

func (o *fakeObject) close() error {
	o.k.mu.Lock()
	defer o.k.mu.Unlock()
	o.k.closed[o.fd] = true
	return nil
}

// fakeSource serves a byte pattern, or fails or panics on demand.
type fakeSource struct {
	size  int64
	fail  bool
	panic bool
}

func (s *fakeSource) Size() int64                           { return s.size }
func (s *fakeSource) Name() string                          { return "fake" }
func (s *fakeSource) Readahead(off, n int64) (int64, int64) { return 0, 0 }
func (s *fakeSource) Fill(ctx context.Context, off, n int64, w ondemand.BlockWriter) error {
	if s.panic {
		panic("source exploded")
	}
	if s.fail {
		return errors.New("store unreachable")
	}
	start := off &^ 4095
	end := (off + n + 4095) &^ 4095
	buf := bytes.Repeat([]byte{byte(start / 4096)}, int(end-start))
	return w.WriteBlocks(buf, start)
}

type fakeResolver map[string]ondemand.Source

func (r fakeResolver) Resolve(volume, cookie string) (*ondemand.Object, error) {
	src, ok := r[cookie]
	if !ok {
		return nil, ondemand.ErrUnknownObject
	}
	return &ondemand.Object{Source: src, Image: &ondemand.Image{}, Kind: "blob"}, nil
}

func TestEveryRequestAnswered(t *testing.T) {
	res := fakeResolver{
		"good": &fakeSource{size: 10000},
		"bad":  &fakeSource{size: 8192, fail: true},
		"boom": &fakeSource{size: 8192, panic: true},
	}
	k := newFakeKernel(8) // 4 copens + 4 completes
	s := newServer(k, res, Config{Workers: 2})
	k.push(abi.EncodeOpenMsg(1, 10, 100, "erofs,x", "good"))
	k.push(abi.EncodeOpenMsg(2, 11, 101, "erofs,x", "bad"))
	k.push(abi.EncodeOpenMsg(3, 12, 102, "erofs,x", "boom"))
	k.push(abi.EncodeOpenMsg(4, 13, 103, "erofs,x", "missing"))
	k.push(abi.EncodeReadMsg(5, 10, 4096, 100))
	k.push(abi.EncodeReadMsg(6, 11, 0, 4096))
	k.push(abi.EncodeReadMsg(7, 12, 0, 4096))
	k.push(abi.EncodeReadMsg(8, 10, 8192, 1<<20)) // past the end: clipped to the cache file
	k.push([]byte{1, 2, 3})                       // malformed: ignored, counted

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	select {
	case <-k.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("not every request was answered: copens %v, completes %v", k.replies, k.completed)
	}
	k.push(abi.EncodeCloseMsg(9, 10))
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve: %v", err)
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	if k.replies[1] != 10000 || k.replies[2] != 8192 || k.replies[3] != 8192 {
		t.Errorf("copen sizes: %v", k.replies)
	}
	if k.replies[4] != -2 { // -ENOENT for an unknown blob
		t.Errorf("copen for an unknown object: %d", k.replies[4])
	}
	for _, id := range []uint32{5, 6, 7, 8} {
		if !k.completed[id] {
			t.Errorf("READ %d not completed", id)
		}
	}
	if got := k.data[100]; len(got) != 12288 || got[4096] != 1 || got[8192] != 2 {
		t.Errorf("object data: %d bytes", len(got))
	}
	if len(k.data[101]) != 0 || len(k.data[102]) != 0 {
		t.Error("failed sources wrote data")
	}
	if !k.closed[100] || !k.closed[103] {
		t.Errorf("fds closed: %v (100 after CLOSE, 103 after the refused OPEN)", k.closed)
	}
	if s.Stats.ReadErrors.Load() != 2 || s.Stats.Panicked.Load() != 1 || s.Stats.Malformed.Load() != 1 || s.Stats.OpenErrors.Load() != 1 {
		t.Errorf("stats: read errors %d panics %d malformed %d open errors %d", s.Stats.ReadErrors.Load(),
			s.Stats.Panicked.Load(), s.Stats.Malformed.Load(), s.Stats.OpenErrors.Load())
	}
}

// blockingSource holds READs until released, to test CLOSE during READ.
type blockingSource struct {
	release chan struct{}
}

func (s *blockingSource) Size() int64                           { return 4096 }
func (s *blockingSource) Name() string                          { return "blocking" }
func (s *blockingSource) Readahead(off, n int64) (int64, int64) { return 0, 0 }
func (s *blockingSource) Fill(ctx context.Context, off, n int64, w ondemand.BlockWriter) error {
	<-s.release
	return w.WriteBlocks(make([]byte, 4096), 0)
}

func TestCloseWaitsForInflightRead(t *testing.T) {
	src := &blockingSource{release: make(chan struct{})}
	k := newFakeKernel(2)
	s := newServer(k, fakeResolver{"b": src}, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)
	k.push(abi.EncodeOpenMsg(1, 7, 50, "erofs,x", "b"))
	k.push(abi.EncodeReadMsg(2, 7, 0, 4096))
	k.push(abi.EncodeCloseMsg(3, 7))
	time.Sleep(100 * time.Millisecond)
	k.mu.Lock()
	early := k.closed[50]
	k.mu.Unlock()
	if early {
		t.Fatal("fd closed while a READ was still writing into it")
	}
	close(src.release)
	select {
	case <-k.done:
	case <-time.After(5 * time.Second):
		t.Fatal("READ not completed")
	}
	time.Sleep(20 * time.Millisecond)
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.closed[50] {
		t.Fatal("fd not closed after the READ completed")
	}
}
