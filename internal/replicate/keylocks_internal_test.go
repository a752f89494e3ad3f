package replicate

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestKeyLocks: holders of one key run one at a time, other keys do not
// wait for them, and a key no one holds or waits for is forgotten.
func TestKeyLocks(t *testing.T) {
	var k keyLocks
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			unlock := k.lock("rule\x00repo\x00v1")
			defer unlock()
			n := inside.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			other := k.lock("rule\x00repo\x00v2") // another key: not blocked
			other()
			inside.Add(-1)
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("%d holders of one key at once, want 1", most.Load())
	}
	if len(k.m) != 0 {
		t.Errorf("%d keys kept after every holder left", len(k.m))
	}
}
