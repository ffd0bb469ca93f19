package keylock

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestExclusiveByKeyAndNoGrowth(t *testing.T) {
	var m Map
	var inside [4]atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				k := (g + i) % 4
				unlock := m.Lock(string(rune('a' + k)))
				if n := inside[k].Add(1); n != 1 {
					t.Errorf("key %d held %d times at once", k, n)
				}
				inside[k].Add(-1)
				unlock()
			}
		}()
	}
	wg.Wait()
	if n := m.Len(); n != 0 {
		t.Errorf("%d keys left after every unlock", n)
	}
}

func TestKeysIndependent(t *testing.T) {
	var m Map
	unlockA := m.Lock("a")
	done := make(chan struct{})
	go func() { m.Lock("b")(); close(done) }()
	<-done // would hang if "b" waited for "a"
	unlockA()
}
