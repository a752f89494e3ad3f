package filesystem

import (
	"context"
	"fmt"
	"sync"
)

// groupSync runs one sync of the whole filesystem for every caller
// waiting when it starts: a caller waits for the first sync that starts
// after it called, so its earlier writes are in it, and callers that come
// while a sync runs share the next one.
type groupSync struct {
	sync func() error // syncfs(2) of the root's filesystem

	mu      sync.Mutex
	started uint64        // syncs started
	done    uint64        // syncs finished
	err     error         // the last finished sync's error
	running bool          // a sync runs now
	waiting int           // callers parked until a sync finishes
	wake    chan struct{} // closed when a sync finishes
}

func newGroupSync(sync func() error) *groupSync {
	return &groupSync{sync: sync, wake: make(chan struct{})}
}

// Sync returns once a sync that started after the call has finished, with
// that sync's error, or ctx's error if ctx ends first (the sync goes on).
func (g *groupSync) Sync(ctx context.Context) error {
	g.mu.Lock()
	want := g.started + 1
	for g.done < want {
		if !g.running {
			g.running = true
			g.started++
			n := g.started
			g.mu.Unlock()
			err := g.sync()
			g.mu.Lock()
			g.running = false
			g.done, g.err = n, err
			close(g.wake)
			g.wake = make(chan struct{})
			continue
		}
		wake := g.wake
		g.waiting++
		g.mu.Unlock()
		var cancelled error
		select {
		case <-wake:
		case <-ctx.Done():
			cancelled = ctx.Err()
		}
		g.mu.Lock()
		g.waiting--
		if cancelled != nil {
			g.mu.Unlock()
			return cancelled
		}
	}
	err := g.err
	g.mu.Unlock()
	if err != nil {
		return fmt.Errorf("sync filesystem: %w", err)
	}
	return nil
}

// Barrier collects the syncs a request's writes defer, for one sync of the
// filesystem before the request's success is answered. Writes made while
// it is open sync their files' contents as they go and leave their names
// (the directories that receive them) to the barrier; once Wait has
// begun, writes carrying the barrier sync everything themselves.
type Barrier struct {
	group *groupSync

	mu       sync.Mutex
	closed   bool
	dirty    bool
	inflight int
	idle     chan struct{} // closed when inflight falls to 0; nil when 0
}

// barrierKey is the context key of a request's Barrier.
type barrierKey struct{}

// WithBarrier returns a context whose writes through d defer their names'
// syncs to the returned Barrier. The caller must call its Wait before it
// acknowledges the writes, and should not hand the context to work that
// outlives the request (such work still syncs once Wait has begun, but
// Wait waits for what is in progress).
func (d *Driver) WithBarrier(ctx context.Context) (context.Context, *Barrier) {
	b := &Barrier{group: d.group}
	return context.WithValue(ctx, barrierKey{}, b), b
}

// barrierOf returns ctx's open barrier of d's filesystem, having counted
// a write in progress (end it with done), or nil: sync as you go.
func (d *Driver) barrierOf(ctx context.Context) *Barrier {
	b, _ := ctx.Value(barrierKey{}).(*Barrier)
	if b == nil || b.group != d.group {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.inflight++
	return b
}

// done ends a write counted by barrierOf, which left syncs to the
// barrier.
func (b *Barrier) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dirty = true
	b.inflight--
	if b.inflight == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
}

// Wait closes the barrier, waits for the writes in progress under it, and,
// if any of them deferred a sync, for a sync of the filesystem that starts
// after them. It returns nil at once when nothing was deferred. An error
// means the writes may not be durable: acknowledge nothing.
func (b *Barrier) Wait(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	for b.inflight > 0 {
		if b.idle == nil {
			b.idle = make(chan struct{})
		}
		idle := b.idle
		b.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.mu.Lock()
	}
	dirty := b.dirty
	b.dirty = false
	b.mu.Unlock()
	if !dirty {
		return nil
	}
	return b.group.Sync(ctx)
}
