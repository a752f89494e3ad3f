package lease

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestOneHolderAtATime(t *testing.T) {
	t.Parallel()
	d := inmemory.New()
	clk := &clock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	newLease := func(holder string) *Lease {
		l, err := New(d, Options{Path: "/portcullis/test/lease", Holder: holder, Now: clk.now, Settle: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := newLease("a"), newLease("b")
	ha, err := a.Acquire(t.Context(), "run-a")
	if err != nil {
		t.Fatalf("a: %v", err)
	}
	var busy *BusyError
	if _, err := b.Acquire(t.Context(), "run-b"); !errors.As(err, &busy) || busy.Holder != "a" {
		t.Fatalf("b while a holds the lease: %v, want a BusyError naming a", err)
	}
	// a stops renewing (it died): the lease expires and b takes it.
	clk.advance(61 * time.Second)
	hb, err := b.Acquire(t.Context(), "run-b")
	if err != nil {
		t.Fatalf("b after expiry: %v", err)
	}
	ha.Release(t.Context()) // a late release must not free b's lease
	if info, ok, err := b.Read(t.Context()); err != nil || !ok || info.Holder != "b" {
		t.Fatalf("after a's late release: %+v %v %v, want b's lease", info, ok, err)
	}
	hb.Release(t.Context())
	if _, ok, err := b.Read(t.Context()); err != nil || ok {
		t.Fatalf("after b's release: present %v, %v", ok, err)
	}
}
